"""Per-op parity where the converter kept no tensor names: match the source's tensors to the built model's by value.

onnx2tf names TFLite tensors after the TensorFlow ops it emitted (``model/tf.nn.relu_1/Relu;...convolution``), not
after the ONNX nodes, so ``parity_ops`` finds no name in common. On the same inputs, though, a faithful conversion
computes the same intermediate values: each source tensor (in the source's order) is matched to the built float
tensor of the same size (NHWC/NCHW and reshapes undone) whose values are closest, when that distance is within the
precision's tolerance. Where the conversion goes wrong, nothing matches from that op on:
:func:`first_unmatched` names the first source op whose output has no counterpart while its inputs did and none
of the tensors computed from it do (an output the engine fused away, like a conv's before its ReLU, is not it: the
ReLU's output matches).

Bounded work: at most :data:`MAX_ELEMENTS` elements compared in all (large transformer graphs have many tensors of
one size); what was not compared stays unmatched and the note says so.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

MAX_ELEMENTS = 200_000_000


def _align(ref: np.ndarray, got: np.ndarray) -> np.ndarray | None:
    if got.shape == ref.shape:
        return got
    if got.ndim == 4 and ref.ndim == 4 and got.transpose(0, 3, 1, 2).shape == ref.shape:
        return got.transpose(0, 3, 1, 2)
    if got.ndim == 3 and ref.ndim == 3 and got.transpose(0, 2, 1).shape == ref.shape:
        return got.transpose(0, 2, 1)
    if got.size == ref.size:
        return got.reshape(ref.shape)
    return None


def _rel(ref: np.ndarray, got: np.ndarray) -> float:
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    return diff / scale if scale > 0 else diff


def match_by_value(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], order: list[str],
                   rel_limit: float) -> tuple[dict[str, str], dict[str, float], bool]:
    """``source tensor -> built tensor`` for the source tensors whose values a built tensor reproduces within
    ``rel_limit`` (max |Δ| over max |source|); also each source tensor's best relative distance (matched or not)
    and whether the comparison budget ran out."""
    by_size: dict[int, list[tuple[str, np.ndarray]]] = defaultdict(list)
    for name, arr in got.items():
        a = np.asarray(arr)
        if a.dtype.kind == "f" and a.size:
            by_size[a.size].append((name, a.astype(np.float64)))
    alias: dict[str, str] = {}
    best: dict[str, float] = {}
    budget = MAX_ELEMENTS
    for t in order:
        r = np.asarray(ref.get(t)) if t in ref else None
        if r is None or r.dtype.kind != "f" or r.size == 0 or not np.all(np.isfinite(r)):
            continue
        r64 = r.astype(np.float64)
        for name, cand in by_size.get(r.size, ()):
            if budget <= 0:
                return alias, best, True
            budget -= r.size
            g = _align(r64, cand)
            if g is None or not np.all(np.isfinite(g)):
                continue
            d = _rel(r64, g)
            if d < best.get(t, float("inf")):
                best[t] = d
                if d <= rel_limit:
                    alias[t] = name
            if d == 0.0:
                break
    return alias, best, False


def first_unmatched(nodes: list[Any], matched: set[str], float_tensors: set[str],
                    graph_inputs: set[str]) -> Any | None:
    """The first node (source order) whose float output has no built counterpart while every float input it reads
    had one (or is a graph input / weight), and no tensor computed from it has one either."""
    consumers: dict[str, list[Any]] = defaultdict(list)
    for n in nodes:
        for i in n.input:
            consumers[i].append(n)
    reaches_match: dict[str, bool] = {}  # tensor -> it or some tensor computed from it was matched

    def reaches(t: str) -> bool:
        if t in reaches_match:
            return reaches_match[t]
        reaches_match[t] = False  # cycles cannot occur in ONNX; guards re-entry
        hit = t in matched or any(reaches(o) for c in consumers.get(t, ()) for o in c.output)
        reaches_match[t] = hit
        return hit

    for n in reversed(nodes):  # fill the table bottom-up (no deep recursion on long chains)
        for o in n.output:
            reaches(o)
    produced = {o for n in nodes for o in n.output}
    for n in nodes:
        outs = [o for o in n.output if o in float_tensors]
        if not outs or any(o in matched for o in outs):
            continue
        ins = [i for i in n.input if i in float_tensors and i in produced]
        if all(i in matched for i in ins) and not any(reaches_match.get(o, False) for o in outs):
            return n
    return None


__all__ = ["MAX_ELEMENTS", "first_unmatched", "match_by_value"]
