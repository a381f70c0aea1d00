"""LiteRT (TensorFlow Lite): per-op placement from the interpreter's own node table; no per-op times.

``Interpreter._get_ops_details()`` lists the model's nodes followed by one ``DELEGATE`` node per partition a
delegate (XNNPACK) took over. A delegate kernel replaces exactly the nodes that compute its outputs from its
inputs, so walking back from each ``DELEGATE`` node's outputs through the producers, stopping at its inputs,
names the nodes it replaced; every other node runs on LiteRT's built-in kernels. That gives one row per model
operator (never one per partition).

Times: the Python interpreter has no op profiler (the C++ ``benchmark_model --enable_op_profiling`` is not in the
wheel, and ``experimental_preserve_all_tensors`` keeps tensors, it does not time anything), so ``time_ms`` is
null and the profile says why; the whole-inference time of the profiled runs is still in ``overhead``.
"""

from __future__ import annotations

from typing import Any, Sequence

from .record import OpProfile

SOURCE = "litert interpreter node table (Interpreter._get_ops_details) and delegate partitions"
NO_TIMES = ("the LiteRT Python interpreter has no per-op profiler (the C++ benchmark_model "
            "--enable_op_profiling is not in the wheel); per-op times are not measured rather than estimated")
XNNPACK = "XNNPACK delegate"
BUILTIN = "LiteRT built-in kernels"


def _ints(values: Any) -> list[int]:
    return [int(v) for v in list(values if values is not None else []) if int(v) >= 0]


def delegated_nodes(ops: Sequence[dict[str, Any]]) -> set[int]:
    """Indices of the model nodes replaced by a DELEGATE node (walk back from its outputs to its inputs)."""
    model = [o for o in ops if o.get("op_name") != "DELEGATE"]
    producer: dict[int, dict[str, Any]] = {}
    for o in model:
        for t in _ints(o.get("outputs")):
            producer[t] = o
    taken: set[int] = set()
    for d in (o for o in ops if o.get("op_name") == "DELEGATE"):
        stop = set(_ints(d.get("inputs")))
        todo = list(_ints(d.get("outputs")))
        seen: set[int] = set()
        while todo:
            t = todo.pop()
            if t in seen or t in stop:
                continue
            seen.add(t)
            node = producer.get(t)
            if node is None or int(node["index"]) in taken:
                continue
            taken.add(int(node["index"]))
            todo.extend(_ints(node.get("inputs")))
    return taken


def _node_name(node: dict[str, Any], tensor_names: dict[int, str]) -> str:
    outs = _ints(node.get("outputs"))
    label = tensor_names.get(outs[0], "") if outs else ""
    return f"#{node['index']} {label}".strip()


def placement_rows(ops: Sequence[dict[str, Any]], tensor_names: dict[int, str], xnnpack: bool) -> list[OpProfile]:
    taken = delegated_nodes(ops)
    rows = []
    for o in ops:
        if o.get("op_name") == "DELEGATE":
            continue
        inside = int(o["index"]) in taken
        off = xnnpack and not inside
        rows.append(OpProfile(name=_node_name(o, tensor_names), type=str(o.get("op_name")), time_ms=None,
                              placement=XNNPACK if inside else BUILTIN, fallback=off,
                              reason="XNNPACK did not take this op: it runs on LiteRT's reference/built-in "
                                     "kernels" if off else None))
    return rows


def collect(adapter: Any) -> tuple[list[OpProfile], dict[str, Any], str, str | None]:
    it = adapter.interpreter
    ops = it._get_ops_details()
    names = {int(d["index"]): str(d.get("name") or "") for d in it.get_tensor_details()}
    rows = placement_rows(ops, names, adapter.xnnpack)
    partitions = sum(1 for o in ops if o.get("op_name") == "DELEGATE")
    extra = {"delegate_partitions": partitions,
             "note": "no per-op times (see time_ms_missing); profiled_run_ms is the whole Model.run"}
    return rows, extra, XNNPACK if adapter.xnnpack else BUILTIN, NO_TIMES
