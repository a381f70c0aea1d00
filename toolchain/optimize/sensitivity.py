"""Layer-wise sensitivity of a QDQ int8 ONNX model: which quantized ops lose the most to quantization.

ONNX Runtime's ``qdq_loss_debug`` exposes every tensor before its QuantizeLinear and after its DequantizeLinear
on calibration inputs; every op with a quantized activation input or output is scored (compute ops, and also a
``Softmax`` whose int8 output collapses to zero, a ``Concat``, a pooling op), by the mean per-channel relative error
its worst quantized activation suffers. A per-channel measure, not the tensor's SQNR: a few outlier channels keep
the SQNR high while per-tensor scales crush every other channel to zero.

ONNX Runtime's ``modify_model_output_intermediate_tensors`` can leave ``value_info`` entries (and saved outputs)
without an element type on older graphs, which ONNX Runtime then refuses to load ("Invalid tensor data type 0"):
:func:`loadable` drops them before the augmented model is run (shared with ``overflow``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .ops import ONNX_COMPUTE
from .records import Recipe, Rung


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

    loadable(aug)
    acts = collect_activations(str(aug), Reader())
    matched = create_activation_matching(acts)
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def error(tensor: str) -> float | None:
        match = matched.get(tensor) or {}
        pre, post = match.get("pre_qdq"), match.get("post_qdq")
        if not pre or not post:
            return None
        return float(np.mean([_channel_error(_folded(a, b), b) for a, b in zip(pre, post, strict=False)]))

    scores: list[tuple[str, float, tuple[str, ...]]] = []
    for node in model.graph.node:
        if node.op_type in _QDQ or not node.name:
            continue
        quantized_in = [q.input[0] for q in (_quantizer_of(i, producer) for i in node.input) if q is not None]
        quantized_out = [o for o in node.output if any(c.op_type == "QuantizeLinear" for c in consumers.get(o, ()))]
        errs = [e for e in (error(t) for t in (*quantized_in, *quantized_out)) if e is not None]
        if not errs:
            continue  # not quantized: nothing to lose
        producers = _compute_producers(quantized_in[0], producer) if quantized_in else ()
        scores.append((node.name, max(errs), tuple(p for p in producers if p != node.name)))
    aug.unlink(missing_ok=True)
    return sorted(scores, key=lambda t: -t[1])


def _folded(pre: np.ndarray, post: np.ndarray) -> np.ndarray:
    """``pre`` as the quantized tensor stands for it: ONNX Runtime folds a ReLU after an op into the op's output
    quantization (range [0, max]), so a tensor whose dequantized values are never negative while the float ones
    are compares against ``max(pre, 0)`` (the clipping is the ReLU's, not a quantization error)."""
    if post.size and pre.size and float(np.min(post)) >= 0.0 > float(np.min(pre)):
        return np.maximum(pre, 0)
    return pre


_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})


def _quantizer_of(tensor: str, producer: dict[str, Any]) -> Any:
    """The QuantizeLinear of the Q -> DQ pair that produces ``tensor`` (an activation), or None."""
    dq = producer.get(tensor)
    q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" and dq.input else None
    return q if q is not None and q.op_type == "QuantizeLinear" else None


def loadable(path: Path) -> int:
    """Drop the ``value_info`` entries and graph outputs without an element type from the ONNX file (in place):
    ONNX Runtime refuses a model with any ("Invalid tensor data type 0"). Returns how many were dropped."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph

    def typed(vi: Any) -> bool:
        kind = vi.type.WhichOneof("value")
        return kind != "tensor_type" or vi.type.tensor_type.elem_type != 0

    bad_info = [vi for vi in graph.value_info if not typed(vi)]
    bad_out = [vi for vi in graph.output if not typed(vi)]
    for vi in bad_info:
        graph.value_info.remove(vi)
    for vi in bad_out:  # a saved copy of an untyped tensor: its Reshape goes with it
        graph.output.remove(vi)
        for node in [n for n in graph.node if vi.name in n.output]:
            if node.name == vi.name:
                graph.node.remove(node)
    if bad_info or bad_out:
        onnx.save(model, str(path))
    return len(bad_info) + len(bad_out)


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


def failed_rung(name: str, base: Any, tool: str, exc: BaseException) -> Any:
    """The ladder's record of a rung whose tooling failed (``exc`` while running ``tool`` for ``base``'s engine):
    not accepted, with the reason, so the ladder goes on to the next rung and the table and JSON show why."""

    text = str(exc).strip().splitlines()
    reason = f"failed: {tool} raised {type(exc).__name__}: {text[0][:300] if text else ''}"
    return Rung(rung=name, engine=base.plan.engine, precision=name if name.startswith("int8") else
                base.plan.precision, recipe=Recipe(name="tool-failed"), accepted=False, reason=reason)
