"""Small helpers on ONNX graphs shared by several steps (imported lazily: they need ``onnx``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeify_runtime.manifest import TensorSpec


def _dims(tensor_type: Any) -> tuple[int | str, ...]:
    dims: list[int | str] = []
    for i, d in enumerate(tensor_type.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append("batch" if i == 0 else (d.dim_param or f"dim{i}"))
    return tuple(dims)


def guess_layout(shape: tuple[int | str, ...], torch_source: bool) -> str | None:
    if len(shape) != 4:
        return None
    if torch_source:
        return "NCHW"
    c_first, c_last = shape[1], shape[3]
    if isinstance(c_first, int) and c_first in (1, 3, 4) and not (isinstance(c_last, int) and c_last in (1, 3, 4)):
        return "NCHW"
    if isinstance(c_last, int) and c_last in (1, 3, 4):
        return "NHWC"
    return None


def signature(model: Any, torch_source: bool = False) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs (initializers excluded) and outputs of an ONNX ModelProto as TensorSpecs."""
    from onnx import helper

    init = {i.name for i in model.graph.initializer}

    def spec(v: Any, is_input: bool) -> TensorSpec:
        tt = v.type.tensor_type
        shape = _dims(tt)
        dtype = str(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        return TensorSpec(v.name, shape, dtype, guess_layout(shape, torch_source) if is_input else None)

    return ([spec(v, True) for v in model.graph.input if v.name not in init],
            [spec(v, False) for v in model.graph.output])


def opset_of(model: Any) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def save_single_file(model: Any, path: Path) -> Path:
    import onnx

    onnx.save_model(model, str(path), save_as_external_data=False)
    return path


def fix_input_dims(model: Any, fixes: list[dict[str, Any]]) -> Any:
    """Set the dynamic input dims named in ``fixes`` ({"input", "axis", "value"}) to fixed values, then let
    ONNX shape inference carry them through the graph (best effort: a model it cannot infer keeps its outputs)."""
    import onnx

    by_name = {v.name: v for v in model.graph.input}
    for f in fixes:
        dim = by_name[f["input"]].type.tensor_type.shape.dim[f["axis"]]
        dim.Clear()
        dim.dim_value = int(f["value"])
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # shape inference is an improvement, not a requirement
        return model
    return inferred


#: op domains every ONNX consumer knows (``com.microsoft``: ONNX Runtime's contrib ops, also read by OpenVINO)
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "com.microsoft"})


def custom_ops(model: Any) -> list[str]:
    """``domain::OpType`` of every node outside the standard domains (custom ops need a library edgeify never
    loads), including nodes inside local functions; model-local functions themselves are not custom ops."""
    local = {(f.domain, f.name) for f in model.functions}
    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    return sorted({f"{n.domain}::{n.op_type}" for n in nodes
                   if n.domain not in STANDARD_DOMAINS and (n.domain, n.op_type) not in local})
