"""`edgeify bench --sustained`: one long timed run, the first vs the last seconds and p50 over time, in the result
and in its stored copy; the slowdown rule and its cause from the recorded device state."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _kit import run_cli
from edgeify.analysis.sustained import summarize
from edgeify.results import open_store


@pytest.mark.slow  # a sustained bench of 9 s (the slowdown rule stays quick)
def test_bench_sustained_reports_first_and_last_windows_and_stores_them(tiny_onnx: Path, tmp_path: Path,
                                                                        results_db: Path) -> None:
    bundle = tmp_path / "b"
    built = run_cli("build", str(tiny_onnx), "--target", "x86", "-p", "fp32", "--no-latency", "-o", str(bundle))
    assert built.returncode == 0, built.stderr
    res = run_cli("bench", str(bundle), "--sustained", "3s", "--format", "json",
                  env={"EDGEIFY_RESULTS_DB": str(results_db)})
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    s = data["extra"]["sustained"]
    assert data["protocol"]["min_duration_s"] == 3.0 and s["duration_s"] >= 3.0
    assert abs(s["edge_s"] - s["duration_s"] / 4) <= 0.001  # a short run: a quarter of it each side (both rounded)
    assert s["first"]["n"] > 0 and s["last"]["n"] > 0 and s["last_over_first_p50"] > 0
    assert len(s["timeline"]) == 12 and sum(t["n"] for t in s["timeline"]) == data["protocol"]["runs_done"]
    with open_store() as store:
        assert store.get(data["result_id"]).extra["sustained"] == s
    text = run_cli("bench", str(bundle), "--sustained", "1", "--no-store")
    assert text.returncode == 0 and "sustained 1.0 s: first" in text.stdout and "p50 over time" in text.stdout
    bad = run_cli("bench", str(bundle), "--sustained", "soon")
    assert bad.returncode == 2 and "--sustained" in bad.stderr


def test_slowdown_rule_and_its_cause() -> None:
    fast, slow = np.full(20_000, 1.0), np.full(10_000, 1.5)  # 20 s at 1 ms, then 15 s at 1.5 ms
    samples = np.concatenate([fast, slow])
    calm = summarize(samples, None)
    assert calm["duration_s"] == 35.0 and calm["first"]["p50_ms"] == 1.0 and calm["last"]["p50_ms"] == 1.5
    assert calm["slowdown"] and calm["cause"].startswith("not thermal")
    hot = summarize(samples, None, {"cpu_freq_mhz": {"start": 2400, "end": 1500, "max": 2400},
                                    "temperature_c": {"start": 55.0, "end": 81.0}})
    assert hot["cause"].startswith("thermal") and "2400 -> 1500" in hot["cause"]
    steady = summarize(np.full(30_000, 1.0), 30.5)
    assert not steady["slowdown"] and steady["cause"] == "no slowdown" and steady["duration_s"] == 30.5
