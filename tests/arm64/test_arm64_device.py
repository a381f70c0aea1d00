"""Bundles built on this x86 host, deployed by the real deployer to an emulated aarch64 device over SSH, give
the host's answers there."""

from __future__ import annotations

import json
from pathlib import Path

import edgeify_runtime
import numpy as np
import pytest
from edgeify.build import build
from edgeify.deploy.connect import open_site
from edgeify.deploy.deployer import deploy
from edgeify.deploy.remote_bench import bench_device, outputs_on_site


def test_device_is_aarch64_and_has_no_runtime_before_deploy(arm64_device) -> None:
    with open_site(arm64_device) as site:
        rc, out, _ = site.transport.run(["uname", "-m"], timeout=30)
        assert rc == 0 and out.strip() == "aarch64"
        rc, _, err = site.transport.run([*site.python, "-c", "import edgeify_runtime"], timeout=60)
        assert rc != 0 and "No module named 'edgeify_runtime'" in err
        rc, out, err = site.transport.run([*site.python, "-c", "import numpy, onnxruntime, ai_edge_litert; "
                                           "print(onnxruntime.__version__)"], timeout=120)
        assert rc == 0, err


def _host_outputs(bundle: Path, x: np.ndarray) -> np.ndarray:
    with edgeify_runtime.load(bundle) as model:
        return next(iter(model.run({model.inputs[0].name: x}).values()))


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_digits_onnxruntime_bundle_matches_host_on_arm64(arm64_device, digits, tmp_path: Path,
                                                         precision: str) -> None:
    bundle = tmp_path / "bundle"
    build(digits["model"], target="x86-avx2", engine="onnxruntime", precision=precision,
          calib=digits["calib"] if precision == "int8" else None, out=bundle, measure_latency=False)
    with np.load(digits["eval"]) as z:
        x = z["x"][:64]
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, x=x)
    with open_site(arm64_device) as site:
        report = deploy(site, bundle, device=arm64_device, force=True)  # an x86 target's ONNX: arch-neutral
        result, out_path = outputs_on_site(site, report, inputs, tmp_path / "fetched")
    assert result["fingerprint"]["arch"] == "aarch64"
    with np.load(out_path, allow_pickle=False) as z:
        got = z["output"]
    ref = _host_outputs(bundle, x)
    diff = float(np.abs(got - ref).max())
    print(json.dumps({"bundle": f"digits ORT {precision}", "max_abs_diff_host_vs_arm64": diff,
                      "agent_p50_ms": result["latency_ms"]["p50"]}))
    if precision == "fp32":
        assert diff <= 1e-4 * float(np.abs(ref).max()) + 1e-5
    else:  # int8 kernels differ between x86 (U8S8) and ARM: same decisions, nearly the same values
        assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.98


def test_remote_benchmark_on_arm64_is_stored_with_its_fingerprint(arm64_device, tiny_onnx, tmp_path: Path) -> None:
    bundle = tmp_path / "tiny"
    build(tiny_onnx, target="x86-avx2", precision="fp32", engine="onnxruntime", out=bundle, measure_latency=False)
    res = bench_device(arm64_device, bundle, {"warmup": 2, "runs": 10, "min_duration_s": 0.0,
                                              "max_duration_s": 60.0, "threads": 1}, force=True)
    assert res["fingerprint"]["arch"] == "aarch64" and res["fingerprint"]["cpu"]["isa"]
    assert res["protocol"]["runs_done"] >= 10 and res["result_id"] > 0
    print(json.dumps({"remote_bench_tiny_p50_ms": res["latency_ms"]["p50"], "deploy": res["deploy"]}))
