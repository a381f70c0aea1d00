"""Layer-wise sensitivity of a QDQ int8 ONNX model: which compute ops lose the most to quantization.

ONNX Runtime's ``qdq_loss_debug`` exposes every tensor before its QuantizeLinear and after its DequantizeLinear
on calibration inputs; for each compute op (Conv, MatMul, Gemm...) the score is the mean per-channel relative
error its activation input suffers. A per-channel measure, not the tensor's SQNR: a few outlier channels keep the
SQNR high while per-tensor scales crush every other channel to zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .ops import ONNX_COMPUTE


def _channel_error(pre: np.ndarray, post: np.ndarray) -> float:
    a = pre.astype(np.float64)
    b = post.astype(np.float64)
    if a.ndim < 2:
        denom = np.linalg.norm(a) + 1e-12
        return float(np.linalg.norm(a - b) / denom)
    a = np.moveaxis(a, 1, 0).reshape(a.shape[1], -1)
    b = np.moveaxis(b, 1, 0).reshape(b.shape[1], -1)
    norms = np.linalg.norm(a, axis=1)
    live = norms > 1e-9 * (norms.max() + 1e-30)
    if not live.any():
        return 0.0
    err = np.linalg.norm(a - b, axis=1)[live] / norms[live]
    return float(np.clip(err, 0.0, 1.0).mean())


def rank_layers(qdq_model: Path, feeds: list[dict[str, np.ndarray]], work: Path
                ) -> list[tuple[str, float, tuple[str, ...]]]:
    """Compute ops of ``qdq_model`` with their sensitivity score and the compute ops producing their activation
    input, most sensitive first. Keeping an activation in float takes its consumer AND its producer out of int8
    (the producer's quantized output is what crushes it), so the ladder keeps them in float together."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    model = onnx.load(str(qdq_model))
    producer = {o: n for n in model.graph.node for o in n.output}
    work.mkdir(parents=True, exist_ok=True)
    aug = work / "qdq_augmented.onnx"
    modify_model_output_intermediate_tensors(str(qdq_model), str(aug))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> Any:
            return next(self._it, None)

    acts = collect_activations(str(aug), Reader())
    matched = create_activation_matching(acts)
    scores: list[tuple[str, float, tuple[str, ...]]] = []
    for node in model.graph.node:
        if node.op_type not in ONNX_COMPUTE or not node.input:
            continue
        dq = producer.get(node.input[0])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            continue  # not quantized: nothing to lose
        match = matched.get(q.input[0]) or {}
        pre, post = match.get("pre_qdq"), match.get("post_qdq")
        if not pre or not post:
            continue
        err = float(np.mean([_channel_error(a, b) for a, b in zip(pre, post, strict=False)]))
        scores.append((node.name, err, _compute_producers(q.input[0], producer)))
    aug.unlink(missing_ok=True)
    return sorted(scores, key=lambda t: -t[1])


def _compute_producers(tensor: str, producer: dict[str, Any], depth: int = 8) -> tuple[str, ...]:
    """The compute op that produces ``tensor``, walking back through single-input ops (Relu, pooling, DQ/Q)."""
    for _ in range(depth):
        node = producer.get(tensor)
        if node is None or not node.input:
            return ()
        if node.op_type in ONNX_COMPUTE:
            return (node.name,)
        tensor = node.input[0]
    return ()
