"""The command line as a user runs it: exit codes, messages, JSON, interrupted and failed builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _kit import REPO, run_cli
from edgeify.errors import EXIT_CODES


def test_help_is_fast_because_nothing_heavy_is_imported() -> None:
    code = ("import sys, edgeify.cli.main as m\n"
            "heavy = [x for x in ('torch', 'onnx', 'onnxruntime', 'openvino', 'nncf', 'tensorflow', 'paramiko')"
            " if x in sys.modules]\nprint(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    res = run_cli("--help")
    assert res.returncode == 0 and "build" in res.stdout and "bench" in res.stdout


def test_targets_list_show_and_json() -> None:
    res = run_cli("targets", "--format", "json")
    data = json.loads(res.stdout)
    names = {t["name"] for t in data["targets"]}
    assert {"x86-avx2", "x86-avx512"} <= names and data["families"]["x86"] == "x86-avx2"
    show = run_cli("targets", "show", "x86", "--format", "json")
    assert show.returncode == 0 and "family alias" in show.stderr
    spec = json.loads(show.stdout)
    assert spec["name"] == "x86-avx2" and "onnxruntime/int8" in spec["resolved_pipelines"]


def test_exit_codes_are_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    for code in EXIT_CODES:
        assert f"| {code} |" in readme, f"exit code {code} missing from README"
    assert len(set(EXIT_CODES)) == len(EXIT_CODES)


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["--target", "x86-avx3"], 3, "did you mean"),
    (["--target", "x86", "--precision", "int16x8"], 3, "does not support precision"),
    (["--target", "x86", "--engine", "tensorrt"], 3, "no engine 'tensorrt'"),
    (["--target", "x86", "--precision", "int8"], 7, "needs calibration data"),
    (["--target", "x86", "--precision", "int8", "--calib", "/nonexistent.npz"], 7, "not found"),
])
def test_build_refusals(tiny_onnx: Path, tmp_path: Path, args: list[str], code: int, needle: str) -> None:
    out = tmp_path / "out"
    res = run_cli("build", str(tiny_onnx), *args, "-o", str(out))
    assert res.returncode == code, res.stderr
    assert needle in res.stderr and "fix:" in res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists() and not list(tmp_path.glob(".edgeify-staging-*"))


def test_corrupt_onnx_and_wrong_input_shape(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07" + os.urandom(300))
    res = run_cli("build", str(bad), "--target", "x86", "-o", str(tmp_path / "o"))
    assert res.returncode == 6 and "not a valid ONNX model" in res.stderr
    res = run_cli("build", f"{REPO}/examples/digits/model.py:digits_cnn", "--target", "x86", "--input-shape",
                  "1,3,8,8", "-o", str(tmp_path / "o"))
    assert res.returncode == 5 and "expected input[1, 3, 8, 8] to have 1 channels" in res.stderr
    assert not (tmp_path / "o").exists()


def test_failed_build_never_replaces_a_good_bundle(tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    ok = run_cli("build", str(tiny_onnx), "--target", "x86", "--precision", "fp16", "-o", str(out),
                 "--no-latency")
    assert ok.returncode == 0, ok.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    strict = tmp_path / "strict.toml"
    strict.write_text(textwrap.dedent("""
        [[targets]]
        name = "x86-strict"
        extends = "x86-cpu"
        status = "test target with an impossible fp16 tolerance"
        tolerances = { fp16 = { metric = "max-abs", rtol = 0.0, atol = 0.0 } }
    """))
    bad = run_cli("build", str(tiny_onnx), "--target", "x86-strict", "--target-file", str(strict),
                  "--precision", "fp16", "-o", str(out))
    assert bad.returncode == 9, bad.stderr
    assert "max|Δ|" in bad.stderr and "differs from the source model" in bad.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not list(tmp_path.glob(".edgeify-staging-*"))


def test_bench_json_results_store_and_latency_budget(digits, tmp_path: Path, results_db: Path) -> None:
    out = tmp_path / "b"
    built = run_cli("build", str(digits["model"]), "--target", "x86", "--precision", "int8", "--calib",
                    str(digits["calib"]), "-o", str(out), "--format", "json")
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["engine"] == "openvino"  # the measured-faster int8 engine on x86
    res = run_cli("bench", str(out), "--threads", "2", "--runs", "50", "--min-duration", "0.2",
                  "--format", "json", "--samples")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    lat = r["latency_ms"]
    assert set(lat) >= {"p50", "p90", "p95", "p99", "mean", "std", "min", "max", "cv"}
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert len(r["samples_ms"]) == r["protocol"]["runs_done"] >= 50
    assert r["protocol"]["threads"] == 2 and r["device"] == "local"
    for key in ("throughput_ips", "load_ms", "first_inference_ms", "peak_rss_mb", "fingerprint", "bundle_digest"):
        assert key in r
    assert r["fingerprint"]["arch"] in ("x86_64", "aarch64")
    manifest = json.loads((out / "manifest.json").read_text())
    assert r["bundle_digest"] == manifest["bundle_digest"]
    hist = json.loads(run_cli("results", "--format", "json").stdout)["results"]
    assert hist[0]["id"] == r["result_id"] and hist[0]["bundle_digest"] == r["bundle_digest"]
    full = json.loads(run_cli("results", "--full", "--limit", "1").stdout)["results"][0]
    assert len(full["samples"]) == len(r["samples_ms"]) and full["fingerprint"]["arch"]
    over = run_cli("bench", str(out), "--runs", "20", "--min-duration", "0", "--max-latency-ms", "0.000001",
                   "--percentile", "p50")
    assert over.returncode == 13 and "over the budget" in over.stderr
    assert "p50" in over.stdout  # the table is still printed
    table = run_cli("results", "--device", "local", "--limit", "5")
    assert table.returncode == 0 and r["bundle_digest"][:12] in table.stdout.replace("\n", "")


def test_bench_on_a_corrupted_bundle(tiny_onnx: Path, tmp_path: Path, results_db: Path) -> None:
    out = tmp_path / "b"
    assert run_cli("build", str(tiny_onnx), "--target", "x86", "-o", str(out), "--no-latency").returncode == 0
    model = out / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    res = run_cli("bench", str(out))
    assert res.returncode == 12 and "sha256 mismatch" in res.stderr
    assert run_cli("bench", str(tmp_path)).returncode == 12
