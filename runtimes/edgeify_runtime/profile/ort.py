"""ONNX Runtime: session profiling (``SessionOptions.enable_profiling``) and its JSON trace.

The trace is a Chrome-trace list of events. ``cat == "Session"`` events named ``model_run`` span one
``InferenceSession.run``; ``cat == "Node"`` events named ``<node>_kernel_time`` time one kernel, with
``args.op_name`` (the op type after graph optimization, e.g. ``QLinearConv``, ``FusedConv``) and
``args.provider`` (the execution provider that ran it). ``dur`` and ``ts`` are microseconds.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Sequence

from .record import OpProfile

SOURCE = "onnxruntime session profiling (SessionOptions.enable_profiling)"
_SUFFIX = "_kernel_time"


def parse_trace(events: Sequence[dict[str, Any]], runs: int, intended: str) -> tuple[list[OpProfile], dict[str, Any]]:
    """Per-node rows (execution order) over the last ``runs`` ``model_run`` spans, and the engine-side totals."""
    spans = sorted((int(e["ts"]), int(e["ts"]) + int(e["dur"])) for e in events
                   if e.get("cat") == "Session" and e.get("name") == "model_run")
    spans = spans[-runs:] if runs else spans
    if not spans:
        return [], {"engine_run_ms": None}
    lo = spans[0][0]
    nodes: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith(_SUFFIX):
            continue
        ts = int(e["ts"])
        if ts < lo or not any(a <= ts <= b for a, b in spans):
            continue
        name = str(e["name"])[: -len(_SUFFIX)]
        args = e.get("args") or {}
        row = nodes.setdefault(name, {"us": 0, "calls": 0, "type": str(args.get("op_name") or "?"),
                                      "provider": str(args.get("provider") or "?"), "first": ts})
        row["us"] += int(e.get("dur") or 0)
        row["calls"] += 1
    n = len(spans)
    ops = []
    for name, row in sorted(nodes.items(), key=lambda kv: kv[1]["first"]):
        off = row["provider"] != intended
        ops.append(OpProfile(name=name, type=row["type"], time_ms=round(row["us"] / n / 1000.0, 6),
                             placement=row["provider"], fallback=off, calls=round(row["calls"] / n, 3),
                             reason=f"ran on {row['provider']}, not {intended}" if off else None))
    engine_ms = sum(b - a for a, b in spans) / n / 1000.0
    return ops, {"engine_run_ms": round(engine_ms, 6)}


def intended_provider(options: dict[str, Any]) -> str:
    providers = list(options.get("providers") or ["CPUExecutionProvider"])
    return str(providers[0])


def prepare(adapter: Any, workdir: str) -> None:
    adapter.profile_prefix = os.path.join(workdir, "ort-profile")


def collect(adapter: Any, runs: int, options: dict[str, Any]) -> tuple[list[OpProfile], dict[str, Any], str,
                                                                           str | None]:
    path = adapter.end_profiling()
    try:
        with open(path, encoding="utf-8") as f:
            events = json.load(f)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    intended = intended_provider(options)
    ops, extra = parse_trace(events, runs, intended)
    extra["note"] = ("engine_run_ms is onnxruntime's own model_run span; profiled_run_ms - engine_run_ms is the "
                     "Python binding (input/output copies); engine_run_ms - ops_sum_ms is the executor between "
                     "kernels (allocation, thread-pool wake-ups, profiler bookkeeping)")
    return ops, extra, intended, None
