"""Confirm the latency decision before choosing: the finalists are re-measured in interleaved rounds and compared
at the run level, so one disturbed benchmark run cannot decide which of two near candidates wins.

Single benchmark runs drift between runs by more than the ±LATENCY_TIE band on a loaded machine
(benchmarks/optimize_repeat.md), so a choice made on one run each can flip from one optimize run to the next.
Here the finalists (the fastest fully measured candidate that meets the budgets and every one whose full-protocol
p50 is within FINALIST_BAND of it, at most MAX_FINALISTS) run ``rounds`` rounds of ``edgeify.bench.bench_series``
(each run its own agent process, the order alternating per round, the target's full protocol, stored under the
optimize run); each pair is compared by ``analysis.runstats.hierarchical`` (paired rounds). Starting from the
simplest finalist (``choose.simplicity``), only a finalist *faster* beyond noise (the whole interval of the ratio
below 1 and outside ±LATENCY_TIE) displaces the current pick; the finalists not apart from the pick (verdict
``same`` or ``inconclusive``) are tied with it, and the simplest of those is chosen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgeify.bench import BenchSettings, bench_series

from ..analysis.runstats import hierarchical
from .choose import LATENCY_TIE, meets, simplicity
from .measure import MeasureProtocol, settings_bundle
from .records import Budgets, Candidate

#: candidates whose full-protocol p50 is within this fraction of the best are finalists
FINALIST_BAND = 0.15
#: at most this many finalists (the best included) are re-measured
MAX_FINALISTS = 3
#: default rounds (``optimize --confirm-rounds``); 0 turns the confirmation off
DEFAULT_ROUNDS = 3


def finalists(cands: Sequence[Candidate], budgets: Budgets, pick: int | None = None) -> list[int]:
    """Indices: the best fully measured candidate meeting the budgets, then those within FINALIST_BAND of it;
    ``pick`` (the single-run choice, when it is within the band) and the simplest settings of the best artifact
    (screened or fully measured) always among them."""
    p = budgets.percentile
    full = [i for i, c in enumerate(cands) if c.latency_ms is not None and meets(c, budgets) and c.bundle
            and (c.compression is None or c.compression.get("on_front") is not False)]
    full.sort(key=lambda i: cands[i].latency(p) or float("inf"))
    if not full:
        return []
    best = cands[full[0]].latency(p) or float("inf")
    near = [i for i in full if (cands[i].latency(p) or float("inf")) <= best * (1 + FINALIST_BAND)]
    if pick in near[MAX_FINALISTS:]:
        near = [*near[:MAX_FINALISTS - 1], pick]
    # the simplest settings of the best artifact at its thread count, even if only screened (one slow screening run
    # must not keep the engine's defaults out of the final: optimize_repeat saw LATENCY screened 1.6x slow)
    top = cands[full[0]]  # (same thread count: fewer threads is a real speed axis, not a no-op)
    same = [i for i, c in enumerate(cands) if c.bundle == top.bundle and c.settings.threads == top.settings.threads
            and meets(c, budgets)]
    simplest = min(same, key=lambda i: simplicity(cands[i]))
    if simplest not in near[:MAX_FINALISTS]:
        near = [*near[:MAX_FINALISTS - 1], simplest]
    return near[:MAX_FINALISTS]


def _label(c: Candidate) -> str:
    return f"{c.engine} {c.precision} ({c.recipe.name}, {c.settings.label()})"


def confirm(cands: Sequence[Candidate], budgets: Budgets, *, rounds: int, runtime_of: Callable[[str], str],
            proto: MeasureProtocol, device: str, run_id: str, deadline: float, say: Callable[[str], None],
            pick: int | None = None, cooldown_s: float = 0.5) -> dict[str, Any] | None:
    """Re-measure the finalists; the record (``OptimizeResult.confirm``) with ``chosen`` (a candidate index) and
    ``tied``, or with ``skipped`` (why not) and no ``chosen``. None when ``rounds`` is 0 (turned off)."""
    if rounds <= 0:
        return None
    fin = finalists(cands, budgets, pick)
    rec: dict[str, Any] = {"rounds": rounds, "band": FINALIST_BAND, "threshold": LATENCY_TIE,
                           "finalists": [{"index": i, "label": _label(cands[i])} for i in fin]}
    if len(fin) < 2:
        return {**rec, "skipped": f"{len(fin)} candidate(s) within {FINALIST_BAND:.0%} of the best fully "
                                  "measured one: nothing to confirm"}
    if time.monotonic() >= deadline:
        return {**rec, "skipped": "--max-time reached before the confirmation rounds"}
    paths, sets = [], []
    for i in fin:
        c = cands[i]
        target, threads = settings_bundle(Path(c.bundle or ""), runtime_of(c.engine), c.settings)
        paths.append(target)
        sets.append(BenchSettings(warmup=proto.warmup, runs=proto.runs, min_duration_s=proto.min_duration_s,
                                  max_duration_s=proto.max_duration_s, threads=threads))
    say(f"confirming {len(fin)} finalist(s) within {FINALIST_BAND:.0%} of the best: {rounds} interleaved round(s) "
        "(each run its own process)")
    try:
        s = bench_series(paths, device, repeat=rounds, settings=sets, cooldown_s=cooldown_s, store=True,
                         progress=lambda m: say(f"confirm {m}"), stop_at=deadline, run_id=run_id)
    except Exception as exc:  # a finalist's re-measure failed: the decision stays the single-run one
        return {**rec, "skipped": f"re-measure failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    runs = [[list(r.samples_ms) for r in rs] for rs in s.runs]
    done = min(len(r) for r in runs)
    for k in range(len(fin)):
        rec["finalists"][k].update(run_p50_ms=[r.latency_ms.p50 for r in s.runs[k]],
                                   result_ids=[r.result_id for r in s.runs[k] if r.result_id is not None])
    rec.update(series=s.id, rounds_done=done, order=list(s.order))
    if done < 2 or any(not x for rs in runs for x in rs):
        return {**rec, "skipped": f"{done} round(s) done before --max-time (2 needed), or runs without samples"}
    cache: dict[tuple[int, int], Any] = {}

    def vs(a: int, b: int) -> Any:  # b relative to a (positions in fin)
        if (a, b) not in cache:
            cache[(a, b)] = hierarchical(runs[a][:done], runs[b][:done], threshold=LATENCY_TIE, paired=True)
        return cache[(a, b)]

    order = sorted(range(len(fin)), key=lambda k: simplicity(cands[fin[k]]))
    pick = order[0]
    for k in order[1:]:  # only a finalist faster beyond noise displaces the simpler pick
        if vs(pick, k).verdict == "faster":
            pick = k
    tied = [k for k in order if k == pick or vs(pick, k).verdict in ("same", "inconclusive")]
    pick = tied[0]  # the simplest among those tied with the pick
    rec["comparisons"] = [{"a": fin[pick], "b": fin[k], **{x: vs(pick, k).to_dict()[x] for x in (
        "verdict", "ratio", "ci", "runs_a", "runs_b", "left_out_a", "left_out_b")},
                           "tied": k in tied} for k in order if k != pick]
    rec["method"] = vs(pick, next(k for k in order if k != pick)).method
    rec.update(chosen=fin[pick], tied=[fin[k] for k in tied])
    return rec


def why_text(rec: dict[str, Any] | None, *, skipped: bool = False) -> str:
    """The "why" clause of the confirmation: rounds, each finalist's ratio to the pick with its interval; with
    ``skipped=True`` why the finalists were not re-measured; '' when neither applies."""
    if not rec or bool(rec.get("skipped")) != skipped:
        return ""
    if skipped:
        return f"not re-measured: {rec['skipped']}"
    labels = {f["index"]: f["label"] for f in rec["finalists"]}
    by_ratio = sorted(rec["comparisons"], key=lambda c: c["ratio"])  # the runner-up first: the nearest to the pick
    parts = [f"{'runner-up ' if k == 0 else ''}{labels[c['b']]} x{c['ratio']:.3f} [{c['ci'][0]:.3f}, "
             f"{c['ci'][1]:.3f}] {'tied' if c['tied'] else c['verdict']}" for k, c in enumerate(by_ratio)]
    return (f"re-measured {len(rec['finalists'])} finalist(s) in {rec['rounds_done']} interleaved round(s), run-level "
            f"ratio to the pick, {labels[rec['chosen']]} (95% interval, tie ±{rec['threshold']:.0%}): "
            + "; ".join(parts)
            + (f"; {len(rec['tied'])} tied: the simplest was chosen" if len(rec["tied"]) > 1 else ""))


__all__ = ["DEFAULT_ROUNDS", "FINALIST_BAND", "MAX_FINALISTS", "confirm", "finalists", "why_text"]
