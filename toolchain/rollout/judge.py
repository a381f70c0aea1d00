"""The gate of one device in a wave: the new bundle against the one it replaced, on that device, at the run level.

Both bundles are benchmarked in interleaved runs on the device (previous, new, new, previous, ...), each run one
agent process. The comparison is :func:`edgeify.analysis.runstats.hierarchical` with the rounds paired, so drift
that hits both bundles of a round cancels. For ``p50`` it uses every sample (runs resampled, then samples within
runs); for ``p90``/``p95``/``p99``/``mean`` each run is summarised by that statistic and the runs are resampled.

A device **fails** when the whole interval lies above the gate (the new bundle is slower than allowed with 95%
confidence), **passes** when the whole interval lies at or below it, and is **inconclusive** otherwise: the caller
then adds runs (up to a bound) and, if still inconclusive, judges the point estimate and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..analysis.runstats import hierarchical
from .plan import Gate


@dataclass(frozen=True)
class DeviceVerdict:
    verdict: str          #: pass | fail | inconclusive
    ratio: float
    ci: tuple[float, float]
    runs: int
    metric: str
    max_ratio: float
    method: str
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "ratio": round(self.ratio, 4), "ci": [round(x, 4) for x in self.ci],
                "runs": self.runs, "metric": self.metric, "max_ratio": self.max_ratio, "method": self.method,
                "note": self.note}


def _metric_of(result: Any, metric: str) -> float:
    value = getattr(result.latency_ms, metric, None)
    if value is None:
        raise ValueError(f"the benchmark result has no {metric}")
    return float(value)


def judge(previous: Sequence[Any], new: Sequence[Any], gate: Gate, *, final: bool = False) -> DeviceVerdict:
    """``previous`` / ``new``: the BenchResults of the interleaved runs, round by round."""
    if gate.metric == "p50":
        runs_a = [list(r.samples_ms) for r in previous]
        runs_b = [list(r.samples_ms) for r in new]
    else:
        runs_a = [[_metric_of(r, gate.metric)] for r in previous]
        runs_b = [[_metric_of(r, gate.metric)] for r in new]
    rl = hierarchical(runs_a, runs_b, threshold=gate.max_ratio - 1.0, paired=True)
    lo, hi = rl.ci
    note = ""
    if lo > gate.max_ratio:
        verdict = "fail"
    elif hi <= gate.max_ratio:
        verdict = "pass"
    elif final:
        verdict = "fail" if rl.ratio > gate.max_ratio else "pass"
        note = (f"inconclusive after {rl.runs_a} runs: judged by the point estimate {rl.ratio:.3f} "
                f"(the interval [{lo:.3f}, {hi:.3f}] straddles {gate.max_ratio:g})")
    else:
        verdict = "inconclusive"
    return DeviceVerdict(verdict=verdict, ratio=rl.ratio, ci=(lo, hi), runs=rl.runs_a, metric=gate.metric,
                         max_ratio=gate.max_ratio, method=rl.method, note=note)


__all__ = ["DeviceVerdict", "judge"]
