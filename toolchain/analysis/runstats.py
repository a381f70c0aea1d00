"""Run-level inference for compare and gate: a hierarchical bootstrap over runs, then samples within runs.

Samples of one benchmark run share that run's machine state (clock, cache, what else ran), so they are not
independent draws: a sample-level interval of one run against another sees only within-run noise and calls
run-to-run drift "significant". Here the unit is the run:

* each run is summarised by its median (``log`` scale, so a ratio is a difference);
* the statistic of a side is the mean of its runs' log medians (the geometric mean of run medians), and
  ``ratio`` = exp(B - A): B's typical run relative to A's;
* the interval is a two-level bootstrap: resample runs with replacement, and for each drawn run one bootstrap
  replicate of its median (samples resampled within the run). When both sides come from the same interleaved
  series (A B A B ..., ``bench --repeat`` / ``compare --runs``) with one run of each per round, rounds are
  resampled as pairs (``paired``): drift that hits both A and B of a round cancels;
* a run (a round, when paired) more than OUTLIER_Z robust z-scores (median / MAD) from the others is left out
  and named (``left_out_a`` / ``left_out_b``): a burst of load that slowed one whole run is not the bundle;
* with few runs the bootstrap is too narrow (it cannot see the spread it was not shown): the interval's
  deviations are widened by sqrt(k / (k - 1)) * t(k-1) / z (k: runs, or pairs), a Student-t correction;
* seeded: the same runs give the same interval.

Verdict at a ``threshold`` (e.g. 0.05): ``same`` when the interval lies within [1 - threshold, 1 + threshold];
else ``slower`` when it lies above 1, ``faster`` below 1; else ``inconclusive``, with an estimate of the runs per
side that would settle it (the half-width shrinks as 1 / sqrt(runs)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
#: samples per run used for the within-run resampling (a seeded subsample above it)
MAX_PER_RUN = 1000
#: the largest run count :func:`runs_to_settle` reports (beyond it: "more than")
MAX_RUNS_ESTIMATE = 1000
#: a run (or an interleaved round) this many robust z-scores from the others is left out as disturbed
OUTLIER_Z = 3.5


@dataclass(frozen=True)
class RunLevel:
    """B relative to A at the run level; ``to_dict()`` is part of compare's JSON."""

    verdict: str
    ratio: float
    ci: tuple[float, float]
    threshold: float
    confidence: float
    runs_a: int
    runs_b: int
    paired: bool
    run_medians_a: tuple[float, ...]
    run_medians_b: tuple[float, ...]
    #: run-to-run spread: std / mean of the run medians, per side
    drift_cv_a: float | None
    drift_cv_b: float | None
    runs_needed: int | None
    method: str
    #: positions (in run order) of runs left out as outliers (a disturbed run / round), per side
    left_out_a: tuple[int, ...] = ()
    left_out_b: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = list(self.ci)
        d["run_medians_a"], d["run_medians_b"] = list(self.run_medians_a), list(self.run_medians_b)
        return d


def _cv(x: np.ndarray) -> float | None:
    return float(x.std(ddof=1) / x.mean()) if x.size > 1 and x.mean() > 0 else None


def _within_run_log_medians(runs: Sequence[Sequence[float]], resamples: int, rng: np.random.Generator
                            ) -> np.ndarray:
    """(runs, resamples): log of each run's median, bootstrapped over that run's samples."""
    out = np.empty((len(runs), resamples))
    for j, run in enumerate(runs):
        x = np.asarray(run, dtype=np.float64)
        if x.size > MAX_PER_RUN:
            x = rng.choice(x, MAX_PER_RUN, replace=False)
        for start in range(0, resamples, 250):  # bounded memory: 250 x n indices at a time
            stop = min(resamples, start + 250)
            idx = rng.integers(0, x.size, size=(stop - start, x.size))
            out[j, start:stop] = np.log(np.median(x[idx], axis=1))
    return out


def outliers(x: np.ndarray, z: float = OUTLIER_Z) -> np.ndarray:
    """Indices of values more than ``z`` robust z-scores (0.6745 * |x - median| / MAD) from the median; none when
    the MAD is 0 or fewer than 4 values are given."""
    if x.size < 4:
        return np.array([], dtype=int)
    med = np.median(x)
    mad = np.median(np.abs(x - med))
    if mad <= 0:
        return np.array([], dtype=int)
    return np.flatnonzero(0.6745 * np.abs(x - med) / mad > z)


def small_sample_factor(k: int, confidence: float) -> float:
    """sqrt(k / (k - 1)) * t_{k-1} / z: how much a percentile-bootstrap interval from k units is widened."""
    from scipy import stats

    q = 0.5 + confidence / 2
    return math.sqrt(k / (k - 1)) * float(stats.t.ppf(q, k - 1)) / float(stats.norm.ppf(q))


def verdict_of(ci: tuple[float, float], threshold: float) -> str:
    lo, hi = ci
    if lo >= 1 - threshold and hi <= 1 + threshold:
        return "same"
    if lo > 1:
        return "slower"
    if hi < 1:
        return "faster"
    return "inconclusive"


