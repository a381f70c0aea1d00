"""Count compute ops (Conv, MatMul, Gemm and the like) and how many of them run in int8, from a bundle's artifact.

ONNX (QDQ): a compute node is int8 when its data input comes from an 8-bit ``DequantizeLinear`` and (Conv, Gemm: ONNX
Runtime only fuses a complete DQ -> op -> Q unit into an int8 kernel) its output goes to a ``QuantizeLinear``; or
it is an integer op (``QLinearConv``, ``ConvInteger``, ``MatMulInteger``...). OpenVINO IR (NNCF): when its data
input comes from a ``FakeQuantize``. So "int8" that is really float (everything excluded, weights-only
compression) shows.
"""

from __future__ import annotations

from pathlib import Path

from edgeify_runtime.manifest import Manifest

ONNX_COMPUTE = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "QLinearConv", "QLinearMatMul",
                          "ConvInteger", "MatMulInteger"})
ONNX_INTEGER = frozenset({"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"})
OPENVINO_COMPUTE = frozenset({"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData",
                              "GroupConvolutionBackpropData"})


def count_ops(bundle: str | Path) -> tuple[int | None, int | None]:
    """(quantized compute ops, all compute ops) of the bundle's artifact; (None, None) for other formats."""

    bundle = Path(bundle)
    engine = Manifest.read(bundle).engine
    artifact, fmt = bundle / engine.artifact, engine.format
    try:
        if fmt == "onnx":
            return _onnx(artifact)
        if fmt == "openvino-ir":
            return _openvino(artifact)
    except Exception:  # counting is informative; never fail a search over it
        return None, None
    return None, None


def onnx_compute_nodes(model) -> list:
    return [n for n in model.graph.node if n.op_type in ONNX_COMPUTE]


def _onnx(path: Path) -> tuple[int, int]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    dq_of = {o: n for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    wide = {i.name for i in model.graph.initializer
            if i.data_type in (onnx.TensorProto.INT16, onnx.TensorProto.UINT16)}  # 16-bit zero points
    consumers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    nodes = onnx_compute_nodes(model)

    def int8(n) -> bool:
        if n.op_type in ONNX_INTEGER:
            return True
        if not n.input or producer.get(n.input[0]) != "DequantizeLinear":
            return False
        dq = dq_of[n.input[0]]
        if len(dq.input) > 2 and dq.input[2] in wide:  # int16x8: 16-bit activations, float compute in ORT
            return False
        if n.op_type == "MatMul":  # MatMulIntegerToFloat takes a float output
            return True
        return bool(n.output) and "QuantizeLinear" in consumers.get(n.output[0], [])

    return sum(1 for n in nodes if int8(n)), len(nodes)


def _openvino(path: Path) -> tuple[int, int]:
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    types = {layer.get("id"): layer.get("type") for layer in root.iter("layer")}
    feeds: dict[tuple[str, str], str] = {}
    for edge in root.iter("edge"):
        feeds[(edge.get("to-layer"), edge.get("to-port"))] = edge.get("from-layer")
    compute = [lid for lid, t in types.items() if t in OPENVINO_COMPUTE]
    quantized = 0
    for lid in compute:
        src = next((f for (to, port), f in feeds.items() if to == lid and port == "0"), None)
        if src is not None and types.get(src) == "FakeQuantize":
            quantized += 1
    return quantized, len(compute)
