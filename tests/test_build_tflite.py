"""Real TFLite builds for the Raspberry Pi / Android targets: litert-torch (PyTorch sources) and onnx2tf (ONNX
sources) in every precision, each bundle run in LiteRT and compared with the source model.

Every model is converted once per session: rpi5 and android-arm64 builds share the cached conversion (the
tests assert it), and the cache is the session's EDGEIFY_HOME.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import edgeify_runtime
import numpy as np
import pytest
from _kit import REPO, run_cli
from edgeify.build import build
from edgeify.errors import ConversionError, TargetError
from edgeify.pipeline import resolve
from edgeify.targets import load_registry
from edgeify_runtime.manifest import Manifest

PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8", "int16x8")
MNV2 = REPO / "examples" / "models" / "mobilenetv2.py"


def _step(result: Any, step_id: str) -> dict[str, Any]:
    return next(s for s in result.steps if s["id"] == step_id)


def _torch_reference(source: Path, x: np.ndarray) -> np.ndarray:
    import torch

    module = torch.export.load(str(source)).module()
    with torch.no_grad():
        return np.concatenate([module(torch.from_numpy(x[i:i + 1])).numpy() for i in range(len(x))])


def _build_rpi5_and_android(source: Path, precision: str, out: Path, **kw: Any) -> tuple[Any, Any]:
    """The same model for rpi5 and android-arm64; the second build must reuse the first one's conversion."""
    rpi = build(source, target="rpi5", precision=precision, out=out / "rpi5", measure_latency=False, **kw)
    android = build(source, target="android-arm64", precision=precision, out=out / "android", measure_latency=False,
                    **kw)
    conv_rpi, conv_android = _step(rpi, "convert"), _step(android, "convert")
    assert conv_android["cached"] and conv_android["cache_key"] == conv_rpi["cache_key"]
    assert _step(android, "quantize")["cache_key"] == _step(rpi, "quantize")["cache_key"]
    assert rpi.manifest.files["model.tflite"] == android.manifest.files["model.tflite"]
    return rpi, android


def _check_bundle(bundle: Path, precision: str, source_kind: str, x: np.ndarray, ref: np.ndarray,
                  output: str) -> np.ndarray:
    """Load the bundle with the device-side runtime (LiteRT), feed NCHW like the source, compare like with like."""
    m = Manifest.read(bundle)
    assert m.engine.name == "litert" and m.engine.artifact == "model.tflite" and m.precision == precision
    inp = m.inputs[0]
    assert inp.layout == "NCHW" and inp.shape[0] == 1 and inp.dtype == "float32"
    # PyTorch sources keep NCHW in the .tflite; onnx2tf writes NHWC and the manifest says so
    assert inp.engine_layout == ("NHWC" if source_kind == "onnx" else None)
    with edgeify_runtime.load(bundle, threads=2) as model:
        assert model.engine_module == "ai_edge_litert"
        got = np.concatenate([model.run({inp.name: x[i:i + 1]})[output] for i in range(len(x))])
    assert got.shape == ref.shape and got.dtype == np.float32
    if precision == "fp32":
        assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max() + 1e-5
    elif precision == "fp16":
        assert np.abs(got - ref).max() <= 1e-2 * np.abs(ref).max() + 1e-5
    else:
        cos = float(got.ravel() @ ref.ravel() / np.linalg.norm(got) / np.linalg.norm(ref))
        assert cos >= (0.99 if precision == "int16x8" else 0.98), cos
    return got


