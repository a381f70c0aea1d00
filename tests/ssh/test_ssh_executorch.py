"""ExecuTorch over real SSH (issue 26): an int8 rpi5 bundle (PT2E on --calib, XNNPACK) built on this host, deployed
by the real deployer to a real sshd device on 127.0.0.x, gives the host's outputs there, benchmarks there and
profiles per operator there (the ETDump is recorded and decoded on the device).

Why a loopback sshd and not the emulated arm64 device (tests/arm64, where the ncnn bundle runs): ExecuTorch's
Python runtime (``executorch.extension.pybindings.portable_lib``) imports torch and its ``_C`` module links
libtorch, and torch 2.13.0's aarch64 wheel is a CUDA build (427 MB wheel, 871 MB unpacked; ``libtorch.so`` needs
``libtorch_cuda.so``, which needs ``libcudart.so.13`` from the cuda-toolkit 13 wheels it requires): not an install
that fits the CI budget. The torch-free ``executorch-numpy-runtime`` (ExecuTorch 1.3.1) loads these .pte files,
but it is built for Python >= 3.12 only (the device has Debian 12's 3.11) and has no ETDump. So the device here is
this machine, its Python this venv's, reached over SSH like any device."""

from __future__ import annotations

import json
from pathlib import Path

import edgeify_runtime
import numpy as np
import pytest
from edgeify.bench import BenchSettings, bench, outputs_on_device
from edgeify.build import build
from edgeify.deploy.connect import open_site
from edgeify.deploy.deployer import deploy
from edgeify_runtime.manifest import Manifest
from sshtest import device_for

pytest.importorskip("executorch")
pytestmark = pytest.mark.ssh


@pytest.fixture(scope="module")
def et_int8(digits: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("et-ssh") / "digits-et-int8"
    build(digits["model"], target="rpi5", engine="executorch", precision="int8", calib=digits["calib"],
          eval=digits["eval"], out=out, measure_latency=False)
    return out


@pytest.mark.slow  # an int8 PT2E build (shared through the step cache with tests/test_executorch.py's)
def test_executorch_int8_rpi5_bundle_deploys_matches_benchmarks_and_profiles_over_ssh(
        env, lab, workdir: Path, et_int8: Path, digits: dict[str, Path], tmp_path: Path) -> None:
    m = Manifest.read(et_int8)
    assert m.engine.name == "executorch" and m.precision == "int8" and m.validation["passed"] is True
    dev = device_for(lab.devices["dev-a"], name="et-pi", workdir=workdir, target="rpi5")
    with np.load(digits["eval"]) as z:
        x = z["x"][5:6]  # the .pte has batch 1
    np.savez(tmp_path / "inputs.npz", x=x)
    with open_site(dev) as site:
        report = deploy(site, et_int8, device=dev)
        record, out_path = outputs_on_device(site, report, tmp_path / "inputs.npz", tmp_path / "fetched")
    result = record.to_dict()
    assert result["engine"]["name"] == "executorch" and result["bundle"].startswith(str(workdir))
    name = m.outputs[0].name
    with np.load(out_path, allow_pickle=False) as z:
        got = z[name]
    with edgeify_runtime.load(et_int8) as model:
        ref = model.run({"x": x})[name]
    assert got.shape == ref.shape == (1, 10) and got.argmax() == ref.argmax()
    assert float(np.abs(got - ref).max()) <= 1e-6 * float(np.abs(ref).max())  # same CPU, same kernels

    settings = BenchSettings(warmup=2, runs=10, min_duration_s=0.0, max_duration_s=60.0, threads=1, profile=True)
    res = bench(et_int8, dev, settings=settings)[0].unwrap().to_dict()
    assert res["deploy"]["status"] == "unchanged" and res["protocol"]["runs_done"] >= 10
    assert res["result_id"] > 0 and res["latency_ms"]["p50"] > 0
    prof = res["profile"]
    assert prof["engine"] == "executorch" and "ETDump" in prof["source"]
    types = {op["type"] for op in prof["ops"]}
    assert any("QC8" in t or "QS8" in t for t in types), types  # XNNPACK's int8 kernels ran on the device
    assert all(op["placement"] == "XNNPACK delegate" and op["time_ms"] is not None for op in prof["ops"])
    assert prof["placement"]["fallback_count"] == 0
    print(json.dumps({"bundle": "digits executorch int8 rpi5", "ssh_p50_ms": res["latency_ms"]["p50"],
                      "profiled_ops": len(prof["ops"]), "max_abs_diff": float(np.abs(got - ref).max())}))
