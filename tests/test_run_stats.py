"""Run-level statistics (edgeify.analysis.runstats) on synthetic runs whose truth is known: run-to-run drift that a
sample-level interval cannot see, a real 1.10x slowdown, interleaved pairs, the verdict rules and reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
from edgeify.analysis.compare import compare, sample_stats
from edgeify.analysis.runstats import hierarchical, pair_by_series, runs_to_settle, verdict_of
from edgeify.store.select import Selection
from edgeify_runtime.result import BenchResult, Protocol


def make_runs(rng: np.random.Generator, k: int, *, scale: float = 1.0, drift: float = 0.04, noise: float = 0.02,
              n: int = 150, round_drift: np.ndarray | None = None) -> list[np.ndarray]:
    """k runs: each run's level drifts (lognormal, sd ``drift``), samples scatter around it (sd ``noise``)."""
    out = []
    for j in range(k):
        level = scale * np.exp(rng.normal(0, drift)) * (1.0 if round_drift is None else round_drift[j])
        out.append(level * np.exp(rng.normal(0, noise, n)))
    return out


def test_aa_false_alarms_stay_low_where_the_sample_level_interval_cries_wolf() -> None:
    rng = np.random.default_rng(1)
    sims, run_alarms, sample_alarms = 60, 0, 0
    for s in range(sims):
        a, b = make_runs(rng, 5), make_runs(rng, 5)
        rl = hierarchical(a, b, threshold=0.05, resamples=400, seed=s)
        run_alarms += rl.verdict == "slower" and rl.ratio > 1.05  # what gate calls a regression
        ss = sample_stats(np.concatenate(a[:1]), np.concatenate(b[:1]), resamples=200, seed=s)
        sample_alarms += ss["verdict"] != "same"  # one run each, sample level: the old behaviour
    assert run_alarms / sims <= 0.05
    assert sample_alarms / sims >= 0.5  # drift of 4% between runs is "significant" to the sample-level test


def test_a_real_ten_percent_slowdown_is_detected() -> None:
    rng = np.random.default_rng(2)
    sims, hits = 40, 0
    for s in range(sims):
        rl = hierarchical(make_runs(rng, 6), make_runs(rng, 6, scale=1.10), threshold=0.05, resamples=400, seed=s)
        hits += rl.verdict == "slower" and rl.ratio > 1.05
    assert hits / sims >= 0.8


def test_pairing_interleaved_rounds_cancels_shared_drift() -> None:
    rng = np.random.default_rng(3)
    rounds = np.exp(rng.normal(0, 0.10, 6))  # each round's machine state hits A and B alike
    a = make_runs(rng, 6, drift=0.005, round_drift=rounds)
    b = make_runs(rng, 6, drift=0.005, round_drift=rounds, scale=1.03)
    paired = hierarchical(a, b, threshold=0.05, resamples=500, paired=True)
    unpaired = hierarchical(a, b, threshold=0.05, resamples=500, paired=False)
    assert paired.paired and not unpaired.paired
    assert paired.ci[1] - paired.ci[0] < 0.5 * (unpaired.ci[1] - unpaired.ci[0])
    assert paired.ci[0] <= 1.03 <= paired.ci[1]


def test_same_input_same_seed_same_numbers_and_verdict_rules() -> None:
    rng = np.random.default_rng(4)
    a, b = make_runs(rng, 4), make_runs(rng, 4)
    one, two = hierarchical(a, b, threshold=0.05, seed=7), hierarchical(a, b, threshold=0.05, seed=7)
    assert one == two
    assert verdict_of((0.97, 1.03), 0.05) == "same"
    assert verdict_of((1.06, 1.20), 0.05) == "slower" and verdict_of((0.80, 0.94), 0.05) == "faster"
    assert verdict_of((0.98, 1.09), 0.05) == "inconclusive"
    need = runs_to_settle(1.02, (0.96, 1.08), 0.05, 3)
    assert need is not None and need > 3
    assert runs_to_settle(1.02, (0.99, 1.05), 0.05, 3) < need  # a narrower interval needs fewer runs
    with pytest.raises(ValueError):
        hierarchical(a[:1], b, threshold=0.05)


def _result(i: int, samples: np.ndarray, bundle: str, index: int) -> BenchResult:
    return BenchResult(bundle_digest="ab" * 32, bundle_id=bundle * 64, result_id=i, samples_ms=tuple(samples),
                       protocol=Protocol(threads=1), series={"id": "s-1", "index": index, "count": 4})


def test_compare_json_has_the_run_level_fields_and_pairs_a_series() -> None:
    rng = np.random.default_rng(5)
    a, b = make_runs(rng, 4), make_runs(rng, 4, scale=1.5)
    ra = [_result(2 * k + 1, x, "a", k) for k, x in enumerate(a)]
    rb = [_result(2 * k + 2, x, "b", k) for k, x in enumerate(b)]
    assert pair_by_series(ra, rb) is not None
    c = compare(Selection("A", "tag", tuple(ra)), Selection("B", "tag", tuple(rb)), threshold=0.05)
    d = c.to_dict()
    assert {"verdict", "ratio", "ci", "threshold", "runs_a", "runs_b", "method"} <= set(d)
    assert d["verdict"] == "slower" and d["runs_a"] == d["runs_b"] == 4 and d["threshold"] == 0.05
    assert d["ci"][0] > 1.3 and d["method"].startswith("run-level") and d["run_level"]["paired"] is True
    assert "ci" not in d["percentiles"]["p50"]  # no sample-level interval beside a run-level verdict
    single = compare(Selection("A", "id", tuple(ra[:1])), Selection("B", "id", tuple(rb[:1])))
    assert single.method.startswith("sample-level") and any("one run per side" in w for w in single.warnings)


def test_a_run_slowed_by_a_burst_of_load_is_left_out_and_named() -> None:
    rng = np.random.default_rng(6)
    a, b = make_runs(rng, 8, drift=0.01), make_runs(rng, 8, drift=0.01)
    b[3] = b[3] * 2.5  # one whole run ran under a burst of other load
    rl = hierarchical(a, b, threshold=0.05, resamples=500, paired=True)
    assert rl.left_out_b == (3,) and rl.left_out_a == (3,)  # paired: the whole round goes
    assert rl.verdict == "same" and len(rl.run_medians_b) == 8  # every run's median is still reported
    kept = hierarchical(a, b, threshold=0.05, resamples=500, paired=False)
    assert kept.left_out_b == (3,) and kept.left_out_a == ()
