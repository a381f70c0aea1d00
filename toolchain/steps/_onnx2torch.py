"""ONNX -> PyTorch with ``onnx2torch``, so that an ONNX model can take the litert-torch route to TFLite.

onnx2tf rewrites a graph to channels-last as it converts it, and on transformer graphs that guess goes wrong
(a LayerNorm scale of 64 elements against a tensor it had transposed to (16,)). litert-torch keeps the PyTorch
layout and lowers LayerNorm, GELU, softmax attention and embeddings to TFLite builtins, so for such graphs
``tflite-convert`` turns the ONNX model back into a ``torch.fx.GraphModule`` (onnx2torch: one module per ONNX
node, named after the node) and converts that.

onnx2torch 1.5.15 knows opsets up to 17 (plus ``Squeeze``-21) and imports ``torchvision`` (for its NMS and
RoiAlign converters) at import time. :func:`load` imports it without torchvision (those two ops are refused by
name instead); :func:`to_opset17` rewrites a newer graph to what opset 17 spells the same way: ``Reduce*``-18's
``axes`` input becomes the attribute, ``Gelu``-20 gets a converter, and ops whose later versions only added
types (``Reshape``-19, ``Shape``-19, ``Cast``-19...) are read at their opset-17 version. Anything else newer
than 17 is refused with the op's name (the caller then keeps onnx2tf's answer).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

from edgeify.errors import ConversionError

#: the opset the rewritten graph declares (onnx2tf's converter registry stops there)
OPSET = 17
#: ops whose versions 18-21 changed nothing but the types they accept (or attributes edgeify checks are unset)
TYPES_ONLY = frozenset({
    "Reshape", "Shape", "Cast", "CastLike", "Constant", "ConstantOfShape", "Identity", "Squeeze", "Unsqueeze",
    "Transpose", "Flatten", "Size", "Equal", "If", "Loop", "Scan", "IsInf", "IsNaN", "Where", "Gather",
    "Pad", "Resize", "AveragePool", "ScatterND", "ScatterElements", "Split",
})
#: attributes added after opset 17 that change what those ops compute (a node that sets one is refused)
_NEWER_ATTRIBUTES = {"Resize": {"antialias", "axes", "keep_aspect_ratio_policy"}, "AveragePool": {"dilations"},
                     "Pad": set(), "Cast": {"saturate"}, "ScatterND": {"reduction"},
                     "ScatterElements": {"reduction"}}
#: Reduce ops whose opset-18 version takes ``axes`` as an input instead of an attribute
REDUCE_18 = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                       "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"})
#: what makes a graph a transformer for the route choice: onnx2tf's layout guessing goes wrong on these
TRANSFORMER_OPS = frozenset({"LayerNormalization", "Attention", "MultiHeadAttention", "SkipLayerNormalization",
                             "EmbedLayerNormalization", "Gelu", "FastGelu"})


def transformer_reason(model: Any) -> str | None:
    """Why the ONNX graph (a ``ModelProto``) looks like a transformer, or None: a LayerNorm / attention op, or a
    ``Softmax`` fed by a ``MatMul`` (scaled dot-product attention written out)."""
    graph = model.graph
    ops = {n.op_type for n in graph.node}
    named = sorted(ops & TRANSFORMER_OPS)
    if named:
        return f"the graph has {', '.join(named)}"
    producer = {o: n for n in graph.node for o in n.output}

    def upstream(name: str, depth: int = 3) -> bool:
        node = producer.get(name)
        for _ in range(depth):
            if node is None:
                return False
            if node.op_type == "MatMul":
                return True
            node = producer.get(node.input[0]) if node.input else None
        return False

    if any(n.op_type == "Softmax" and n.input and upstream(n.input[0]) for n in graph.node):
        return "the graph has attention (MatMul -> Softmax)"
    return None


def load() -> Any:
    """The ``onnx2torch`` module, imported without torchvision; a ConversionError naming the install if missing."""
    if "onnx2torch" in sys.modules:
        return sys.modules["onnx2torch"]
    import importlib.util

    if importlib.util.find_spec("onnx2torch") is None:
        raise ConversionError("the ONNX -> PyTorch -> litert-torch route needs onnx2torch, which is not installed",
                              hint="pip install --no-deps onnx2torch==1.5.15 (./install.sh does)")
    stubbed = []
    if importlib.util.find_spec("torchvision") is None:  # only its NMS / RoiAlign converters use it
        vision = types.ModuleType("torchvision")
        ops = types.ModuleType("torchvision.ops")

        def missing(*_a: Any, **_k: Any) -> Any:
            raise ConversionError("this ONNX op needs torchvision in the onnx2torch route")

        ops.roi_align = ops.nms = ops.box_convert = missing  # type: ignore[attr-defined]
        vision.ops = ops  # type: ignore[attr-defined]
        sys.modules["torchvision"], sys.modules["torchvision.ops"] = vision, ops
        stubbed = ["torchvision", "torchvision.ops"]
    try:
        import onnx2torch

        _register_extra(onnx2torch)
    finally:
        for name in stubbed:  # nothing else in this process sees the stand-in
            sys.modules.pop(name, None)
    return onnx2torch


def _register_extra(onnx2torch: Any) -> None:
    """Converters onnx2torch 1.5.15 lacks that edgeify's transformer graphs use: ``Gelu`` (opset 20)."""
    import torch
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription, add_converter
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

    for version in (OPSET, 20):
        if OperationDescription("", "Gelu", version) in _CONVERTER_REGISTRY:
            continue

        @add_converter(operation_type="Gelu", version=version)
        def _gelu(node: Any, graph: Any) -> Any:
            approximate = node.attributes.get("approximate", "none")
            return OperationConverterResult(torch_module=torch.nn.GELU(approximate=approximate),
                                            onnx_mapping=onnx_mapping_from_node(node=node))