def test_raspberry_pi_and_android_targets() -> None:
    """LiteRT everywhere (both source kinds share one pipeline whose conversion does not depend on the board);
    ONNX Runtime as the alternative on the Pis, S8S8 int8; nothing claims to have run on the hardware."""
    reg = load_registry(user_dir=Path("/nonexistent"))
    assert reg.resolve("rpi") == (reg.get("rpi5"), "rpi")
    assert reg.resolve("android") == (reg.get("android-arm64"), "android")
    for name in ("rpi4", "rpi5", "android-arm64"):
        spec = reg.get(name)
        assert spec.arch == "aarch64" and not spec.verified_on_hardware and "never run on" in spec.status
        assert spec.precisions == ("fp32", "fp16", "int8", "int8-dynamic", "int16x8")
        assert set(spec.default_engine.values()) == {"litert"} and spec.bench.threads == 4
        lit = spec.engines["litert"]
        assert (lit.runtime, lit.artifact, lit.io_dtypes) == ("litert", "model.tflite", ("float32", "int8"))
        steps = [(s.id, s.kind) for s in resolve(spec, None, "int8").steps]
        assert steps == [("export", "onnx-export"), ("convert", "tflite-convert"), ("quantize", "tflite-quantize"),
                         ("check", "check")]
    android = set(reg.get("android-arm64").engines)  # built in: LiteRT and ExecuTorch; plugins may add theirs
    assert reg.get("android-arm64").os == "android" and {"litert", "executorch"} <= android
    assert not android & {"onnxruntime", "openvino", "tensorrt"}
    assert reg.get("rpi4").cpu.model == "Cortex-A72" and reg.get("rpi5").cpu.model == "Cortex-A76"
    convert = {name: next(s for s in resolve(reg.get(name), None, "fp16").steps if s.id == "convert").config
               for name in ("rpi4", "rpi5", "android-arm64")}
    assert convert["rpi4"] == convert["rpi5"] == convert["android-arm64"]  # hence one cached conversion
    ort = resolve(reg.get("rpi4"), "onnxruntime", "int8").describe()
    q = next(s for s in ort if s["id"] == "quantize")["config"]
    assert (q["activation_type"], q["weight_type"], q["reduce_range"]) == ("int8", "int8", False)
    with pytest.raises(TargetError, match="fp16"):
        resolve(reg.get("rpi5"), "onnxruntime", "fp16")


# -- digits CNN ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_eval(digits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(digits["eval"]) as z:
        x, labels = z["x"], z["labels"]
    return x, labels, _torch_reference(digits["model"], x[:64])


@pytest.mark.slow  # every precision from both converters; the quick tier keeps the int8 and CLI builds below
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("source_kind", ["pt2", "onnx"])
def test_digits_every_precision_rpi5_and_android(digits, digits_onnx, digits_eval, tmp_path: Path, source_kind: str,
                                                 precision: str) -> None:
    source = digits["model"] if source_kind == "pt2" else digits_onnx
    rpi, android = _build_rpi5_and_android(source, precision, tmp_path, calib=digits["calib"], eval=digits["eval"])
    m, q = rpi.manifest, rpi.quantization
    assert m.target == "rpi5" and android.manifest.raw["target"]["os"] == "android"
    assert "never run on a Raspberry Pi 5" in m.raw["target"]["status"]
    assert [s["id"] for s in rpi.steps] == ["export", "convert", "quantize", "check"]
    assert q.io_dtype == "float32"
    assert _step(rpi, "convert")["tools"]["ai-edge-litert"] != "not installed"
    assert q.converter == ("litert-torch" if source_kind == "pt2" else "onnx2tf")
    if source_kind == "pt2" and precision in ("fp16", "int16x8"):  # litert-torch has no such option
        assert q.tool and q.tool.startswith("ai-edge-quantizer")
    # the minimum runtime comes from the op versions (dynamic-range FULLY_CONNECTED is version 12: TF Lite 2.17)
    assert m.engine.min_version == ("2.17.0" if precision == "int8-dynamic" else "2.0.0"), m.engine
    val = rpi.validation
    assert val.passed and {r.inputs.split()[0] for r in val.outputs} == {"random", "real"}
    acc = val.accuracy
    assert acc is not None and acc.source_accuracy >= 0.97 and acc.samples == 540
    assert acc.drop_points <= (1.0 if precision in ("int8", "int8-dynamic", "int16x8") else 0.2), acc
    assert android.validation.accuracy and android.validation.accuracy.built_accuracy == acc.built_accuracy
    x, _, ref = digits_eval
    output = m.outputs[0].name
    assert output == ("output" if source_kind == "pt2" else "logits")
    _check_bundle(tmp_path / "android", precision, source_kind, x[:64], ref, output)
    if precision in ("int8", "int16x8"):
        assert m.raw["calibration"]["count"] == 200
        assert q.calibration_samples == 200
    # fp32 ~158 kB; float16 weights ~82 kB; 8-bit weights ~46 kB
    assert m.files["model.tflite"]["size"] <= {"fp32": 170_000, "fp16": 90_000}.get(precision, 50_000)