def runs_to_settle(ratio: float, ci: tuple[float, float], threshold: float, runs: int) -> int | None:
    """Runs per side after which an interval as wide as this one, scaled by 1/sqrt(runs), would give a verdict
    (either within the threshold or excluding 1); None when the ratio sits on a boundary."""
    c = math.log(ratio)
    half = (math.log(ci[1]) - math.log(ci[0])) / 2
    to_same = min(math.log(1 + threshold) - c, c - math.log(max(1e-9, 1 - threshold)))
    to_differ = abs(c)
    target = max(to_same, to_differ)
    if target <= 1e-6 or half <= 0:
        return None
    need = math.ceil(runs * (half / target) ** 2)
    return max(runs + 1, min(need, MAX_RUNS_ESTIMATE))


def hierarchical(runs_a: Sequence[Sequence[float]], runs_b: Sequence[Sequence[float]], *, threshold: float,
                 confidence: float = DEFAULT_CONFIDENCE, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                 paired: bool = False) -> RunLevel:
    """Run-level comparison of B against A (each a list of runs, each run its latency samples)."""
    ka, kb = len(runs_a), len(runs_b)
    if ka < 2 or kb < 2:
        raise ValueError(f"run-level statistics need at least 2 runs per side (A {ka}, B {kb})")
    # (outliers are only looked for among 4 or more, so at least 2 runs per side always remain)
    if any(len(r) == 0 for r in (*runs_a, *runs_b)):
        raise ValueError("a run without samples")
    paired = paired and ka == kb
    med_a = np.array([np.median(np.asarray(r, dtype=np.float64)) for r in runs_a])
    med_b = np.array([np.median(np.asarray(r, dtype=np.float64)) for r in runs_b])
    # a run (a round, when paired) far from all the others is a disturbance, not the bundle: left out, and named
    if paired:
        out = outliers(np.log(med_b) - np.log(med_a))
        drop_a = drop_b = [int(i) for i in out]
    else:
        drop_a, drop_b = [int(i) for i in outliers(np.log(med_a))], [int(i) for i in outliers(np.log(med_b))]
    keep_a = [i for i in range(ka) if i not in drop_a]
    keep_b = [i for i in range(kb) if i not in drop_b]
    runs_a, runs_b = [runs_a[i] for i in keep_a], [runs_b[i] for i in keep_b]
    all_a, all_b = med_a, med_b
    med_a, med_b = med_a[keep_a], med_b[keep_b]
    ka, kb = len(runs_a), len(runs_b)
    rng = np.random.default_rng(seed)
    la = _within_run_log_medians(runs_a, resamples, rng)
    lb = _within_run_log_medians(runs_b, resamples, rng)
    point = float(np.log(med_b).mean() - np.log(med_a).mean())
    rep_a = rng.integers(0, resamples, size=(resamples, ka))
    rep_b = rng.integers(0, resamples, size=(resamples, kb))
    pick_a = rng.integers(0, ka, size=(resamples, ka))
    pick_b = pick_a if paired else rng.integers(0, kb, size=(resamples, kb))
    boot = lb[pick_b, rep_b].mean(axis=1) - la[pick_a, rep_a].mean(axis=1)
    k = ka if paired else min(ka, kb)
    factor = small_sample_factor(k, confidence)
    q_lo, q_hi = np.quantile(boot, [(1 - confidence) / 2, 0.5 + confidence / 2])
    lo, hi = point + factor * (q_lo - point), point + factor * (q_hi - point)
    ratio, ci = math.exp(point), (math.exp(lo), math.exp(hi))
    verdict = verdict_of(ci, threshold)
    need = runs_to_settle(ratio, ci, threshold, k) if verdict == "inconclusive" else None
    method = (f"run-level hierarchical bootstrap ({'paired rounds' if paired else 'independent sides'}: runs "
              f"resampled, then samples within each run; statistic: geometric mean of run medians; "
              f"{resamples} resamples, seed {seed}; small-sample widening x{factor:.2f} for {k} runs; runs more than "
              f"{OUTLIER_Z:g} robust z from the others left out)")
    return RunLevel(verdict=verdict, ratio=ratio, ci=ci, threshold=threshold, confidence=confidence, runs_a=ka,
                    runs_b=kb, paired=paired, run_medians_a=tuple(float(x) for x in all_a),
                    run_medians_b=tuple(float(x) for x in all_b), drift_cv_a=_cv(med_a), drift_cv_b=_cv(med_b),
                    runs_needed=need, method=method, left_out_a=tuple(drop_a), left_out_b=tuple(drop_b))


def pair_by_series(results_a: Sequence[Any], results_b: Sequence[Any]) -> tuple[list[Any], list[Any]] | None:
    """When A and B are rounds of one interleaved series (same series id, the same round indices), the runs in
    round order so they pair up; else None."""
    def key(r: Any) -> tuple[str, int] | None:
        s = r.series or {}
        return (str(s["id"]), int(s["index"])) if s.get("id") is not None and s.get("index") is not None else None

    ka, kb = [key(r) for r in results_a], [key(r) for r in results_b]
    if None in ka or None in kb or len(set(ka)) != len(ka) or sorted(ka) != sorted(kb):
        return None
    order_a = sorted(results_a, key=key)
    order_b = sorted(results_b, key=key)
    return order_a, order_b


__all__ = ["DEFAULT_CONFIDENCE", "RunLevel", "hierarchical", "pair_by_series", "runs_to_settle",
           "small_sample_factor", "verdict_of"]
