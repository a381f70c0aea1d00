"""Transformers exported to ONNX reach the TFLite targets: ONNX -> PyTorch (onnx2torch) -> litert-torch.

onnx2tf rewrites a graph to channels-last and gets transformer layouts wrong (a LayerNorm scale of 64 against a
tensor it had made (16,)); ``tflite-convert`` now routes graphs with LayerNorm / attention through onnx2torch and
litert-torch, records the route in the manifest, and checks the float model against the source at the fp32
tolerance before quantizing. The quick tests build ONNX graphs with ``onnx.helper``; the slow ones export real
models of our own: PyTorch's stock ``nn.TransformerEncoderLayer(batch_first=True, norm_first=True,
activation="gelu")`` (a different graph than examples/models/vit_tiny.py's hand-written attention, which
tests/test_vit.py covers) and a small text encoder (embedding + encoder layers, int64 token ids).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edgeify.errors import ConversionError


def _graph(nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any], opset: int) -> Any:
    from onnx import helper

    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


def _opset20_block() -> Any:
    """x[1,4,8] -> LayerNormalization -> Gelu (opset 20) -> ReduceMean-18 (axes as an input) -> Reshape
    (allowzero=1, as torch's exporter writes it) -> y[1,8]: what onnx2torch 1.5.15 cannot read as it is."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "scale"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "bias"),
             numpy_helper.from_array(np.array([1], np.int64), "axes"),
             numpy_helper.from_array(np.array([1, 8], np.int64), "shape")]
    nodes = [helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["ln"], axis=-1, name="norm"),
             helper.make_node("Gelu", ["ln"], ["g"], name="act"),
             helper.make_node("ReduceMean", ["g", "axes"], ["m"], keepdims=1, name="pool"),
             helper.make_node("Reshape", ["m", "shape"], ["y"], allowzero=1, name="flat")]
    return _graph(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], inits, 20)


def test_route_choice_reads_the_graph() -> None:
    from edgeify.steps._onnx2torch import transformer_reason
    from onnx import TensorProto, helper

    assert "LayerNormalization" in transformer_reason(_opset20_block())
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4])
    attention = _graph([helper.make_node("MatMul", ["x", "x"], ["s"]), helper.make_node("Softmax", ["s"], ["y"])],
                       [x], [y], [], 17)
    assert transformer_reason(attention) == "the graph has attention (MatMul -> Softmax)"
    cnn = _graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Softmax", ["r"], ["y"])], [x], [y], [],
                 17)
    assert transformer_reason(cnn) is None  # a CNN keeps onnx2tf (every variant in one run)


def test_opset20_graph_becomes_an_exportable_torch_module(tmp_path: Path) -> None:
    """The opset-17 rewrite (Gelu, ReduceMean-18 axes, Reshape allowzero) and the static-shape pass: the module
    runs like ONNX Runtime and torch.export traces it (onnx2torch's own Reshape / Gather do not export)."""
    import onnx
    import onnxruntime as ort
    import torch
    from edgeify.steps._onnx2torch import specialize, to_torch

    path = tmp_path / "block.onnx"
    onnx.save(_opset20_block(), str(path))
    x = np.random.default_rng(1).standard_normal((1, 4, 8)).astype(np.float32)
    ref = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    module = specialize(to_torch(path), (torch.from_numpy(x),))
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() < 1e-5
    ep = torch.export.export(module, (torch.from_numpy(x),))
    assert np.abs(ep.module()(torch.from_numpy(x)).detach().numpy() - ref).max() < 1e-5


def test_ops_opset17_cannot_express_are_refused_by_name() -> None:
    from edgeify.steps._onnx2torch import to_opset17
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    ax = helper.make_tensor_value_info("ax", TensorProto.INT64, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])
    model = _graph([helper.make_node("ReduceMean", ["x", "ax"], ["y"])], [x, ax], [y], [], 18)
    with pytest.raises(ConversionError, match=r"ReduceMean-18 \(axes computed at run time\)"):
        to_opset17(model)


def test_converter_error_tail_drops_tensor_dumps() -> None:
    """An onnx2tf failure ends with its last meaningful lines, not the wall of tensor values it prints."""
    from edgeify.steps._tflite_errors import _onnx2tf_error

    dump = "\n".join(["[[ 0.1234 -1.2e-03  0.5   ]", " [ 1.0     2.0      3.0   ]]", "array([ 0.5, -0.25 ])"] * 80)
    log = f"INFO: onnx_op_name: /norm/LayerNormalization\n{dump}\nValueError: Dimensions must be equal, but are " \
          "64 and 16\nERROR: input_onnx_file_path: model.onnx\n"
    err = _onnx2tf_error(log, Path("/nonexistent.onnx"), 1)
    assert "Dimensions must be equal, but are 64 and 16" in err.message
    assert "0.1234" not in err.message and "array(" not in err.message
    assert len(err.message.splitlines()) <= 16


