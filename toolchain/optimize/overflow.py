"""The ops an fp16 build must keep in fp32: those whose values leave fp16's range on the calibration inputs.

The fp32 model is run once with every intermediate tensor as an output (ONNX Runtime, on the calibration
inputs). A tensor whose largest magnitude exceeds fp16's 65504 (or that is already inf/NaN) would become inf in
fp16, and inf turns to NaN a few ops later; the tensor must stay fp32, so its producer and every consumer are kept
in fp32 (ONNX Runtime's float16 converter ``node_block_list`` puts casts around them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .sensitivity import loadable

#: the largest finite float16
FP16_MAX = 65504.0


def overflow_tensors(onnx_path: Path, feeds: list[dict[str, np.ndarray]], work: Path) -> dict[str, float]:
    """Float tensors of the fp32 model at ``onnx_path`` whose magnitude exceeds ``FP16_MAX`` (or is not finite)
    on ``feeds``: name -> largest magnitude seen (inf for non-finite)."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors

    work.mkdir(parents=True, exist_ok=True)
    aug = work / "fp32_all_outputs.onnx"
    modify_model_output_intermediate_tensors(str(onnx_path), str(aug), op_types_for_saving=None)
    loadable(aug)  # untyped value_info entries ONNX Runtime would refuse
    try:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the tensors as in the graph
        sess = ort.InferenceSession(str(aug), opts, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        worst: dict[str, float] = {}
        for feed in feeds:
            for name, value in zip(names, sess.run(None, feed), strict=True):
                arr = np.asarray(value)
                if arr.dtype.kind != "f" or arr.size == 0:
                    continue
                peak = float(np.max(np.abs(arr))) if np.isfinite(arr).all() else float("inf")
                if peak > FP16_MAX:  # the saved copies are named <tensor>_ReshapedSavedOutput
                    name = name.removesuffix("_ReshapedSavedOutput")
                    worst[name] = max(worst.get(name, 0.0), peak)
        inputs = {i.name for i in onnx.load(str(onnx_path), load_external_data=False).graph.input}
        return {k: v for k, v in worst.items() if k not in inputs}
    finally:
        aug.unlink(missing_ok=True)


def fp32_nodes(onnx_path: Path, tensors: dict[str, float]) -> tuple[str, ...]:
    """Node names (graph order) that produce or consume any of ``tensors``: what stays fp32 in an fp16 build."""
    import onnx

    graph: Any = onnx.load(str(onnx_path), load_external_data=False).graph
    keep = [n.name for n in graph.node if n.name and (set(n.output) & tensors.keys() or set(n.input) & tensors.keys())]
    return tuple(dict.fromkeys(keep))


__all__ = ["FP16_MAX", "fp32_nodes", "overflow_tensors"]
