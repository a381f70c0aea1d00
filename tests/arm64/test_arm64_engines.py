"""The two issue-26 engines and the emulated aarch64 device (a Pi 5 stand-in over SSH).

ncnn (the separately installed ``edgeify-ncnn`` plugin): an rpi5 fp32 bundle built on this host with pnnx, deployed
by the real deployer, gives the host's outputs on aarch64, benchmarks there, and profiles there (ncnn's layer
table: the ncnn wheel has no per-layer timer, so the profile says so instead of times). The device has the ``ncnn``
aarch64 wheel (armlab.WHEELS) but not the plugin: its device half (``edgeify_ncnn_runtime`` and its
``edgeify_runtime.engines`` entry point) reaches the device inside the runtime zip (``plugin_device_parts``).

ExecuTorch cannot run on this device: its Python runtime links libtorch, and torch's aarch64 wheel is a CUDA build
(see tests/ssh/test_ssh_executorch.py, where an ExecuTorch int8 bundle runs over real SSH instead). What this
device does with an ExecuTorch bundle is checked here: the typed missing-engine error naming what to install.
"""

from __future__ import annotations

import json
from pathlib import Path

import edgeify
import edgeify_runtime
import numpy as np
import pytest
from edgeify.bench import BenchSettings, bench, outputs_on_device
from edgeify.build import build
from edgeify.deploy.connect import open_site
from edgeify.deploy.deployer import deploy
from edgeify.deploy.inventory import Inventory
from edgeify.errors import EngineMissingError
from edgeify.results import open_store
from edgeify_runtime.manifest import Manifest

pytestmark = pytest.mark.arm64  # every test here starts the emulated arm64 device


def test_ncnn_rpi5_bundle_matches_host_benchmarks_and_profiles_on_arm64(pi5_device, digits, tmp_path: Path) -> None:
    pytest.importorskip("edgeify_ncnn")
    bundle = tmp_path / "ncnn-fp32"
    res = build(digits["model"], target="rpi5", engine="ncnn", precision="fp32", calib=digits["calib"],
                eval=digits["eval"], out=bundle, measure_latency=False)
    assert res.manifest.engine.name == "ncnn" and res.manifest.validation["passed"] is True
    with np.load(digits["eval"]) as z:
        x = z["x"][7:8]  # ncnn has no batch axis: the bundle's batch is 1
    np.savez(tmp_path / "inputs.npz", x=x)
    with open_site(pi5_device) as site:
        # the device has the ncnn wheel but not the plugin: nothing named edgeify_ncnn_runtime is installed there
        rc, _, err = site.transport.run([*site.python, "-c", "import ncnn, edgeify_ncnn_runtime"], timeout=120)
        assert rc != 0 and "No module named 'edgeify_ncnn_runtime'" in err
        report = deploy(site, bundle, device=pi5_device)
        record, out_path = outputs_on_device(site, report, tmp_path / "inputs.npz", tmp_path / "fetched",
                                             settings=BenchSettings(warmup=0, runs=1, min_duration_s=0.0,
                                                                    max_duration_s=300.0))
        # the plugin's adapter came with the runtime zip, found through its entry point there
        rc, out, err = site.transport.run(
            [*site.python, "-c", "import json, edgeify_runtime.engines as e, edgeify_ncnn_runtime as p; "
             "print(json.dumps([sorted(e.available_engines()), p.__file__]))"],
            env={"PYTHONPATH": site.runtime_path or ""}, timeout=120)
        assert rc == 0, err
        engines, plugin_file = json.loads(out.strip().splitlines()[-1])
        assert "ncnn" in engines and ".zip/edgeify_ncnn_runtime/" in plugin_file
    result = record.to_dict()
    assert result["fingerprint"]["arch"] == "aarch64" and result["engine"]["name"] == "ncnn"
    name = res.manifest.outputs[0].name
    with np.load(out_path, allow_pickle=False) as z:
        got = z[name]
    with edgeify_runtime.load(bundle) as model:
        ref = model.run({"x": x})[name]
    diff = float(np.abs(got - ref).max())
    assert got.shape == ref.shape == (1, 10) and got.argmax() == ref.argmax()
    assert diff <= 1e-4 * float(np.abs(ref).max()) + 1e-5  # fp32 on ARM NEON vs x86: rounding only

    settings = BenchSettings(warmup=1, runs=5, min_duration_s=0.0, max_duration_s=300.0, threads=2, profile=True)
    bench_res = bench(bundle, pi5_device, settings=settings)[0].unwrap().to_dict()
    assert bench_res["fingerprint"]["arch"] == "aarch64" and bench_res["deploy"]["status"] == "unchanged"
    assert bench_res["protocol"]["runs_done"] >= 5 and bench_res["result_id"] > 0
    prof = bench_res["profile"]
    assert prof["engine"] == "ncnn" and [op["type"] for op in prof["ops"]][:2] == ["Convolution", "Convolution"]
    assert all(op["time_ms"] is None for op in prof["ops"]) and "no per-layer profiler" in prof["time_ms_missing"]
    print(json.dumps({"bundle": "digits ncnn fp32 rpi5", "max_abs_diff_host_vs_arm64": diff,
                      "emulated_p50_ms": bench_res["latency_ms"]["p50"], "layers": len(prof["ops"])}))


