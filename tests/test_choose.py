"""optimize's choice is reproducible: candidates within each other's noise are tied and go to the simplest; the
"why" names the runner-up with the difference and its interval for every objective; the exit-10/13 list holds
only measured candidates, with formatted numbers."""

from __future__ import annotations

from edgeify.optimize.choose import choose, closest_text, why
from edgeify.optimize.records import Accuracy, Budgets, Candidate, Recipe, Settings


def cand(p50: float | None, *, threads: int | None = None, options: dict | None = None, recipe: str = "default",
         size: int = 1000, drop: float = 0.1, parity: bool = True) -> Candidate:
    return Candidate(engine="onnxruntime", precision="int8", recipe=Recipe(name=recipe),
                     settings=Settings(threads=threads, options=options or {}),
                     latency_ms=None if p50 is None else {"p50": p50}, accuracy_drop=drop, size_bytes=size,
                     accuracy=Accuracy(measure="labels", drop=drop, parity_passed=parity),
                     status="measured" if p50 is not None else "parity-failed")


def test_ties_go_to_the_simpler_candidate_whichever_run_measured_faster() -> None:
    b = Budgets()
    for tuned_ms, default_ms in ((0.030, 0.031), (0.031, 0.030)):  # two optimize runs: noise swaps the order
        cands = [cand(tuned_ms, threads=2, options={"graph_optimization_level": "basic"}), cand(default_ms)]
        assert choose(cands, b, "latency") == 1
        text = why(cands[1], cands, b, "latency")
        assert "runner-up" in text and "tied" in text and "interval [" in text
    apart = [cand(0.020, threads=2), cand(0.030)]
    assert choose(apart, b, "latency") == 0 and "apart" in why(apart[0], apart, b, "latency")


def test_every_objective_names_its_runner_up() -> None:
    b = Budgets()
    cands = [cand(0.03, size=1000), cand(0.02, size=5000, drop=1.0)]
    assert choose(cands, b, "size") == 0
    assert "runner-up" in why(cands[0], cands, b, "size") and "bytes" in why(cands[0], cands, b, "size")
    assert choose(cands, b, "accuracy") == 0
    assert "difference -0.90 pt" in why(cands[1], cands, b, "accuracy") or "runner-up" in why(
        cands[0], cands, b, "accuracy")
    assert "no runner-up" in why(cands[0], cands[:1], b, "latency")


def test_closest_lists_measured_candidates_with_formatted_numbers() -> None:
    b = Budgets(max_latency_ms=0.01)
    cands = [cand(None, parity=False, drop=100.0), cand(0.0312345678), cand(0.05)]
    text = closest_text(cands, b)
    assert "#0" not in text and "#1" in text and "0.031 ms" in text and "0.0312345" not in text
    assert "drop 0.10 pt" in text


def test_a_parity_failure_names_output_metric_value_and_tolerance() -> None:
    from edgeify.errors import ParityError
    from edgeify.optimize.choose import parity_reason
    from edgeify.steps.records import OutputCheck, ValidationReport

    rows = (OutputCheck(output="logits", inputs="random", shape=(1, 10), gated=True, passed=False,
                        limit="max|Δ| <= 1e-4 + 1e-4*max|ref|", bound=2e-4, max_abs=0.31),
            OutputCheck(output="probs", inputs="real", shape=(1, 10), gated=True, passed=False,
                        limit="cosine >= 0.98", cosine=0.9712),
            OutputCheck(output="aux", inputs="real", shape=(1,), gated=True, passed=True, max_abs=0.0))
    err = ParityError("the built model differs from the source model (2 mismatch(es)):\n...")
    err.report = ValidationReport(tolerance=None, outputs=rows, random_samples=8, real_samples=8,  # type: ignore
                                  passed=False)
    text = parity_reason(err)
    assert "mismatch(es)" not in text and "2 output check(s)" in text
    assert "logits (random): max|Δ| 0.31 > 0.0002 [tolerance max|Δ| <= 1e-4" in text
    assert "probs (real): cosine 0.97120 [tolerance cosine >= 0.98]" in text and "aux" not in text
    assert parity_reason(ParityError("plain message\nmore")) == "plain message"
