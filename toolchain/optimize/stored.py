"""What an optimize run leaves in the results store besides the latency: each benchmark's candidate (label,
engine, precision, recipe, settings, accuracy, screen or full protocol, chosen, on the Pareto front) and, on one
result of the run, the run's decision (why, ladder, the candidates that failed parity or the budgets and why).

Written with ``ResultStore.annotate`` once the run has chosen (a candidate's accuracy is known before it is
measured, "chosen" only at the end); ``edgeify results`` and ``edgeify report`` read it back from ``extra``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeify.errors import EdgeifyError
from edgeify.results import open_store

from .records import Candidate, OptimizeResult

#: at most this many failed candidates are kept in the run's record (the JSON output has all of them)
MAX_FAILED = 40


def label(c: Candidate) -> str:
    return f"{c.engine} {c.precision} ({c.recipe.name}, {c.settings.label()})"


def _compression(c: Candidate) -> Any:
    comp = getattr(c, "compression", None)
    return comp.model_dump(mode="json") if hasattr(comp, "model_dump") else comp


def candidate_record(result: OptimizeResult, i: int, protocol: str) -> dict[str, Any]:
    c = result.candidates[i]
    chosen = result.chosen is not None and result.chosen.index == i
    return {"run_id": result.run_id, "index": i, "label": label(c), "engine": c.engine, "precision": c.precision,
            "recipe": c.recipe.name, "float_layers": list(c.recipe.float_layers), "settings": c.row()["settings"],
            "compression": _compression(c), "accuracy_drop": c.accuracy_drop,
            "accuracy_measure": result.accuracy_measure, "parity_passed": None if c.accuracy is None
            else c.accuracy.parity_passed, "size_bytes": c.size_bytes, "status": c.status,
            "meets_budget": c.meets_budget, "protocol": protocol, "chosen": chosen, "pareto": i in result.pareto,
            "chosen_bundle": result.chosen.bundle if chosen and result.chosen else None}


def run_record(result: OptimizeResult) -> dict[str, Any]:
    """The run's decision: objective, budgets, why, the ladder's rungs, the candidates that failed and why."""
    failed = [{"label": label(c), "status": c.status, "reason": c.reason, "accuracy_drop": c.accuracy_drop,
               "p50_ms": c.latency("p50")} for c in result.candidates
              if c.status in ("parity-failed", "accuracy-failed", "build-failed", "bench-failed")
              or (c.latency("p50") is not None and not c.meets_budget)][:MAX_FAILED]
    return {"run_id": result.run_id, "objective": result.objective, "budgets": result.budgets.model_dump(),
            "target": result.target, "device": result.device, "accuracy_measure": result.accuracy_measure,
            "why": result.chosen.why if result.chosen else "", "chosen": None if result.chosen is None
            else label(result.candidates[result.chosen.index]), "failure": result.failure, "stopped": result.stopped,
            "ladder": [r.model_dump(mode="json") for r in result.ladder], "failed": failed,
            "candidates": len(result.candidates)}


def annotations(result: OptimizeResult) -> dict[int, dict[str, Any]]:
    """``{result_id: extra fields}`` for every stored benchmark of the run. A candidate's first result is its
    screening run, a second one its full-protocol run (``Search._full`` appends it)."""
    out: dict[int, dict[str, Any]] = {}
    for i, c in enumerate(result.candidates):
        ids = list(c.result_ids)
        for k, rid in enumerate(ids):
            screened = c.screen_latency_ms is not None
            protocol = "screen" if screened and k == 0 and (len(ids) > 1 or c.latency_ms is None) else "full"
            out[int(rid)] = {"candidate": candidate_record(result, i, protocol)}
    for f in (result.confirm or {}).get("finalists", ()):  # optimize.confirm's interleaved re-measure rounds
        for rid in f.get("result_ids", ()):
            out[int(rid)] = {"candidate": candidate_record(result, int(f["index"]), "confirm")}
    if out:  # the run's decision on one result: the chosen candidate's last run, else the run's first
        key = result.candidates[result.chosen.index].result_ids[-1] if result.chosen is not None and \
            result.candidates[result.chosen.index].result_ids else min(out)
        out[int(key)]["optimize_run"] = run_record(result)
    return out


def record(result: OptimizeResult, say: Callable[[str], None] | None = None) -> int:
    """Write :func:`annotations` into the results store; a store error is said, never raised (the run stands)."""

    extras = annotations(result)
    if not extras:
        return 0
    try:
        with open_store() as store:
            return store.annotate(extras)
    except (EdgeifyError, OSError) as exc:
        if say is not None:
            say(f"could not record the candidates' accuracy in the results store: {str(exc).splitlines()[0]}")
        return 0


__all__ = ["annotations", "candidate_record", "record", "run_record"]
