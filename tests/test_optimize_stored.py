"""What an optimize run writes into its stored benchmarks (optimize.stored) and how the report's decision block
reads it back: screen vs full per result id, the chosen candidate, the failed ones with their reasons, the ladder."""

from __future__ import annotations

from edgeify.analysis.report_data import Run
from edgeify.analysis.report_html import _decision
from edgeify.optimize.records import Accuracy, Budgets, Candidate, Chosen, OptimizeResult, Recipe, Rung, Settings
from edgeify.optimize.stored import annotations


def _result() -> OptimizeResult:
    lat = {"p50": 1.0, "p95": 1.2}
    cands = (
        Candidate(engine="openvino", precision="int8", settings=Settings(threads=2), screen_latency_ms=lat,
                  latency_ms={"p50": 0.9, "p95": 1.0}, accuracy_drop=0.1, size_bytes=10, status="measured",
                  meets_budget=True, result_ids=(11, 14)),
        Candidate(engine="onnxruntime", precision="fp32", settings=Settings(threads=2), screen_latency_ms=lat,
                  accuracy_drop=0.0, size_bytes=40, status="screened", meets_budget=True, result_ids=(12,)),
        Candidate(engine="onnxruntime", precision="int8", status="parity-failed", accuracy_drop=40.0,
                  reason="parity failed on 1 output check(s): y (real): cosine 0.91 [tolerance 0.99]"),
        Candidate(engine="openvino", precision="fp32", settings=Settings(threads=1), latency_ms=lat,
                  accuracy_drop=0.0, size_bytes=40, status="measured", meets_budget=False, result_ids=(13,)),
    )
    rung = Rung(rung="int8", engine="onnxruntime", precision="int8", recipe=Recipe(), accuracy_drop=40.0,
                reason="cosine 0.91 < 0.99")
    chosen = Chosen(bundle="/tmp/best", engine="openvino", precision="int8", recipe=Recipe(), settings={"threads": 2},
                    latency_ms={"p50": 0.9}, accuracy_drop=0.1, size_bytes=10, why="latency objective: best of 2",
                    index=0)
    return OptimizeResult(run_id="opt-x", objective="latency", budgets=Budgets(max_accuracy_drop=1.0), target="x86",
                          accuracy_measure="labels", chosen=chosen, candidates=cands, pareto=(0, 1), ladder=(rung,))


def test_annotations_mark_protocol_chosen_and_carry_the_decision() -> None:
    res = _result()
    ann = annotations(res)
    assert sorted(ann) == [11, 12, 13, 14]  # the parity-failed candidate was never benchmarked
    proto = {rid: a["candidate"]["protocol"] for rid, a in ann.items()}
    assert proto == {11: "screen", 14: "full", 12: "screen", 13: "full"}
    assert [rid for rid, a in ann.items() if a["candidate"]["chosen"]] == [11, 14]
    assert ann[14]["candidate"]["chosen_bundle"] == "/tmp/best" and ann[12]["candidate"]["chosen_bundle"] is None
    assert ann[12]["candidate"]["pareto"] and not ann[13]["candidate"]["pareto"]
    assert [rid for rid, a in ann.items() if "optimize_run" in a] == [14]  # on the chosen one's full run
    decision = ann[14]["optimize_run"]
    failed = {f["label"]: f for f in decision["failed"]}
    assert "onnxruntime int8 (default, defaults)" in failed and "cosine 0.91" in \
        failed["onnxruntime int8 (default, defaults)"]["reason"]
    assert "openvino fp32 (default, threads=1)" in failed  # measured, but over a budget
    html = _decision(Run(run_id="opt-x", candidates=(), pareto=(), decision=decision))
    assert "latency objective: best of 2" in html and "quantization ladder" in html and "cosine 0.91" in html
    assert "accuracy drop ≤ 1.0 pt" in html and "p50 ≤" not in html  # no latency budget given: none shown


def test_a_tie_goes_to_the_engines_default_option_value() -> None:
    """optimize_repeat.py saw run 2 of 3 pick performance_hint=THROUGHPUT over LATENCY (tied within noise, both
    one option set): LATENCY is OpenVINO's own default (the first value of its tuning axis), so it is simpler."""
    from edgeify.optimize.choose import choose, simplicity

    def cand(hint: str, p50: float) -> Candidate:
        return Candidate(engine="openvino", precision="int8", settings=Settings(threads=2,
                         options={"performance_hint": hint}), latency_ms={"p50": p50}, accuracy_drop=0.0,
                         accuracy=Accuracy(measure="labels", drop=0.0), size_bytes=10, status="measured")

    lat, thr = cand("LATENCY", 1.00), cand("THROUGHPUT", 0.97)
    assert simplicity(lat) < simplicity(thr)
    assert choose([thr, lat], Budgets(), "latency") == 1  # tied (3%): the default hint
    assert choose([cand("THROUGHPUT", 0.80), lat], Budgets(), "latency") == 0  # apart: the faster one
