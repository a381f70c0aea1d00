"""optimize's confirmation (optimize.confirm): before choosing, the finalists are re-measured in interleaved rounds
(each run its own agent process) and compared at the run level; candidates within noise are tied, the simplest
wins. Real builds, real engine, the real benchmark agent; no timing asserts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from _kit import make_gemm_onnx
from edgeify.optimize import confirm as confirm_mod
from edgeify.optimize.measure import MeasureProtocol
from edgeify.optimize.records import Accuracy, Budgets, Candidate, Settings

QUICK = MeasureProtocol(warmup=3, runs=30, min_duration_s=0.1, max_duration_s=10.0)


def _cand(bundle: str, settings: Settings, size: int) -> Candidate:
    return Candidate(engine="onnxruntime", precision="fp32", settings=settings, latency_ms={"p50": 1.0, "p95": 1.1},
                     accuracy=Accuracy(measure="labels", drop=0.0), accuracy_drop=0.0, size_bytes=size,
                     status="measured", bundle=bundle)


@pytest.fixture(scope="module")
def fp32_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small ONNX Runtime fp32 bundle (a Gemm): the equal-speed test needs a real bundle, not a whole search."""
    import edgeify

    tmp = tmp_path_factory.mktemp("confirm-bundle")
    out = tmp / "fp32"
    edgeify.build(str(make_gemm_onnx(tmp / "tiny.onnx")), target="x86-avx512", out=out, engine="onnxruntime",
                  measure_latency=False)
    return out


@pytest.fixture(scope="module")
def optimized(digits: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    """One real optimize on digits (onnxruntime fp32), every fully measured candidate a finalist, 2 rounds."""
    import edgeify

    tmp = tmp_path_factory.mktemp("confirm")
    db = tmp / "results.sqlite"
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGEIFY_RESULTS_DB", str(db))
    mp.setattr(confirm_mod, "FINALIST_BAND", 100.0)  # whatever their speed: the rounds must run
    try:
        res = edgeify.optimize(digits["model"], target="x86-avx512", calib=digits["calib"], eval=digits["eval"],
                               max_accuracy_drop=1.0, engines=["onnxruntime"], precisions=["fp32"],
                               out=tmp / "best", max_time_s=600, confirm_rounds=2, progress=lambda m: None)
    finally:
        mp.undo()
    return res.to_json(), tmp / "best", db


@pytest.mark.slow  # a whole optimize search plus its confirmation rounds (~35 s)
def test_optimize_re_measures_the_finalists_and_records_it(optimized: tuple[dict, Path, Path],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    data, _, db = optimized
    rec = data["confirm"]
    assert rec is not None and "skipped" not in rec, rec
    fin = rec["finalists"]
    assert 2 <= len(fin) <= confirm_mod.MAX_FINALISTS and rec["rounds_done"] == 2
    assert all(len(f["run_p50_ms"]) == 2 and len(f["result_ids"]) == 2 for f in fin)
    assert len(rec["order"]) == 2 * len(fin) and rec["order"][:len(fin)] == rec["order"][len(fin):][::-1]
    assert rec["chosen"] == data["chosen"]["index"] and rec["chosen"] in rec["tied"]
    assert len(rec["comparisons"]) == len(fin) - 1
    for c in rec["comparisons"]:
        assert c["ci"][0] <= c["ratio"] <= c["ci"][1] and c["runs_a"] == c["runs_b"] == 2
        assert c["tied"] == (c["b"] in rec["tied"]) and (c["tied"] or c["verdict"] == "slower")
    assert "re-measured" in data["chosen"]["why"] and "2 interleaved round(s)" in data["chosen"]["why"]
    # every confirmation run is stored under the optimize run, with its series
    from edgeify.results import open_store

    monkeypatch.setenv("EDGEIFY_RESULTS_DB", str(db))
    with open_store() as st:
        stored = st.query(run_id=data["run_id"], limit=1000)
    ids = {r.result_id: r for r in stored}
    for f in fin:
        assert all(ids[i].series and ids[i].series["id"] == rec["series"] for i in f["result_ids"])


def test_two_candidates_of_equal_speed_are_tied_and_the_simpler_wins(fp32_bundle: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The same bundle and settings, once with an option set to the engine's default (a no-op): equal speed.
    The second is made 'less simple' by its recorded size only, so the tie must go to the first."""
    monkeypatch.setenv("EDGEIFY_RESULTS_DB", str(tmp_path / "results.sqlite"))
    best = fp32_bundle
    plain = _cand(str(best), Settings(threads=1), 100)
    noop = _cand(str(best), Settings(threads=1, options={"graph_optimization_level": "all"}), 101)
    rec = confirm_mod.confirm([noop, plain], Budgets(max_accuracy_drop=1.0), rounds=4,
                              runtime_of=lambda e: "onnxruntime", proto=QUICK, device="local", run_id="opt-test",
                              deadline=time.monotonic() + 300, say=lambda m: None)
    assert rec is not None and rec["rounds_done"] == 4, rec
    assert sorted(rec["tied"]) == [0, 1] and rec["chosen"] == 1  # tied; the simpler (smaller) one
    (cmp,) = rec["comparisons"]
    assert cmp["tied"] and cmp["verdict"] in ("same", "inconclusive")
    text = confirm_mod.why_text(rec)
    assert "runner-up" in text and "tied" in text and "4 interleaved round(s)" in text


def test_confirmation_respects_max_time_and_off() -> None:
    a = _cand("/nonexistent/a", Settings(threads=1), 1)
    b = _cand("/nonexistent/b", Settings(threads=2), 1)
    kw = dict(runtime_of=lambda e: "onnxruntime", proto=QUICK, device="local", run_id="x", say=lambda m: None)
    late = confirm_mod.confirm([a, b], Budgets(), rounds=3, deadline=time.monotonic() - 1, **kw)
    assert late is not None and "--max-time" in late["skipped"] and "chosen" not in late
    assert "not re-measured" in confirm_mod.why_text(late, skipped=True) and confirm_mod.why_text(late) == ""
    assert confirm_mod.confirm([a, b], Budgets(), rounds=0, deadline=time.monotonic() + 60, **kw) is None
    far = b.model_copy(update={"latency_ms": {"p50": 2.0}})  # beyond the band: one finalist, nothing to confirm
    one = confirm_mod.confirm([a, far], Budgets(), rounds=3, deadline=time.monotonic() + 60, **kw)
    assert one is not None and "nothing to confirm" in one["skipped"] and [f["index"] for f in one["finalists"]] == [0]


def test_the_best_artifacts_simplest_settings_are_a_finalist_even_if_only_screened() -> None:
    """One slow screening run must not keep the engine's default settings out of the final (optimize_repeat: the
    default performance hint screened 1.6x slower, re-measured equal)."""
    best = _cand("/b/x", Settings(threads=2, options={"execution_mode": "parallel"}), 1)
    slow_screen = _cand("/b/x", Settings(threads=2), 1).model_copy(
        update={"latency_ms": None, "screen_latency_ms": {"p50": 1.6}, "status": "screened"})
    other = _cand("/b/y", Settings(threads=2), 1).model_copy(update={"latency_ms": {"p50": 1.05}})
    assert confirm_mod.finalists([best, slow_screen, other], Budgets()) == [0, 2, 1]
    assert confirm_mod.finalists([best, other], Budgets()) == [0, 1]
