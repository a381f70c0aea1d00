"""A ViT-style transformer (examples/models/vit_tiny.py: patch-embedding conv, pre-norm encoder layers with
LayerNorm, softmax attention, exact GELU, mean pool, linear head) on every target family, from its ONNX export.

The ONNX export is opset 18, where GELU is ``Div -> Erf -> Add -> Mul -> Mul``: onnx2tf used to turn that Erf
into the Select TF op FlexErf (rpi5/android fp32 and fp16 bundles LiteRT could not load, no int8 variant). Its
LayerNormalization / attention make the graph a transformer, which now takes ONNX -> PyTorch (onnx2torch) ->
litert-torch (tests/test_transformers_tflite.py has PyTorch's stock encoder layers and a text encoder). One
conversion per variant serves every TFLite target here (the step cache is keyed by model, variant and
calibration, not by target); the first build is the CLI from another working directory with relative paths.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import edgeify_runtime
import numpy as np
import pytest
from _kit import REPO, run_cli
from edgeify.build import build

VIT = REPO / "examples" / "models" / "vit_tiny.py"
pytestmark = pytest.mark.slow  # a transformer through every converter: minutes of onnx2tf and litert-torch


def _step(result: Any, step_id: str) -> dict[str, Any]:
    return next(s for s in result.steps if s["id"] == step_id)


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import torch

    root = tmp_path_factory.mktemp("vit")
    spec = importlib.util.spec_from_file_location("edgeify_example_vit_tiny", VIT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    net = mod.vit_tiny(seed=3)
    mod.export_onnx(net, root / "vit.onnx", opset=18)
    torch.export.save(torch.export.export(net, (torch.zeros(1, 1, 8, 8),)), str(root / "vit.pt2"))
    x = np.random.default_rng(0).random((24, 1, 8, 8), dtype=np.float32)
    np.savez(root / "calib.npz", x=x)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    return {"dir": root, "onnx": root / "vit.onnx", "pt2": root / "vit.pt2", "calib": root / "calib.npz", "x": x,
            "ref": ref, "ops": {n.op_type for n in __import__("onnx").load(str(root / "vit.onnx")).graph.node}}


@pytest.fixture(scope="module")
def vit_cli_rpi5(vit: dict[str, Any]) -> Path:
    """The first TFLite build of the ViT: the CLI, run from the model's folder with relative paths."""
    res = run_cli("build", "vit.onnx", "--target", "rpi5", "--precision", "int8", "--calib", "calib.npz",
                  "-o", "build/vit-rpi5", cwd=vit["dir"])
    assert res.returncode == 0, res.stderr
    assert "request.json" not in res.stderr and "Flex" not in res.stderr
    return vit["dir"] / "build" / "vit-rpi5"


def _no_flex(bundle: Path) -> list[tuple[str, int]]:
    from edgeify.steps._tflite import model_ops, read_model

    ops = model_ops(read_model(bundle / "model.tflite"))
    assert not [o for o, _ in ops if o.startswith("CUSTOM")], ops
    return ops


def _run_bundle(bundle: Path, x: np.ndarray) -> np.ndarray:
    with edgeify_runtime.load(bundle, threads=1) as model:
        name, out = model.inputs[0].name, model.outputs[0].name
        return np.concatenate([model.run({name: x[i:i + 1]})[out] for i in range(len(x))])


def test_vit_onnx_export_has_the_erf_gelu_and_layernorm(vit: dict[str, Any]) -> None:
    assert {"Erf", "LayerNormalization", "Softmax", "MatMul", "Conv"} <= vit["ops"]


def test_vit_onnx_rpi5_and_android_fp32_fp16_int8(vit: dict[str, Any], vit_cli_rpi5: Path, tmp_path: Path) -> None:
    raw = json.loads((vit_cli_rpi5 / "manifest.json").read_text())
    # a transformer graph (LayerNormalization, attention) takes ONNX -> PyTorch -> litert-torch, recorded
    assert raw["quantization"]["converter"] == "onnx2torch+litert-torch" and raw["precision"] == "int8"
    assert raw["facts"]["tflite"]["details"]["route"] == "onnx2torch"
    assert "LayerNormalization" in raw["facts"]["tflite"]["details"]["route_reason"]
    assert raw["validation"]["passed"]
    _no_flex(vit_cli_rpi5)  # the exact-GELU subgraph became builtins, not FlexErf
    got = _run_bundle(vit_cli_rpi5, vit["x"][:8])
    assert (got.argmax(1) == vit["ref"][:8].argmax(1)).mean() >= 0.75
    for target in ("rpi5", "android-arm64"):
        for precision in ("fp32", "fp16", "int8"):
            out = tmp_path / f"{target}-{precision}"
            res = build(vit["onnx"], target=target, precision=precision, calib=vit["calib"], out=out,
                        measure_latency=False)
            # one conversion per variant (fp32 serves fp16 too), shared by every TFLite target
            if target != "rpi5" or precision in ("int8", "fp16"):
                assert _step(res, "convert")["cached"], (target, precision)
            assert res.validation.passed and res.manifest.engine.name == "litert"
            _no_flex(out)
            got = _run_bundle(out, vit["x"][:4])
            if precision in ("fp32", "fp16"):
                limit = {"fp32": 1e-4, "fp16": 1e-2}[precision] * np.abs(vit["ref"][:4]).max() + 1e-5
                assert np.abs(got - vit["ref"][:4]).max() <= limit, (target, precision)


def test_vit_x86_and_jetson(vit: dict[str, Any], tmp_path: Path) -> None:
    # x86 int8 is left out: NNCF's int8 of this random-weight ViT misses the cosine gate (0.937 at the attention
    # MatMul); the optimize ladder (issue 12) owns x86 int8 of transformers. Jetson builds from the module
    # factory: its TensorRT opset limit (<= 17) is below this opset-18 export, which ONNX's version converter
    # cannot lower, and an ExportedProgram .pt2 does not re-export at opset 17 (known, reported).
    for source, target, precision, engine in (("onnx", "x86", "fp32", None), ("onnx", "x86", "fp16", None),
                                              ("factory", "jetson", "fp16", None),
                                              ("factory", "jetson", "fp32", "onnxruntime")):
        out = tmp_path / f"{target}-{precision}-{engine}"
        model = f"{VIT}:vit_tiny" if source == "factory" else vit[source]
        res = build(model, target=target, precision=precision, engine=engine, calib=vit["calib"], out=out,
                    input_shapes=["1,1,8,8"] if source == "factory" else None, measure_latency=False)
        assert res.validation.passed, (target, precision)
        if target == "x86":
            got = _run_bundle(out, vit["x"][:4])
            assert got.shape == (4, 10)
    res = build(vit["pt2"], target="rpi5", precision="fp32", out=tmp_path / "pt2-rpi5", measure_latency=False)
    assert res.quantization.converter == "litert-torch" and res.validation.passed


def test_onnx_op_that_only_converts_to_flex_fails_at_conversion(tmp_path: Path) -> None:
    """Det has no TFLite builtin: onnx2tf writes FlexMatrixDeterminant. The build stops at the convert step with
    exit 8 naming the op and the route that works, instead of a bundle that LiteRT cannot load (exit 12)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Det", ["x"], ["y"])], "det",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "det.onnx"))
    res = run_cli("build", "det.onnx", "--target", "android", "--precision", "fp32", "-o", "out", cwd=tmp_path)
    assert res.returncode == 8, res.stderr
    assert "MatrixDeterminant" in res.stderr and "Select TensorFlow (Flex)" in res.stderr
    assert "litert-torch" in res.stderr and "fix:" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()