@pytest.mark.slow  # int8 from both converters, twice
@pytest.mark.parametrize("source_kind", ["pt2", "onnx"])
def test_digits_int8_io_and_rpi4_shares_the_conversion(digits, digits_onnx, digits_eval, tmp_path: Path,
                                                       source_kind: str) -> None:
    """--io-dtype int8: callers feed int8 quantized with the manifest's scale/zero point; rpi4 reuses the
    conversion the rpi5/android tests made (same cache key)."""
    source = digits["model"] if source_kind == "pt2" else digits_onnx
    res = build(source, target="rpi4", precision="int8", io_dtype="int8", calib=digits["calib"],
                eval=digits["eval"], out=tmp_path / "b", measure_latency=False)
    assert _step(res, "convert")["cached"]
    m, q = res.manifest, res.quantization
    out_name = m.outputs[0].name
    assert q.io_dtype == "int8" and q.io_quantization is not None
    assert m.inputs[0].dtype == "int8" and m.outputs[0].dtype == "int8"
    qi, qo = q.io_quantization.inputs["x"], q.io_quantization.outputs[out_name]
    assert res.validation.passed and res.validation.accuracy and res.validation.accuracy.drop_points <= 1.0
    x, _, ref = digits_eval
    with edgeify_runtime.load(tmp_path / "b") as model:
        xq = np.clip(np.rint(x[:64] / qi.scale) + qi.zero_point, -128, 127).astype(np.int8)
        got = np.concatenate([model.run({"x": xq[i:i + 1]})[out_name] for i in range(64)])
        assert got.dtype == np.int8
        with pytest.raises(edgeify_runtime.InputSignatureError, match="int8"):
            model.run({"x": x[:1]})  # float input to an int8-I/O model is refused, not silently cast
    deq = (got.astype(np.float32) - qo.zero_point) * qo.scale
    assert (deq.argmax(1) == ref.argmax(1)).mean() >= 0.98


def test_io_dtype_int8_needs_int8_on_a_tflite_target(digits, tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="io-dtype int8"):
        build(digits["model"], target="rpi5", precision="fp16", io_dtype="int8", out=tmp_path / "x")
    with pytest.raises(TargetError, match="io-dtype int8"):
        build(digits["model"], target="x86", precision="int8", io_dtype="int8", calib=digits["calib"],
              out=tmp_path / "y")
    res = run_cli("build", str(digits["model"]), "--target", "rpi5", "--precision", "int16x8", "-o",
                  str(tmp_path / "z"))
    assert res.returncode == 7 and "needs calibration data" in res.stderr


def test_rpi5_onnxruntime_engine_int8_is_s8s8(digits, tmp_path: Path) -> None:
    res = build(digits["model"], target="rpi", precision="int8", engine="onnxruntime", calib=digits["calib"],
                eval=digits["eval"], out=tmp_path / "ort", measure_latency=False)
    assert res.family_alias == "rpi" and res.target == "rpi5" and res.engine == "onnxruntime"
    assert res.quantization.details["scheme"] == "S8S8"
    assert res.validation.accuracy and res.validation.accuracy.drop_points <= 1.0
    assert sorted(res.manifest.files) == ["model.onnx"]
    with pytest.raises(TargetError, match="fp16"):
        build(digits["model"], target="rpi5", precision="fp16", engine="onnxruntime", out=tmp_path / "no")


