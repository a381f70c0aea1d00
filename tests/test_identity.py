"""A bundle's identity covers its engine options: two builds of one model that differ only in
`--engine-option` share the files digest but not the identity, and `results --bundle`, `compare DIR_A DIR_B`
(stored series, and `--runs N` run now) each find their own bundle's results."""

from __future__ import annotations

import json
from pathlib import Path

from _kit import run_cli
from edgeify_runtime.identity import manifest_identity
from edgeify_runtime.manifest import Manifest


def test_identity_sees_options_engine_and_precision(tiny_onnx: Path, tmp_path: Path, results_db: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli("build", str(tiny_onnx), "--target", "x86", "-o", str(a), "--no-latency").returncode == 0
    built = run_cli("build", str(tiny_onnx), "--target", "x86", "-o", str(b), "--no-latency", "--engine-option",
                    "graph_optimization_level=basic", "--engine-option", "threads=1", "--format", "json")
    assert built.returncode == 0, built.stderr
    ma, mb = Manifest.read(a), Manifest.read(b)
    assert mb.engine.options["graph_optimization_level"] == "basic" and mb.engine.options["threads"] == 1
    assert ma.bundle_digest == mb.bundle_digest  # same files ...
    assert manifest_identity(ma) != manifest_identity(mb)  # ... different bundles
    assert json.loads(built.stdout)["bundle_id"] == manifest_identity(mb)
    assert manifest_identity(ma.raw) == manifest_identity(ma)
    assert manifest_identity(ma, {"threads": 1}) != manifest_identity(ma)  # what the agent ran with a request option

    bad = run_cli("build", str(tiny_onnx), "--target", "x86", "-o", str(tmp_path / "c"), "--no-latency",
                  "--engine-option", "model_path=/etc/passwd")
    assert bad.returncode == 2 and "model_path" in bad.stderr and not (tmp_path / "c").exists()

    series = run_cli("bench", str(a), str(b), "--repeat", "2", "--min-duration", "0.05", "--cooldown", "0",
                     "--format", "json")
    assert series.returncode == 0, series.stderr
    doc = json.loads(series.stdout)
    ids_a = [r["result_id"] for r in doc["bundles"][0]["results"]]
    ids_b = [r["result_id"] for r in doc["bundles"][1]["results"]]
    first = doc["bundles"][0]["results"][0]
    assert first["bundle_id"] == manifest_identity(ma) and first["series"]["count"] == 2
    assert {"cpu_freq_mhz", "governor", "throttling", "load_avg", "cpu", "pressure", "energy",
            "disturbed"} <= set(first["device_state"])

    listed = run_cli("results", "--bundle", str(a), "--format", "json")
    assert sorted(r["result_id"] for r in json.loads(listed.stdout)["results"]) == sorted(ids_a)

    cmp_ = run_cli("compare", str(a), str(b), "--format", "json")  # the stored series of each bundle
    assert cmp_.returncode == 0, cmp_.stderr
    c = json.loads(cmp_.stdout)
    assert sorted(c["a"]["result_ids"]) == sorted(ids_a) and sorted(c["b"]["result_ids"]) == sorted(ids_b)
    assert c["a"]["bundle_id"] != c["b"]["bundle_id"] and c["method"].startswith("run-level")

    fresh = run_cli("compare", str(a), str(b), "--runs", "2", "--min-duration", "0.05", "--format", "json")
    assert fresh.returncode == 0, fresh.stderr
    f = json.loads(fresh.stdout)
    assert f["runs_a"] == f["runs_b"] == 2 and f["verdict"] in ("faster", "slower", "same", "inconclusive")
    assert not set(f["a"]["result_ids"]) & set(ids_a) and f["run_level"]["paired"] is True
    assert f["ci"][0] <= f["ratio"] <= f["ci"][1]
