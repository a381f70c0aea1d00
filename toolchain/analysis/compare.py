"""``edgeify compare A B``: how B's latency relates to A's, with its uncertainty.

When both sides hold several runs (a tag on a set, ``--runs N``, ``bench --repeat``), inference is at the run
level (:mod:`edgeify.analysis.runstats`: a hierarchical bootstrap, verdict faster / slower / same / inconclusive
at ``threshold``). With one run per side it falls back to the sample-level method below, and says that its
interval cannot see run-to-run drift.

Sample level:

``ratio_p50`` = p50(B) / p50(A) with a percentile-bootstrap confidence interval (``scipy.stats.bootstrap``, both
sides resampled independently; the same resamples give the p90/p95/p99 ratios), a two-sided Mann-Whitney U test
on the raw samples (``scipy.stats.mannwhitneyu``), and a verdict: ``slower`` (B slower than A) or ``faster`` when
the test is significant at ``alpha`` AND the interval excludes 1, else ``same``. A side that names several
results (a tag on a set) pools their samples. Above :data:`MAX_SAMPLES` samples a side is subsampled (seeded)
for the bootstrap; the rank test uses every sample. Results are deterministic (fixed seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeify.errors import EngineMissingError, UsageError

from .runstats import hierarchical, pair_by_series

PERCENTILES = (50, 90, 95, 99)
#: per side, for the bootstrap (the rank test always sees every sample)
MAX_SAMPLES = 10_000
DEFAULT_ALPHA = 0.01
DEFAULT_RESAMPLES = 1000
#: fingerprint keys that change from run to run on the same machine (not a different device)
VOLATILE = ("cpu_freq_mhz", "temperatures_c", "temperatures_after_c", "memory_available_mb")
#: protocol keys that describe what happened, not what was asked
OUTCOME_KEYS = ("warmup_done", "runs_done", "stopped_by", "timed_phase_s", "seed")


@dataclass(frozen=True)
class PercentileRatio:
    percentile: str
    a_ms: float
    b_ms: float
    ratio: float
    ci: tuple[float, float]


@dataclass(frozen=True)
class Side:
    ref: str
    kind: str
    result_ids: tuple[int, ...]
    samples: int
    p50_ms: float
    bundle_digest: str
    device: str
    #: the bundle's identity (files, engine, precision, engine options); None for results older than it
    bundle_id: str | None = None
    #: result ids of runs the device-state rule flagged as disturbed
    disturbed: tuple[int, ...] = ()


@dataclass(frozen=True)
class Comparison:
    """B relative to A. ``to_dict()`` is the ``--format json`` shape."""

    a: Side
    b: Side
    ratio_p50: float
    ci: tuple[float, float]
    p_value: float | None
    verdict: str
    alpha: float
    confidence: float
    percentiles: tuple[PercentileRatio, ...]
    warnings: tuple[str, ...] = ()
    method_detail: dict[str, Any] = field(default_factory=dict)
    #: "run-level hierarchical bootstrap" or "sample-level bootstrap (one run per side)"
    method: str = ""
    threshold: float = 0.05
    runs_a: int = 1
    runs_b: int = 1
    #: runs per side that would settle an ``inconclusive`` verdict (an estimate)
    runs_needed: int | None = None
    run_level: dict[str, Any] | None = None

    @property
    def ratio(self) -> float:
        return self.ratio_p50

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = self.ratio_p50
        d["ci"] = list(self.ci)
        # pooled percentiles; their sample-level intervals only where inference is at the sample level
        d["percentiles"] = {p.percentile: {"a_ms": p.a_ms, "b_ms": p.b_ms, "ratio": p.ratio,
                                           **({} if self.run_level else {"ci": list(p.ci)})}
                            for p in self.percentiles}
        d["warnings"] = list(self.warnings)
        return d


def _need_scipy() -> Any:
    try:
        from scipy import stats
    except ImportError as exc:  # pragma: no cover - scipy is in the pinned set

        raise EngineMissingError("compare/gate need scipy", hint="pip install 'edgeify[report]'") from exc
    return stats


def sample_stats(a: Sequence[float], b: Sequence[float], *, alpha: float = DEFAULT_ALPHA,
                 resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """The numbers behind a comparison of two sample sets: ratios per percentile with CIs, p-value, verdict."""
    import numpy as np

    stats = _need_scipy()
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if xa.size < 2 or xb.size < 2:
        raise UsageError(f"compare needs raw samples on both sides (A has {xa.size}, B has {xb.size})",
                         hint="benchmark again: `edgeify bench BUNDLE` stores every sample")
    rng = np.random.default_rng(seed)
    ba = rng.choice(xa, MAX_SAMPLES, replace=False) if xa.size > MAX_SAMPLES else xa
    bb = rng.choice(xb, MAX_SAMPLES, replace=False) if xb.size > MAX_SAMPLES else xb
    q = np.array(PERCENTILES, dtype=np.float64)

    def ratio(x: Any, y: Any, axis: int = -1) -> Any:
        return np.percentile(y, q, axis=axis) / np.percentile(x, q, axis=axis)

    confidence = 1.0 - alpha
    boot = stats.bootstrap((ba, bb), ratio, vectorized=True, paired=False, method="percentile",
                           n_resamples=resamples, batch=max(1, 2_000_000 // max(ba.size, bb.size)),
                           confidence_level=confidence, rng=np.random.default_rng(seed))
    lo, hi = np.atleast_1d(boot.confidence_interval.low), np.atleast_1d(boot.confidence_interval.high)
    pa, pb = np.percentile(xa, q), np.percentile(xb, q)
    p_value = float(stats.mannwhitneyu(xb, xa, alternative="two-sided").pvalue)
    r50, ci = float(pb[0] / pa[0]), (float(lo[0]), float(hi[0]))
    if p_value < alpha and ci[0] > 1.0:
        verdict = "slower"
    elif p_value < alpha and ci[1] < 1.0:
        verdict = "faster"
    else:
        verdict = "same"
    rows = tuple(PercentileRatio(f"p{int(p)}", float(x), float(y), float(y / x), (float(low), float(high)))
                 for p, x, y, low, high in zip(q, pa, pb, lo, hi, strict=True))
    return {"ratio_p50": r50, "ci": ci, "p_value": p_value, "verdict": verdict, "alpha": alpha,
            "confidence": confidence, "percentiles": rows,
            "method": {"ci": f"percentile bootstrap, {resamples} resamples, seed {seed}",
                       "test": "Mann-Whitney U, two-sided", "bootstrap_samples": [int(ba.size), int(bb.size)],
                       "verdict": "slower/faster: p < alpha and the CI of ratio_p50 excludes 1"}}


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
    else:
        out[prefix.rstrip(".")] = d
    return out


def differences(a: Any, b: Any, *, ignore: Sequence[str] = ()) -> list[str]:
    """Keys (dotted) whose values differ between two dicts, ignoring keys that start with an ``ignore`` name."""
    fa, fb = _flat(a or {}), _flat(b or {})
    keys = sorted(set(fa) | set(fb))
    return [k for k in keys if not k.startswith(tuple(ignore)) and fa.get(k) != fb.get(k)]


def _side_warnings(ra: Sequence[Any], rb: Sequence[Any]) -> list[str]:
    warnings: list[str] = []
    first_a, first_b = ra[0], rb[0]
    for label, group in (("A", ra), ("B", rb)):
        if len({(r.device, r.identity, r.protocol.threads) for r in group}) > 1:
            warnings.append(f"{label} pools results of different devices, bundles or thread counts")
    if first_a.device != first_b.device:
        warnings.append(f"different devices: A ran on {first_a.device}, B on {first_b.device}")
    diff = differences(first_a.fingerprint, first_b.fingerprint, ignore=VOLATILE)
    if diff:
        shown = ", ".join(diff[:4]) + (f" (+{len(diff) - 4} more)" if len(diff) > 4 else "")
        warnings.append(f"device fingerprints differ: {shown}")
    ta, tb = first_a.protocol.threads, first_b.protocol.threads
    if ta != tb:
        warnings.append(f"different threads: A {ta}, B {tb}")
    pa = {k: v for k, v in asdict(first_a.protocol).items() if k != "threads"}
    pb = {k: v for k, v in asdict(first_b.protocol).items() if k != "threads"}
    pdiff = differences(pa, pb, ignore=OUTCOME_KEYS)
    if pdiff:
        warnings.append("benchmark protocols differ: " + ", ".join(
            f"{k} {_flat(pa).get(k)!r} vs {_flat(pb).get(k)!r}" for k in pdiff[:4]))
    return warnings


def _disturbed_warnings(label: str, results: Sequence[Any]) -> list[str]:
    bad = [r for r in results if r.disturbed]
    if not bad:
        return []
    kinds = sorted({k for r in bad for k in (r.device_state or {}).get("disturbed_kinds") or ()})
    return [f"{label}: {len(bad)} of {len(results)} run(s) disturbed (#{', #'.join(str(r.result_id) for r in bad)}"
            f": {', '.join(kinds) or 'see results show'}; the rule: `edgeify results show ID`)"]


def _pooled(a: Sequence[float], b: Sequence[float], alpha: float) -> dict[str, Any]:
    """Pooled percentiles of both sides (no sample-level inference: a run-level comparison's table)."""
    import numpy as np

    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    q = np.array(PERCENTILES, dtype=np.float64)
    pa, pb = np.percentile(xa, q), np.percentile(xb, q)
    rows = tuple(PercentileRatio(f"p{int(p)}", float(x), float(y), float(y / x), (float("nan"), float("nan")))
                 for p, x, y in zip(q, pa, pb, strict=True))
    return {"ratio_p50": float(pb[0] / pa[0]), "ci": (float("nan"), float("nan")), "p_value": None,
            "verdict": "inconclusive", "alpha": alpha, "confidence": 1 - alpha, "percentiles": rows,
            "method": {"percentiles": "pooled samples of every run, for the table; inference at the run level"}}


def compare(sel_a: Any, sel_b: Any, *, alpha: float | None = None, resamples: int = DEFAULT_RESAMPLES,
            seed: int = 0, threshold: float = 0.05, run_level: bool | None = None) -> Comparison:
    """Compare two :class:`~edgeify.store.select.Selection` (results with their raw samples). With two or more
    results (runs) per side, or ``run_level=True``, at the run level (``alpha`` default 0.05); else sample level
    (``alpha`` default 0.01)."""

    ra, rb = list(sel_a.results), list(sel_b.results)
    use_runs = len(ra) >= 2 and len(rb) >= 2 if run_level is None else run_level
    if use_runs and (len(ra) < 2 or len(rb) < 2):
        raise UsageError(f"run-level statistics need at least 2 runs per side (A has {len(ra)}, B {len(rb)})",
                         hint="benchmark each bundle several times (`edgeify bench A B --repeat 5`), or give "
                              "`compare DIR_A DIR_B --runs 5` to run them now")
    if alpha is None:
        alpha = 0.05 if use_runs else DEFAULT_ALPHA
    sa = [s for r in ra for s in r.samples_ms]
    sb = [s for r in rb for s in r.samples_ms]
    # run level: the pooled percentiles for the table only (the inference is the run-level one below)
    numbers = _pooled(sa, sb, alpha) if use_runs else sample_stats(sa, sb, alpha=alpha, resamples=resamples,
                                                                   seed=seed)
    pct = numbers.pop("percentiles")
    numbers["method_detail"] = numbers.pop("method")
    warnings = _side_warnings(ra, rb) + _disturbed_warnings("A", ra) + _disturbed_warnings("B", rb)
    extra: dict[str, Any] = {"threshold": threshold, "runs_a": len(ra), "runs_b": len(rb)}
    if use_runs:
        pairs = pair_by_series(ra, rb)
        oa, ob = pairs if pairs else (ra, rb)
        rl = hierarchical([r.samples_ms for r in oa], [r.samples_ms for r in ob], threshold=threshold,
                          confidence=1 - alpha, seed=seed, paired=pairs is not None)
        numbers.update(ratio_p50=rl.ratio, ci=rl.ci, verdict=rl.verdict, p_value=None, confidence=1 - alpha)
        extra.update(method="run-level hierarchical bootstrap", runs_needed=rl.runs_needed, run_level=rl.to_dict())
        for label, out, sel in (("A", rl.left_out_a, oa), ("B", rl.left_out_b, ob)):
            if out:
                warnings.append(f"{label}: run(s) #{', #'.join(str(sel[i].result_id) for i in out)} left out: "
                                "far from the other runs (a disturbance, not the bundle)")
        if rl.verdict == "inconclusive" and rl.runs_needed:
            warnings.append(f"inconclusive at ±{threshold:.0%}: about {rl.runs_needed} runs per side would settle "
                            "it (the interval narrows as 1/sqrt(runs))")
    else:
        extra["method"] = "sample-level bootstrap + Mann-Whitney (one run per side)"
        warnings.append("one run per side: the interval sees only within-run noise, not run-to-run drift; "
                        "use --runs N (or `bench --repeat N`) for a verdict a release can rest on")

    def side(sel: Any, results: list[Any], samples: list[float], p50: float) -> Side:
        return Side(ref=str(sel.ref), kind=sel.kind, result_ids=tuple(int(r.result_id) for r in results),
                    samples=len(samples), p50_ms=p50, bundle_digest=results[0].bundle_digest,
                    device=results[0].device, bundle_id=results[0].bundle_id,
                    disturbed=tuple(int(r.result_id) for r in results if r.disturbed))

    return Comparison(a=side(sel_a, ra, sa, pct[0].a_ms), b=side(sel_b, rb, sb, pct[0].b_ms), percentiles=pct,
                      warnings=tuple(warnings), **numbers, **extra)


__all__ = ["DEFAULT_ALPHA", "Comparison", "PercentileRatio", "Side", "compare", "differences", "sample_stats"]