def test_an_executorch_bundle_on_arm64_says_what_the_device_must_install(pi5_device, tmp_path: Path) -> None:
    """No torch on the device (see the module docstring): the agent's typed missing-engine error, not a crash."""
    pytest.importorskip("executorch")
    model = tmp_path / "tiny.py"
    model.write_text("import torch\n\ndef build():\n    torch.manual_seed(0)\n"
                     "    return torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()\n")
    bundle = tmp_path / "et-fp32"
    build(f"{model}:build", target="rpi5", engine="executorch", precision="fp32", input_shapes=["1,8"], out=bundle,
          measure_latency=False)
    assert Manifest.read(bundle).engine.name == "executorch"
    quick = BenchSettings(warmup=0, runs=1, min_duration_s=0.0, max_duration_s=120.0)
    (outcome,) = bench(bundle, pi5_device, settings=quick, store=False)
    with pytest.raises(EngineMissingError) as info:  # exit 11, the device's own answer
        outcome.unwrap()
    assert info.value.exit_code == 11
    assert "engine 'executorch' is not installed on this device" in str(info.value)
    assert "pip install torch executorch" in str(info.value)


def test_optimize_on_arm64_searches_the_ncnn_plugin_engine(pi5_device, digits, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """``optimize --device`` with the plugin's engine: its candidate built here, screened on the device, its own
    tuning axis (light_mode) in the settings tried there; bounded by --max-time (emulated runs)."""
    pytest.importorskip("edgeify_ncnn")
    monkeypatch.setenv("EDGEIFY_HOME", str(tmp_path / "home"))  # its own devices file (and step cache)
    inv = Inventory()
    inv.add(pi5_device)
    inv.save()
    res = edgeify.optimize(digits["model"], target="rpi5", device=pi5_device.name, calib=digits["calib"],
                           eval=digits["eval"], engines=["ncnn"], precisions=["fp32"], max_time_s=40,
                           out=tmp_path / "best", progress=lambda m: print(f"optimize: {m}"))
    assert res.device == pi5_device.name and res.chosen is not None and res.chosen.engine == "ncnn"
    assert {c.engine for c in res.candidates} == {"ncnn"}
    assert any("light_mode" in c.settings.options for c in res.candidates)  # the plugin's tuning axis, tried there
    with open_store() as st:
        stored = st.query(run_id=res.run_id, limit=100)
    assert stored and {r.device for r in stored} == {pi5_device.name}
    assert all(r.to_dict()["fingerprint"]["arch"] == "aarch64" and r.to_dict()["engine"]["name"] == "ncnn"
               for r in stored)
    assert json.loads((tmp_path / "best" / "manifest.json").read_text())["engine"]["name"] == "ncnn"