# -- real transformers of our own, exported to ONNX, built for rpi5 and android-arm64 ------------------------------

def _models() -> dict[str, Any]:
    import torch
    from torch import nn

    def encoder(dim: int, depth: int, heads: int) -> nn.Module:
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True,
                                           activation="gelu")
        return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    class StockViT(nn.Module):  # patch embedding conv + PyTorch's own pre-norm encoder layers
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv2d(1, 32, 2, stride=2)
            self.pos = nn.Parameter(torch.randn(1, 16, 32) * 0.1)
            self.enc = encoder(32, 2, 4)
            self.head = nn.Linear(32, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.enc(self.embed(x).flatten(2).transpose(1, 2) + self.pos).mean(1))

    class TextEncoder(nn.Module):  # token embedding + encoder layers + LayerNorm + mean pool + classifier
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(100, 32)
            self.pos = nn.Parameter(torch.randn(1, 16, 32) * 0.1)
            self.enc = encoder(32, 2, 2)
            self.norm = nn.LayerNorm(32)
            self.head = nn.Linear(32, 4)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.norm(self.enc(self.emb(ids) + self.pos)).mean(1))

    torch.manual_seed(0)
    return {"vit": (StockViT().eval(), "x", np.random.default_rng(0).random((24, 1, 8, 8), dtype=np.float32)),
            "text": (TextEncoder().eval(), "ids", np.random.default_rng(0).integers(0, 100, (24, 16)))}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    import torch

    root = tmp_path_factory.mktemp("transformers")
    out = {}
    for name, (net, inp, data) in _models().items():
        path = root / f"{name}.onnx"
        torch.onnx.export(net, (torch.from_numpy(data[:1]),), str(path), input_names=[inp], output_names=["y"],
                          external_data=False)
        np.savez(root / f"{name}-calib.npz", **{inp: data})
        with torch.no_grad():
            ref = net(torch.from_numpy(data[:4])).numpy()
        out[name] = {"onnx": path, "calib": root / f"{name}-calib.npz", "x": data[:4], "ref": ref, "input": inp}
    return out


def _run(bundle: Path, name: str, x: np.ndarray) -> np.ndarray:
    import edgeify_runtime

    with edgeify_runtime.load(bundle, threads=1) as model:
        return np.concatenate([model.run({name: x[i:i + 1]})[model.outputs[0].name] for i in range(len(x))])


@pytest.mark.slow
@pytest.mark.parametrize("model", ["vit", "text"])
def test_onnx_transformer_builds_for_rpi5_and_android(exported: dict[str, dict[str, Any]], model: str,
                                                      tmp_path: Path) -> None:
    """fp32 and int8 for rpi5, fp16 for android-arm64 (from the same fp32 conversion), parity passing, the route
    in the manifest; the bundles run in LiteRT and agree with the PyTorch model."""
    from edgeify.build import build

    m = exported[model]
    for target, precision in (("rpi5", "fp32"), ("android-arm64", "fp16"), ("rpi5", "int8")):
        out = tmp_path / f"{target}-{precision}"
        res = build(m["onnx"], target=target, precision=precision, calib=m["calib"], out=out, measure_latency=False)
        raw = json.loads((out / "manifest.json").read_text())
        assert res.validation.passed, (model, target, precision)
        assert raw["quantization"]["converter"] == "onnx2torch+litert-torch"
        details = raw["facts"]["tflite"]["details"]
        assert details["route"] == "onnx2torch" and "LayerNormalization" in details["route_reason"]
        got = _run(out, m["input"], m["x"])
        if precision == "fp32":
            assert np.abs(got - m["ref"]).max() <= 1e-4 * np.abs(m["ref"]).max() + 1e-5
        elif precision == "fp16":
            assert next(s for s in res.steps if s["id"] == "convert")["cached"]  # rpi5's fp32 conversion
            assert np.abs(got - m["ref"]).max() <= 2e-2 * np.abs(m["ref"]).max() + 1e-4
        else:
            assert (got.argmax(1) == m["ref"].argmax(1)).mean() >= 0.75