def to_opset17(model: Any) -> Any:
    """A copy of the ONNX ``ModelProto`` that declares opset 17 and means the same; a ConversionError naming the
    ops (and versions) it cannot express there."""
    import onnx
    from onnx import defs, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), OPSET)
    if opset <= OPSET:
        return model
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    refused = set()
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            refused.add(f"{node.domain}.{node.op_type}")
            continue
        try:
            since = defs.get_schema(node.op_type, max_inclusive_version=opset).since_version
        except Exception:
            refused.add(node.op_type)
            continue
        allowzero = [a for a in node.attribute if a.name == "allowzero" and a.i]
        if node.op_type == "Reshape" and allowzero:  # torch's exporter sets it; same meaning without a 0 in shape
            shape = consts.get(node.input[1]) if len(node.input) > 1 else None
            if shape is None or (shape == 0).any():
                refused.add("Reshape (allowzero=1 with a run-time or zero-sized shape)")
                continue
            node.attribute.remove(allowzero[0])
        if since > OPSET and node.op_type == "Split":  # 18: num_outputs = 13's equal split into len(outputs)
            for attr in [a for a in node.attribute if a.name == "num_outputs"]:
                node.attribute.remove(attr)
        newer = {a.name for a in node.attribute} & _NEWER_ATTRIBUTES.get(node.op_type, set())
        if since > OPSET and (newer or (node.op_type == "Pad" and len(node.input) > 3 and node.input[3])):
            refused.add(f"{node.op_type}-{since} ({', '.join(sorted(newer)) or 'axes'})")
            continue
        if since <= OPSET or node.op_type in TYPES_ONLY or node.op_type == "Gelu":
            continue
        if node.op_type in REDUCE_18:
            if len(node.input) > 1 and node.input[1]:
                axes = consts.get(node.input[1])
                if axes is None:
                    refused.add(f"{node.op_type}-{since} (axes computed at run time)")
                    continue
                node.attribute.append(helper.make_attribute("axes", [int(a) for a in axes.reshape(-1)]))
                del node.input[1:]
            continue
        refused.add(f"{node.op_type}-{since}")
    if refused:
        raise ConversionError(f"onnx2torch (opset <= {OPSET}) cannot express the ONNX op(s) "
                              f"{', '.join(sorted(refused))}")
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = OPSET
    return model


def to_torch(onnx_path: Path) -> Any:
    """The ONNX file as a ``torch.fx.GraphModule`` in eval mode (ConversionError naming the op it cannot convert)."""
    import onnx

    o2t = load()
    model = to_opset17(onnx.load(str(onnx_path)))
    try:
        module = o2t.convert(model)
    except NotImplementedError as exc:  # "Converter is not implemented (OperationDescription(...))"
        raise ConversionError(f"onnx2torch cannot convert an op of this graph: {str(exc).strip()[:300]}") from None
    except ConversionError:
        raise
    except Exception as exc:
        raise ConversionError(f"onnx2torch failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
                              ) from None
    return module.eval()




#: onnx2torch modules that only change a tensor's shape: with static shapes, a ``torch.reshape`` to the shape they
#: produced (their shape / axes arguments are tensors, which ``torch.export`` cannot read as Python values)
_VIEWS = frozenset({"OnnxReshape", "OnnxSqueezeDynamicAxes", "OnnxSqueezeStaticAxes", "OnnxUnsqueezeStaticAxes",
                    "OnnxUnsqueezeDynamicAxes", "OnnxFlatten"})


def specialize(module: Any, args: tuple[Any, ...]) -> Any:
    """``module`` (onnx2torch's GraphModule) with its shapes fixed to those of ``args``, so ``torch.export`` can
    trace it: view-like modules become ``torch.reshape`` to the shape they produced on ``args``, ``Gather``
    becomes ``index_select`` (onnx2torch indexes with a 0-d tensor, a data-dependent ``item()`` in export)."""
    import torch
    from torch import fx

    shapes: dict[Any, tuple[int, ...]] = {}

    class _Record(fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            out = super().run_node(n)
            if isinstance(out, torch.Tensor):
                shapes[n] = tuple(out.shape)
            return out

    with torch.no_grad():
        _Record(module).run(*args)
    graph = module.graph
    for node in list(graph.nodes):
        if node.op != "call_module" or node not in shapes:
            continue
        sub = module.get_submodule(node.target)
        kind = type(sub).__name__
        if kind not in _VIEWS and kind != "OnnxGather":
            continue
        with graph.inserting_before(node):
            if kind == "OnnxGather":
                flat = graph.call_function(torch.reshape, (node.args[1], (-1,)))
                picked = graph.call_function(torch.index_select, (node.args[0], sub._axis, flat))
                new = graph.call_function(torch.reshape, (picked, shapes[node]))
            else:
                new = graph.call_function(torch.reshape, (node.args[0], shapes[node]))
        node.replace_all_uses_with(new)
        graph.erase_node(node)
    graph.eliminate_dead_code()
    module.delete_all_unused_submodules()
    module.recompile()
    return module


__all__ = ["OPSET", "load", "specialize", "to_opset17", "to_torch", "transformer_reason"]
