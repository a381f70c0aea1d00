"""ONNX rewrites before onnx2tf, so that it writes TFLite builtins instead of Select TensorFlow (Flex) ops.

onnx2tf turns exact GELU (``x * 0.5 * (1 + erf(x / sqrt(2)))``) into the TFLite ``GELU`` builtin only when the
graph spells it ``Div(x, 1.4142135) -> Erf -> Add(1) -> Mul(x, .) -> Mul(., 0.5)``. ``torch.onnx.export``
(opset < 20) writes the two multiplications the other way round (``Mul(0.5, .) -> Mul(x, .)``), and onnx2tf then
converts the lone ``Erf`` to the Flex op ``FlexErf``, which LiteRT cannot load (even in onnx2tf's own order its
GELU detection did not fire on such exports). :func:`fuse_gelu` replaces each exact-GELU subgraph with the ONNX
``Gelu`` op (opset 20), which onnx2tf maps to the GELU builtin; its int8 variant then quantizes too (the pseudo
``Erf`` fallback divides by ``|x|`` and breaks int8 ``DIV``).
"""

from __future__ import annotations

import math
from pathlib import Path

#: part of the tflite-convert cache key: bump when a rewrite changes what onnx2tf is given
VERSION = 2


def fuse_gelu(path: Path) -> int:
    """Replace every exact-GELU subgraph of the ONNX file (in place) with a ``Gelu`` node; returns how many."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)

    def scalar(name: str, value: float) -> bool:
        arr = consts.get(name)
        return arr is not None and arr.size == 1 and bool(np.isclose(float(arr.reshape(-1)[0]), value, rtol=1e-6))

    def only_user(name: str, op: str) -> onnx.NodeProto | None:
        found = users.get(name, [])
        return found[0] if len(found) == 1 and found[0].op_type == op else None

    count = 0
    fused: list[tuple[onnx.NodeProto, list[onnx.NodeProto], onnx.NodeProto]] = []
    for div in list(graph.node):
        if div.op_type != "Div" or len(div.input) != 2 or not scalar(div.input[1], math.sqrt(2)):
            continue
        x = div.input[0]
        erf = only_user(div.output[0], "Erf")
        add = erf and only_user(erf.output[0], "Add")
        if add is None or not any(scalar(i, 1.0) for i in add.input if i != erf.output[0]):
            continue
        first = only_user(add.output[0], "Mul")
        if first is None:
            continue
        rest = [i for i in first.input if i != add.output[0]]
        if len(rest) != 1:
            continue
        second = only_user(first.output[0], "Mul")
        if second is None:
            continue
        last = [i for i in second.input if i != first.output[0]]
        # torch: Mul(0.5, add) -> Mul(x, .); onnx2tf's own order: Mul(x, add) -> Mul(., 0.5)
        if len(last) != 1 or not ((scalar(rest[0], 0.5) and last[0] == x) or (rest[0] == x and scalar(last[0], 0.5))):
            continue
        gelu = onnx.helper.make_node("Gelu", [x], [second.output[0]], name=f"{div.name or 'gelu'}_fused_gelu",
                                     approximate="none")
        fused.append((div, [erf, add, first, second], gelu))
    for div, others, gelu in fused:
        nodes = list(graph.node)
        at = nodes.index(others[-1])
        graph.node.insert(at, gelu)
        for node in (div, *others):
            graph.node.remove(node)
        count += 1
    if count:
        used = {name for node in graph.node for name in node.input}
        for init in [t for t in graph.initializer if t.name not in used]:
            graph.initializer.remove(init)
        for imp in model.opset_import:
            if imp.domain in ("", "ai.onnx") and imp.version < 20:
                imp.version = 20  # Gelu is opset 20; the ops that changed in 19/20 only gained types or modes
        onnx.save(model, str(path))
    return count
