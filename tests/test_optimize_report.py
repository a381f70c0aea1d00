"""An optimize run's decision survives the run: every stored benchmark of the run carries its candidate (accuracy
drop, screen / full protocol, chosen or not), `edgeify results` marks the chosen one and each protocol, and
`edgeify report` draws accuracy drop vs latency with the Pareto front and the chosen point (checked in the real
headless Chromium), with the "why", and the failed candidates."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _kit import run_cli
from edgeify.results import open_store
from test_report import external_references, open_in_chromium

pytestmark = pytest.mark.browser


def test_optimize_run_is_readable_afterwards_results_marks_and_report_front(digits: dict[str, Path], tmp_path: Path,
                                                                             results_db: Path) -> None:
    out = tmp_path / "best"
    env = {"EDGEIFY_RESULTS_DB": str(results_db)}
    proc = run_cli("optimize", str(digits["model"]), "--target", "x86-avx512", "--calib", str(digits["calib"]),
                   "--eval", str(digits["eval"]), "--max-accuracy-drop", "1.0", "--engine", "onnxruntime",
                   "--precision", "fp32", "--precision", "int8", "--max-time", "10m", "-o", str(out),
                   "--format", "json", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    run_id, chosen = data["run_id"], data["chosen"]

    with open_store() as store:
        stored = store.query(run_id=run_id, limit=None)
    cands = [r.extra.get("candidate") for r in stored]
    assert stored and all(isinstance(c, dict) for c in cands)  # every benchmark of the run says what it was
    assert all(c["accuracy_drop"] is not None and c["accuracy_measure"] == "labels" for c in cands)
    ran = bool(data.get("confirm") and not data["confirm"].get("skipped"))  # optimize.confirm's re-measure rounds
    assert {c["protocol"] for c in cands} == {"screen", "full"} | ({"confirm"} if ran else set())
    marked = [c for c in cands if c["chosen"]]
    assert marked and {c["index"] for c in marked} == {chosen["index"]}
    assert any(c["protocol"] == "full" for c in marked) and marked[0]["chosen_bundle"] == str(out)
    assert all(c["accuracy_drop"] == data["candidates"][c["index"]]["accuracy_drop"] for c in cands)
    decisions = [r.extra["optimize_run"] for r in stored if "optimize_run" in r.extra]
    assert len(decisions) == 1 and decisions[0]["why"] == chosen["why"] and decisions[0]["chosen"]

    listed = run_cli("results", "--run", run_id, "--limit", "100", env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("★ chosen") >= 1 and " screen" in listed.stdout and " full" in listed.stdout
    shown = run_cli("results", "show", str(min(r.result_id for r in stored)), env=env)
    assert f"optimize run {run_id}: candidate #c" in shown.stdout

    page_path = tmp_path / "report.html"
    made = run_cli("report", "-o", str(page_path), "--run", run_id, "--format", "json", env=env)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["runs"] == 1
    page = page_path.read_text(encoding="utf-8")
    assert external_references(page) == []
    assert "carry no accuracy figures" not in page  # the accuracy-vs-latency plot, not the old bar chart
    run_div = re.search(r'id="run-\d+".*?</script>', page, re.S)
    assert run_div is not None
    figure = run_div.group(0)
    assert "accuracy drop (points)" in figure and "Pareto front" in figure and "chosen: " in figure
    assert '"symbol":"star"' in figure.replace(" ", "")
    label = next(c["label"] for c in marked)
    assert f"chosen: {label}" in figure  # the chosen point is the candidate the run chose
    assert "onnxruntime int8" in figure and "protocol full" in figure  # hover: engine, precision, protocol
    assert "why</b>" in page and "runner-up" in page  # the why under the plot

    dom, console = open_in_chromium(page_path, tmp_path / "profile")
    assert console == [], console
    assert dom.count('class="plotly-graph-div') >= 2 and "Pareto front" in dom  # legend drawn by plotly.js
    shot = tmp_path / "report.png"
    open_in_chromium(page_path, tmp_path / "profile2", screenshot=shot)
    assert shot.stat().st_size > 20_000
    print(f"report screenshot: {shot}")