def test_cli_build_and_bench_a_tflite_bundle(digits, tmp_path: Path, results_db: Path) -> None:
    out = tmp_path / "digits-android"
    res = run_cli("build", str(digits["model"]), "--target", "android", "--precision", "fp32", "-o", str(out),
                  "--format", "json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)  # stdout is JSON only: the converters' chatter went to stderr
    assert summary["target"] == "android-arm64" and summary["engine"] == "litert"
    bench = run_cli("bench", str(out), "--threads", "2", "--runs", "20", "--min-duration", "0.2",
                    "--format", "json")
    assert bench.returncode == 0, bench.stderr
    data = json.loads(bench.stdout)
    assert data["engine"]["name"] == "litert" and data["engine"]["module"] == "ai_edge_litert"
    assert data["protocol"]["threads"] == 2 and data["latency_ms"]["p50"] > 0


# -- converter failures name the op ------------------------------------------------------------------------------

@pytest.mark.slow  # a litert-torch conversion attempt (the CLI build keeps one in the quick tier)
def test_torch_op_without_a_tflite_lowering_is_named(tmp_path: Path) -> None:
    model = tmp_path / "bad.py"
    model.write_text("import torch\n\n"
                     "class Bad(torch.nn.Module):\n"
                     "    def forward(self, x):\n"
                     "        return torch.logcumsumexp(x, 1)\n\n"
                     "def build():\n    return Bad().eval()\n")
    res = run_cli("build", f"{model}:build", "--input-shape", "1,16", "--target", "rpi5", "-o", str(tmp_path / "o"))
    assert res.returncode == 8, res.stderr
    assert "aten.logcumsumexp" in res.stderr and "litert-torch" in res.stderr and "fix:" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "o").exists()


@pytest.mark.slow  # an onnx2tf run in its own process
def test_onnx_op_without_an_onnx2tf_converter_is_named(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    like = numpy_helper.from_array(np.zeros(1, np.float16), "like")
    graph = helper.make_graph(
        [helper.make_node("CastLike", ["x", "like"], ["h"]), helper.make_node("Cast", ["h"], ["y"], to=1)],
        "castlike", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], [like])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / "castlike.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ConversionError) as exc:
        build(path, target="android-arm64", precision="fp32", out=tmp_path / "o", measure_latency=False)
    assert "CastLike" in exc.value.message and "onnx2tf" in exc.value.message
    assert exc.value.exit_code == 8


# -- MobileNetV2 -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def mnv2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """MobileNetV2 (random weights, examples/models) as an ExportedProgram .pt2 and as ONNX, with 8 inputs."""
    import importlib.util
    import warnings

    import torch

    root = tmp_path_factory.mktemp("mnv2")
    spec = importlib.util.spec_from_file_location("edgeify_test_mnv2", MNV2)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.mobilenet_v2().eval()
    x = np.random.default_rng(0).standard_normal((8, 3, 224, 224)).astype(np.float32)
    np.savez(root / "calib.npz", x=x)
    example = (torch.from_numpy(x[:1]),)
    torch.export.save(torch.export.export(net, example), str(root / "mnv2.pt2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, example, str(root / "mnv2.onnx"), dynamo=True, external_data=False,
                          input_names=["x"], output_names=["logits"], verbose=False)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    return {"pt2": root / "mnv2.pt2", "onnx": root / "mnv2.onnx", "calib": root / "calib.npz", "x": x, "ref": ref}


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("source_kind", ["pt2", "onnx"])
def test_mobilenet_v2_every_precision_rpi5_and_android(mnv2, tmp_path: Path, source_kind: str,
                                                       precision: str) -> None:
    rpi, android = _build_rpi5_and_android(mnv2[source_kind], precision, tmp_path, calib=mnv2["calib"])
    assert rpi.validation.passed and android.validation.passed
    m = rpi.manifest
    assert m.inputs[0].shape == (1, 3, 224, 224) and m.outputs[0].shape == (1, 1000)
    size = m.files["model.tflite"]["size"]
    limit = {"fp32": 15e6, "fp16": 7.5e6}.get(precision, 4.5e6)  # fp32 ~14 MB, fp16 ~7 MB, 8-bit weights ~4 MB
    assert size <= limit, (precision, size)
    _check_bundle(tmp_path / "rpi5", precision, source_kind, mnv2["x"][:4], mnv2["ref"][:4],
                  m.outputs[0].name)

