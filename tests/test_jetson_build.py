"""Jetson targets on the build host, for real: the registry entries, `--target jetson`, and host builds of the
digits CNN and MobileNetV2 for jetson-orin-nano in fp16 and int8 (ONNX + symmetric QDQ, parity on the host CPU,
the TensorRT engine step recorded for the device and never run here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from _kit import REPO, run_cli
from edgeify.build import build
from edgeify.errors import ConfigError
from edgeify.targets import load_registry
from onnx import numpy_helper

MNV2 = f"{REPO}/examples/models/mobilenetv2.py:mobilenet_v2"
JETSONS = ("jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin")


def test_jetson_targets_in_the_registry() -> None:
    reg = load_registry(user_dir=Path("/nonexistent"))
    spec, fam = reg.resolve("jetson")
    assert (spec.name, fam) == ("jetson-orin-nano", "jetson")
    dla = {}
    for name in JETSONS:
        s = reg.get(name)
        assert s.family == "jetson" and s.arch == "aarch64" and not s.verified_on_hardware
        assert "never run on a Jetson" in s.status
        gpu = [a for a in s.accelerators if a.kind == "cuda-gpu"]
        assert len(gpu) == 1 and gpu[0].compute_capability == "8.7"
        dla[name] = sum(a.count for a in s.accelerators if a.kind == "dla")
        trt = s.engines["tensorrt"]
        assert s.default_engine["int8"] == "tensorrt" and trt.build_on == "device" and trt.artifact == "model.onnx"
        engine_step = trt.pipeline[-1]
        assert (engine_step.uses, engine_step.where) == ("tensorrt-engine", "device")
        assert engine_step.config["dla_cores"] == dla[name]
        ort = s.engines["onnxruntime"]
        assert ort.options["providers"] == ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                            "CPUExecutionProvider"] and ort.options["provider_fallback"] is True
    assert dla == {"jetson-orin-nano": 0, "jetson-orin-nx": 2, "jetson-agx-orin": 2}


def test_dla_core_must_exist_on_the_module(tmp_path: Path) -> None:
    """DLA with GPU fallback is a build setting; the Orin Nano has no DLA, so asking for one is refused."""
    for board, ok in (("jetson-orin-nano", False), ("jetson-agx-orin", True)):
        f = tmp_path / f"{board}.toml"
        f.write_text(f'[[targets]]\nname = "my-{board}"\nextends = "jetson-orin"\nstatus = "lab"\n'
                     f'[[targets.engines.tensorrt.pipeline]]\nid = "engine"\n'
                     f'config = {{ dla_cores = {0 if not ok else 2}, dla_core = 1 }}\n')
        if ok:
            spec = load_registry([f], user_dir=Path("/nonexistent")).get(f"my-{board}")
            assert spec.engines["tensorrt"].pipeline[-1].config["dla_core"] == 1
        else:
            with pytest.raises(ConfigError, match="dla_core=1, but the module has 0 DLA"):
                load_registry([f], user_dir=Path("/nonexistent"))


def _zero_points(path: Path) -> tuple[list[np.ndarray], list[np.ndarray], set[str]]:
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    zps, weight_scales = [], []
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert len(n.input) == 3, f"{n.name}: no explicit zero point"
            zps.append(inits[n.input[2]])
            if n.input[0] in inits:  # a weight's DequantizeLinear
                assert inits[n.input[0]].dtype == np.int8, f"{n.input[0]}: bias or weight not int8"
                weight_scales.append(inits[n.input[1]])
    return zps, weight_scales, {n.op_type for n in model.graph.node}


def _check_int8_bundle(res, bundle: Path) -> None:
    zps, wscales, ops = _zero_points(bundle / "model.onnx")
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps), "every zero point must be int8 0"
    assert wscales and all(s.ndim == 1 and s.size > 1 for s in wscales), "weights must be per-channel"
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    q = res.quantization.details
    assert (q["scheme"], q["per_channel"], q["symmetric_activations"], q["bias"]) == ("S8S8", True, True, "float32")


def _check_jetson_bundle(res, bundle: Path, precision: str) -> dict:
    m, raw = res.manifest, res.manifest.raw
    assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json", "model.onnx", "report.md"]
    assert (m.target, m.engine.name, raw["engine"]["build_on"]) == ("jetson-orin-nano", "tensorrt", "device")
    assert [s["id"] for s in raw["steps"]] == ["export", "optimize", "quantize", "check"]  # nothing device-side ran
    assert [(s["uses"], s["where"]) for s in raw["device_steps"]] == [("tensorrt-engine", "device")]
    assert onnx.load(str(bundle / "model.onnx")).opset_import[0].version <= 17  # TensorRT 8.5/8.6 parse <= 17
    v = res.validation
    assert v.checked_with and "onnxruntime on the build host" in v.checked_with
    gated = [o for o in v.outputs if o.gated]
    assert gated and all(o.passed for o in gated) and v.passed
    if precision == "fp16":
        model = onnx.load(str(bundle / "model.onnx"))
        assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
        assert m.inputs[0].dtype == "float32" and m.outputs[0].dtype == "float32"
    else:
        _check_int8_bundle(res, bundle)
    sizes = {k: f["size"] for k, f in m.files.items()}
    real = next(o for o in v.outputs if o.inputs.startswith("real"))
    return {"files": sizes, "max_abs_real": real.max_abs, "cosine_real": real.cosine}


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_digits_for_jetson_orin_nano(digits, tmp_path: Path, precision: str) -> None:
    bundle = tmp_path / f"digits-{precision}"
    res = build(digits["model"], target="jetson-orin-nano", precision=precision, calib=digits["calib"],
                eval=digits["eval"], out=bundle, measure_latency=False)
    info = _check_jetson_bundle(res, bundle, precision)
    acc = res.validation.accuracy
    assert acc is not None and acc.drop_points <= 1.0
    print(json.dumps({"digits": precision, **info, "accuracy": [acc.source_accuracy, acc.built_accuracy]}))


def test_cli_target_jetson_says_which_board(digits, tmp_path: Path) -> None:
    r = run_cli("build", str(digits["model"]), "--target", "jetson", "--precision", "int8", "--calib",
                str(digits["calib"]), "-o", str(tmp_path / "b"), "--format", "json")
    assert r.returncode == 0, r.stderr
    assert "jetson → board jetson-orin-nano" in r.stderr
    out = json.loads(r.stdout)
    assert (out["target"], out["family_alias"]) == ("jetson-orin-nano", "jetson")


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_mobilenet_v2_for_jetson_orin_nano(tmp_path: Path, precision: str) -> None:
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((32, 3, 224, 224)).astype(np.float32))
    bundle = tmp_path / f"mnv2-{precision}"
    res = build(MNV2, target="jetson-orin-nano", precision=precision, input_shapes=["1,3,224,224"], calib=calib,
                out=bundle, measure_latency=False)
    info = _check_jetson_bundle(res, bundle, precision)
    if precision == "int8":
        assert info["files"]["model.onnx"] <= 0.3 * 14_000_000  # int8 weights: ~3.5 MB vs ~14 MB in fp32
    print(json.dumps({"mobilenet_v2": precision, **info}))


def test_tensorrt_bundle_on_a_host_without_tensorrt_names_the_fix(digits, tmp_path: Path) -> None:
    import edgeify_runtime
    from edgeify_runtime import EngineMissingError

    bundle = tmp_path / "b"
    build(digits["model"], target="jetson-orin-nano", precision="fp16", out=bundle, measure_latency=False)
    with pytest.raises(EngineMissingError) as exc:
        edgeify_runtime.load(bundle)
    assert exc.value.exit_code == 11 and "nvidia-jetpack" in exc.value.hint


def test_onnxruntime_alternative_falls_back_in_the_declared_order(tiny_onnx, tmp_path: Path) -> None:
    import edgeify_runtime
    from edgeify_runtime import EngineMissingError

    bundle = tmp_path / "ort"
    build(tiny_onnx, target="jetson-orin-nano", engine="onnxruntime", precision="fp32", out=bundle,
          measure_latency=False)
    with edgeify_runtime.load(bundle, threads=1) as model:  # this host has only the CPU provider
        assert model.accelerator == "CPUExecutionProvider" and "provider_fallback" in model.fallback
        assert model._adapter.skipped_providers == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    with pytest.raises(EngineMissingError, match="TensorrtExecutionProvider"):  # without the fallback order
        edgeify_runtime.load(bundle, threads=1, options={"provider_fallback": False})
