"""``edgeify optimize`` end to end with real builds, real engines and the real benchmark agent (local device).

The outlier model (examples/outlier/make_model.py) is a digits CNN whose conv2 output has two 1000x channels:
plain int8 fails its gate there, the ladder's int8-mixed keeps that activation in float and holds the budget.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _kit import REPO, run_cli


@pytest.fixture(scope="module")
def outlier(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    spec = importlib.util.spec_from_file_location("edgeify_example_outlier", REPO / "examples/outlier/make_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make(tmp_path_factory.mktemp("outlier"))


def _stored(run_id: str) -> list:
    from edgeify.results import open_store

    with open_store() as st:
        return st.query(run_id=run_id, limit=1000)


def _dominates(a: dict, b: dict) -> bool:
    ka = (a["latency_ms"]["p50"], a["accuracy_drop"], a["size_bytes"])
    kb = (b["latency_ms"]["p50"], b["accuracy_drop"], b["size_bytes"])
    return all(x <= y for x, y in zip(ka, kb, strict=True)) and ka != kb


@pytest.mark.slow  # a whole optimize search (the other optimize tests here stay quick)
def test_digits_optimize_meets_budget_json_store_pareto(digits: dict[str, Path], tmp_path: Path,
                                                        results_db: Path) -> None:
    out = tmp_path / "best"
    proc = run_cli("optimize", str(digits["model"]), "--target", "x86-avx512", "--calib", str(digits["calib"]),
                   "--eval", str(digits["eval"]), "--max-accuracy-drop", "0.3", "--engine", "onnxruntime",
                   "--precision", "fp32", "--precision", "int8", "--max-time", "10m", "-o", str(out),
                   "--format", "json", env={"EDGEIFY_RESULTS_DB": str(results_db)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    for key in ("run_id", "objective", "budgets", "chosen", "candidates", "pareto", "accuracy_measure"):
        assert key in data
    assert data["accuracy_measure"] == "labels" and data["objective"] == "latency"
    chosen = data["chosen"]
    for key in ("bundle", "engine", "precision", "settings", "latency_ms", "accuracy_drop", "size_bytes", "ladder"):
        assert key in chosen
    assert chosen["accuracy_drop"] <= 0.3 and chosen["latency_ms"]["p50"] > 0 and "p95" in chosen["latency_ms"]
    cands = data["candidates"]
    for c in cands:
        assert {"engine", "precision", "recipe", "settings", "latency_ms", "accuracy_drop", "size_bytes",
                "quantized_ops", "total_ops", "meets_budget", "status"} <= set(c)
    assert {c["precision"] for c in cands} == {"fp32", "int8"}
    int8 = [c for c in cands if c["precision"] == "int8" and c["total_ops"]]
    assert int8 and all(c["quantized_ops"] == c["total_ops"] for c in int8)  # digits: every conv/gemm in int8
    assert any(c["status"] == "measured" and c["latency_protocol"] == "full" for c in cands)  # the best few
    assert len({json.dumps(c["settings"], sort_keys=True) for c in cands}) > 1  # run-time settings were searched
    # Pareto: valid indices, none dominated by another candidate with the three measures
    full = [c for c in cands if c["latency_ms"] and c["accuracy_drop"] is not None and c["size_bytes"]]
    assert data["pareto"] and all(0 <= i < len(cands) for i in data["pareto"])
    for i in data["pareto"]:
        assert not any(_dominates(o, cands[i]) for o in full)
    # every measured candidate is in the results store under the run id
    stored = _stored(data["run_id"])
    assert len(stored) >= sum(1 for c in cands if c["latency_ms"]) and {r.run_id for r in stored} == {data["run_id"]}
    # the chosen bundle is a normal bundle that records why it won, and loads with its settings
    import edgeify_runtime

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["optimize"]["run_id"] == data["run_id"] and manifest["optimize"]["why"]
    assert manifest["optimize"]["budgets"]["max_accuracy_drop"] == 0.3
    assert manifest["precision"] == chosen["precision"] and "ladder" in manifest["quantization"]
    with edgeify_runtime.load(out) as model:
        assert model.engine_name == "onnxruntime"


@pytest.mark.slow  # a search over the outlier model's ladder, 26 s (exit 10, --max-time and Ctrl-C stay quick)
def test_outlier_plain_int8_fails_optimize_returns_mostly_int8_mixed(outlier: dict[str, Path],
                                                                     tmp_path: Path, results_db: Path) -> None:
    import edgeify

    plain = run_cli("build", str(outlier["model"]), "--target", "x86-avx2", "--precision", "int8", "--engine",
                    "onnxruntime", "--calib", str(outlier["calib"]), "--eval", str(outlier["eval"]),
                    "--max-accuracy-drop", "1", "--no-latency", "-o", str(tmp_path / "plain"))
    assert plain.returncode in (9, 10), plain.stderr[-2000:]  # its parity / accuracy gate
    assert not (tmp_path / "plain").exists()
    res = edgeify.optimize(outlier["model"], target="x86-avx2", calib=outlier["calib"], eval=outlier["eval"],
                           max_accuracy_drop=1.0, engines=["onnxruntime"], precisions=["int8"],
                           out=tmp_path / "mixed", progress=lambda m: None)
    ch = res.chosen
    assert ch is not None and ch.precision == "int8-mixed" and ch.accuracy_drop <= 1.0
    assert ch.recipe.float_layers and "conv3" in ch.recipe.float_layers  # the outlier activation's consumer
    assert ch.quantized_ops / ch.total_ops > 0.5  # still mostly int8
    rungs = [r.rung for r in ch.ladder]
    assert rungs[0] == "int8" and not ch.ladder[0].accepted
    assert any(r.startswith("recipe ") for r in rungs)  # other recipes are tried before mixed precision
    assert any(r.accepted and r.precision == "int8-mixed" for r in ch.ladder)
    manifest = json.loads((tmp_path / "mixed" / "manifest.json").read_text())
    assert manifest["precision"] == "int8-mixed"
    assert manifest["quantization"]["float_layers"] == list(ch.recipe.float_layers)
    assert [r["rung"] for r in manifest["quantization"]["ladder"]] == rungs
    assert res.to_json()["candidates"][ch.index]["precision"] == "int8-mixed"


def test_no_candidate_meets_accuracy_exit_10(outlier: dict[str, Path], tmp_path: Path, results_db: Path) -> None:
    proc = run_cli("optimize", str(outlier["model"]), "--target", "x86-avx2", "--engine", "onnxruntime",
                   "--precision", "int8-dynamic", "--eval", str(outlier["eval"]), "--max-accuracy-drop", "1",
                   "-o", str(tmp_path / "none"), "--format", "json", env={"EDGEIFY_RESULTS_DB": str(results_db)})
    assert proc.returncode == 10, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    assert data["ok"] is False and data["failure"] == "accuracy" and data["chosen"] is None
    assert data["candidates"] and "closest" in data["error"]["message"]
    assert not (tmp_path / "none").exists()


@pytest.mark.slow  # a search to its end (exit 10 keeps the refusal path in the quick tier)
def test_no_candidate_meets_latency_exit_13(outlier: dict[str, Path], tmp_path: Path, results_db: Path) -> None:
    proc = run_cli("optimize", str(outlier["model"]), "--target", "x86-avx2", "--engine", "onnxruntime",
                   "--precision", "fp32", "--max-latency-ms", "0.000001", "--percentile", "p95",
                   "-o", str(tmp_path / "none"), env={"EDGEIFY_RESULTS_DB": str(results_db)})
    assert proc.returncode == 13, proc.stderr[-2000:]
    assert "no candidate meets --max-latency-ms" in proc.stderr and "closest" in proc.stderr
    assert "fp32" in proc.stdout  # the table of candidates is still shown
    assert not (tmp_path / "none").exists()


def test_build_ladder_publishes_the_first_rung_that_holds(outlier: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ladder"
    proc = run_cli("build", str(outlier["model"]), "--target", "x86-avx2", "--precision", "int8", "--engine",
                   "onnxruntime", "--calib", str(outlier["calib"]), "--eval", str(outlier["eval"]),
                   "--max-accuracy-drop", "1", "--ladder", "--no-latency", "-o", str(out), "--format", "json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["precision"] == "int8-mixed"
    manifest = json.loads((out / "manifest.json").read_text())
    ladder = manifest["quantization"]["ladder"]
    assert ladder[0]["rung"] == "int8" and not ladder[0]["accepted"]
    assert any(r["accepted"] and r["precision"] == "int8-mixed" for r in ladder)
    assert manifest["validation"]["accuracy"]["drop_points"] <= 1.0
    usage = run_cli("build", str(outlier["model"]), "--target", "x86-avx2", "--precision", "fp32", "--ladder",
                    "-o", str(tmp_path / "x"))
    assert usage.returncode == 2 and "--ladder" in usage.stderr


def test_max_time_stops_the_search_and_reports_the_best_so_far(outlier: dict[str, Path], tmp_path: Path,
                                                               results_db: Path) -> None:
    proc = run_cli("optimize", str(outlier["model"]), "--target", "x86-avx2", "--engine", "onnxruntime",
                   "--precision", "fp32", "--precision", "fp16", "--max-time", "0.5s", "-o", str(tmp_path / "b"),
                   "--format", "json", env={"EDGEIFY_RESULTS_DB": str(results_db)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    assert "--max-time" in data["stopped"] and "stopped early" in proc.stderr
    assert len(data["candidates"]) == 1 and data["chosen"]["precision"] == "fp32"  # the one measured so far
    assert (tmp_path / "b" / "manifest.json").is_file()


def test_ctrl_c_keeps_what_was_measured_reports_the_best_so_far_exit_130(outlier: dict[str, Path], tmp_path: Path,
                                                                         results_db: Path) -> None:
    """SIGINT to a real `edgeify optimize` paused after its first candidate was measured (fault point
    ``optimize-screened``): exit 130, the JSON still printed with the best so far, its benchmark in the results
    store under the run id, the bundle at -o complete (or absent), no work or staging directory left."""
    from edgeify_runtime.manifest import Manifest

    out, marker = tmp_path / "best", tmp_path / "paused"
    env = {**os.environ, "EDGEIFY_RESULTS_DB": str(results_db), "EDGEIFY_TEST_PAUSE_AT": "optimize-screened",
           "EDGEIFY_TEST_PAUSE_FILE": str(marker)}
    env.pop("EDGEIFY_DEBUG", None)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under `nohup ... &`: the child must not care
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeify", "optimize", str(outlier["model"]), "--target", "x86-avx2",
             "--engine", "onnxruntime", "--precision", "fp32", "--precision", "fp16", "-o", str(out),
             "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 240
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"optimize never measured a candidate: {proc.communicate()}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "interrupted" in stderr and "Traceback" not in stderr
    data = json.loads(stdout)  # one JSON object, still: the report of what was measured
    assert data["ok"] is False and data["error"]["exit_code"] == 130 and "interrupted" in data["stopped"]
    measured = [c for c in data["candidates"] if c["latency_ms"]]
    assert len(measured) == 1 and measured[0]["precision"] == "fp32"  # fp16 was never reached
    assert data["chosen"]["precision"] == "fp32" and data["chosen"]["latency_ms"]["p50"] > 0  # the best so far
    stored = _stored(data["run_id"])
    assert stored and {r.run_id for r in stored} == {data["run_id"]}
    assert len(stored) == sum(len(c["result_ids"]) for c in data["candidates"])
    manifest = Manifest.read(out)  # a complete bundle (every file hash checked), never a half one
    assert "interrupted" in json.loads((out / "manifest.json").read_text())["optimize"]["stopped"]
    assert manifest.precision == "fp32"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".edgeify-")]  # no work/staging left
