"""`edgeify results` filters (family alias, bundle path, unknown device), `results show`, `results tag`,
`edgeify compare` and `edgeify gate` on real benchmark results of a real bundle, and the gate's exit 14 on a
known slowdown."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _kit import run_cli
from edgeify.analysis.compare import compare
from edgeify.analysis.gate import gate
from edgeify.results import open_store
from edgeify.store.select import select
from edgeify_runtime.result import BenchResult, Latency, Protocol


@pytest.fixture()
def benched(tiny_onnx: Path, tmp_path: Path, results_db: Path) -> dict:
    out = tmp_path / "build" / "tiny-x86"
    built = run_cli("build", str(tiny_onnx), "--target", "x86", "-o", str(out), "--no-latency")
    assert built.returncode == 0, built.stderr
    ids = []
    for _ in range(2):
        res = run_cli("bench", str(out), "--threads", "1", "--min-duration", "0.1", "--format", "json")
        assert res.returncode == 0, res.stderr
        ids.append(json.loads(res.stdout)["result_id"])
    return {"bundle": out, "ids": ids, "digest": json.loads((out / "manifest.json").read_text())["bundle_digest"],
            "cwd": tmp_path}


@pytest.mark.slow  # five benches into a store, 13 s (the gate's exit 14 test stays quick)
def test_results_filters_show_tag_compare_and_gate(benched: dict) -> None:
    ids, cwd = benched["ids"], benched["cwd"]
    fam = run_cli("results", "--target", "x86", "--format", "json")  # the family alias build accepts
    assert fam.returncode == 0 and [r["result_id"] for r in json.loads(fam.stdout)["results"]] == ids[::-1]
    rel = run_cli("results", "--bundle", "build/tiny-x86", "--format", "json", cwd=cwd)  # a relative bundle path
    assert [r["result_id"] for r in json.loads(rel.stdout)["results"]] == ids[::-1]
    table = run_cli("results", "--bundle", str(benched["bundle"]))
    assert "tiny.onnx" in table.stdout and "tiny-x86" in table.stdout  # the model / bundle column
    unknown = run_cli("results", "--device", "pi-nowhere")
    assert unknown.returncode == 0 and "no results yet" not in unknown.stdout
    assert "no result matches --device pi-nowhere" in unknown.stdout and "local" in unknown.stdout
    other = run_cli("results", "--target", "rpi5")
    assert "no result matches --target rpi5" in other.stdout and "x86-" in other.stdout
    shown = run_cli("results", "show", str(ids[0]), "--format", "json")
    assert shown.returncode == 0
    one = json.loads(shown.stdout)
    assert one["result_id"] == ids[0] and one["bundle_digest"] == benched["digest"] and "samples_ms" not in one
    assert one["fingerprint"]["arch"] and one["protocol"]["threads"] == 1
    assert run_cli("results", "show", "9999").returncode == 2
    bare = run_cli("results", str(ids[0]))
    assert bare.returncode == 2 and f"edgeify results show {ids[0]}" in bare.stderr
    assert run_cli("results", "tag", str(ids[0]), "base").returncode == 0
    moved = run_cli("results", "tag", str(ids[1]), "base", "--format", "json")
    assert json.loads(moved.stdout) == {"tag": "base", "result_ids": [ids[1]], "moved_from": [ids[0]]}
    assert json.loads(run_cli("results", "show", str(ids[1]), "--format", "json").stdout)["tags"] == ["base"]

    # compare and gate on these real results (one build and two benches for the whole test)
    a, b = ids
    cmp_ = run_cli("compare", str(a), str(b), "--format", "json")
    assert cmp_.returncode == 0, cmp_.stderr
    c = json.loads(cmp_.stdout)
    assert {"ratio_p50", "ci", "p_value", "verdict"} <= set(c) and c["verdict"] in ("faster", "slower", "same")
    assert c["ci"][0] <= c["ratio_p50"] <= c["ci"][1] and 0 <= c["p_value"] <= 1
    assert set(c["percentiles"]) == {"p50", "p90", "p95", "p99"} and c["method"].startswith("sample-level")
    assert not [w for w in c["warnings"] if "differ" in w]  # same device, fingerprint, protocol, threads
    assert any("one run per side" in w for w in c["warnings"])  # says what a single run cannot see
    by_digest = run_cli("compare", benched["digest"][:12], str(b), "--format", "json")  # a digest: its latest
    assert json.loads(by_digest.stdout)["a"]["result_ids"] == [b]
    assert run_cli("results", "tag", str(a), "baseline-main").returncode == 0
    # a generous threshold: the same bundle twice never fails it
    g = run_cli("gate", "--baseline", "baseline-main", "--candidate", str(b), "--max-regression", "500%",
                "--format", "json")
    assert g.returncode == 0 and json.loads(g.stdout)["regressed"] is False
    assert run_cli("gate", "--baseline", "nope", "--candidate", str(b)).returncode == 2


def _samples(scale: float, seed: int) -> tuple[float, ...]:
    rng = np.random.default_rng(seed)
    return tuple(float(x) for x in rng.gamma(20.0, 0.05, 2000) * scale)


def test_gate_exit_14_only_on_a_significant_regression_over_the_threshold(results_db: Path) -> None:
    def add(scale: float, seed: int, threads: int = 1) -> int:
        s = _samples(scale, seed)
        with open_store() as store:
            return store.add(BenchResult(bundle_digest="ab" * 32, samples_ms=s, protocol=Protocol(threads=threads),
                                         latency_ms=Latency(p50=float(np.median(s)))))

    base, same, slow, slightly = add(1.0, 1), add(1.0, 2), add(1.25, 3, threads=2), add(1.035, 4)
    assert run_cli("results", "tag", str(base), "baseline-main").returncode == 0
    regressed = run_cli("gate", "--baseline", "baseline-main", "--candidate", str(slow), "--max-regression", "5%",
                        "--format", "json")
    assert regressed.returncode == 14, regressed.stderr
    doc = json.loads(regressed.stdout)
    assert doc["regressed"] is True and doc["verdict"] == "slower" and doc["ratio_p50"] > 1.2
    assert any("threads" in w for w in doc["warnings"])
    ok = run_cli("gate", "--baseline", "baseline-main", "--candidate", str(slightly), "--max-regression", "5%")
    assert ok.returncode == 0 and "pass" in ok.stdout, ok.stdout + ok.stderr  # slower, but within 5%
    assert run_cli("gate", "--baseline", str(base), "--candidate", str(slow), "--max-regression", "5").returncode == 2
    # the same decisions through the API (no process per case)
    with open_store() as store:
        sel = {i: select(store, str(i)) for i in (base, same, slow, slightly)}
    assert not gate(sel[base], sel[same], max_regression=0.05).regressed
    assert gate(sel[base], sel[slightly], max_regression=0.01).regressed  # significant, over a 1% allowance
    assert not gate(sel[base], sel[slow], max_regression=0.30).regressed
    assert gate(sel[base], sel[slow], max_regression=0.05).regressed
    faster = compare(sel[slow], sel[base])
    assert faster.verdict == "faster" and faster.ci[1] < 1
