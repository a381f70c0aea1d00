"""Bundles built on this x86 host, deployed by the real deployer to an emulated aarch64 device over SSH, give
the host's answers there."""

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

pytestmark = pytest.mark.arm64  # every test here starts the emulated arm64 device


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
    build(digits["model"], target="rpi5", engine="onnxruntime", precision=precision,
          calib=digits["calib"] if precision == "int8" else None, out=bundle, measure_latency=False)
    with np.load(digits["eval"]) as z:
        x = z["x"][:64]
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, x=x)
    with open_site(arm64_device) as site:
        report = deploy(site, bundle, device=arm64_device)
        record, out_path = outputs_on_device(site, report, inputs, tmp_path / "fetched")
        result = record.to_dict()
    assert result["fingerprint"]["arch"] == "aarch64"
    with np.load(out_path, allow_pickle=False) as z:
        got = z["output"]
    ref = _host_outputs(bundle, x)
    diff = float(np.abs(got - ref).max())
    print(json.dumps({"bundle": f"digits ORT {precision}", "max_abs_diff_host_vs_arm64": diff,
                      "agent_p50_ms": result["latency_ms"]["p50"]}))
    if precision == "fp32":
        assert diff <= 1e-4 * float(np.abs(ref).max()) + 1e-5
    else:  # int8 kernels differ between x86 and ARM: same decisions, nearly the same values
        assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.98


def test_remote_benchmark_on_arm64_is_stored_with_its_fingerprint(arm64_device, tiny_onnx, tmp_path: Path) -> None:
    bundle = tmp_path / "tiny"
    build(tiny_onnx, target="rpi5", precision="fp32", engine="onnxruntime", out=bundle, measure_latency=False)
    quick = BenchSettings(warmup=2, runs=10, min_duration_s=0.0, max_duration_s=60.0, threads=1)
    res = bench(bundle, arm64_device, settings=quick)[0].unwrap().to_dict()
    assert res["fingerprint"]["arch"] == "aarch64" and res["fingerprint"]["cpu"]["isa"]
    assert res["protocol"]["runs_done"] >= 10 and res["result_id"] > 0
    print(json.dumps({"remote_bench_tiny_p50_ms": res["latency_ms"]["p50"], "deploy": res["deploy"]}))


MNV2 = str(Path(__file__).resolve().parents[2] / "examples" / "models" / "mobilenetv2.py") + ":mobilenet_v2"


@pytest.mark.slow
@pytest.mark.parametrize(("target", "engine"), [("rpi5", "onnxruntime"), ("android-arm64", "litert")])
def test_mobilenet_v2_fp32_matches_host_on_arm64(arm64, arm64_device, tmp_path: Path, target: str,
                                                 engine: str) -> None:
    """MobileNetV2 (random weights) for a Pi (ONNX Runtime) and an Android phone (LiteRT), on aarch64."""
    from edgeify.deploy.inventory import make_device

    d = arm64.device
    device = arm64_device if target == "rpi5" else make_device(
        "emu-android", host=d.address, port=d.port, user="root", key=str(d.key), python=d.python,
        workdir=d.workdir, target="android-arm64")
    bundle = tmp_path / "mnv2"
    build(MNV2, target=target, engine=engine, precision="fp32", input_shapes=["1,3,224,224"], out=bundle,
          measure_latency=False)
    x = np.random.default_rng(7).standard_normal((2, 3, 224, 224)).astype(np.float32)
    ref = np.concatenate([_host_outputs(bundle, x[i:i + 1]) for i in range(len(x))])
    inputs = tmp_path / "inputs.npz"
    with edgeify_runtime.load(bundle) as model:
        name = model.inputs[0].name
        fixed = isinstance(model.inputs[0].shape[0], int)
    np.savez(inputs, **{name: x[:1] if fixed else x})
    with open_site(device) as site:
        report = deploy(site, bundle, device=device)
        # emulated aarch64 runs MobileNetV2 ~100x slower than native (more on a busy machine): one timed run, and a
        # deadline that proves the path without racing the emulator (the default quick protocol allows 240 s)
        slow_device = BenchSettings(warmup=0, runs=1, min_duration_s=0.0, max_duration_s=600.0)
        record, out_path = outputs_on_device(site, report, inputs, tmp_path / "fetched", settings=slow_device)
        result = record.to_dict()
    with np.load(out_path, allow_pickle=False) as z:
        got = next(iter(z.values()))
    ref = ref[: len(got)]
    diff = float(np.abs(got - ref).max())
    print(json.dumps({"bundle": f"MobileNetV2 {target} {engine} fp32", "max_abs_diff_host_vs_arm64": diff,
                      "agent_p50_ms": result["latency_ms"]["p50"]}))
    assert result["fingerprint"]["arch"] == "aarch64"
    assert diff <= 1e-4 * float(np.abs(ref).max()) + 1e-5
