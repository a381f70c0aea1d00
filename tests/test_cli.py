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


def test_exit_codes_are_documented() -> None:
    table = (REPO / "docs" / "exit-codes.md").read_text()
    for code in EXIT_CODES:
        assert f"| {code} |" in table, f"exit code {code} missing from docs/exit-codes.md"
    assert "docs/exit-codes.md" in (REPO / "README.md").read_text()
    assert len(set(EXIT_CODES)) == len(EXIT_CODES)


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["--target", "x86-avx3"], 3, "did you mean"),
    (["--target", "x86", "--precision", "bf16"], 3, "does not support precision"),
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
    assert hist[0]["result_id"] == r["result_id"] and hist[0]["bundle_digest"] == r["bundle_digest"]
    assert hist[0]["latency_ms"]["p50"] == r["latency_ms"]["p50"]  # one result shape: bench's and the store's
    full = json.loads(run_cli("results", "--samples", "--limit", "1").stdout)["results"][0]
    assert len(full["samples_ms"]) == len(r["samples_ms"]) and full["fingerprint"]["arch"]
    over = run_cli("bench", str(out), "--runs", "20", "--min-duration", "0", "--max-latency-ms", "0.000001",
                   "--percentile", "p50")
    assert over.returncode == 13 and "over the budget" in over.stderr
    assert "p50" in over.stdout  # the table is still printed
    table = run_cli("results", "--device", "local", "--limit", "5")
    # the table names each result's bundle by its identity (files + engine + precision + engine options)
    assert r["bundle_id"] and r["bundle_id"] != r["bundle_digest"]
    assert table.returncode == 0 and r["bundle_id"][:12] in table.stdout.replace("\n", "")


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


def test_help_pages_versions_and_examples() -> None:
    """Issue 17.10: --version, no `<bool>` metavars, defaults and an example on every help page."""
    from edgeify import __version__

    assert run_cli("--version").stdout.strip() == __version__
    for cmd in (["bench"], ["build"], ["targets"], ["targets", "show"], ["devices", "add"], ["deploy"],
                ["rollback"], ["apps", "stop"], ["exit-codes"], []):
        page = run_cli(*cmd, "--help")
        assert page.returncode == 0, (cmd, page.stderr)
        assert "<bool>" not in page.stdout and "Examples:" in page.stdout, cmd
    bench = " ".join(run_cli("bench", "--help").stdout.split())
    assert "MINIMUM number of timed runs" in bench and "--min-duration" in bench
    for flag in ("--threads", "--warmup", "--runs", "--min-duration"):
        assert f"{flag} " in bench
    assert "default: the target's protocol" in bench


def test_targets_show_prints_a_target_file_and_the_templates(tmp_path: Path) -> None:
    shown = run_cli("targets", "show", "rpi5")
    assert shown.returncode == 0, shown.stderr
    assert "[[targets]]" in shown.stdout and 'name = "rpi5"' in shown.stdout
    mine = tmp_path / "mine.toml"
    mine.write_text(shown.stdout.replace('name = "rpi5"', 'name = "my-rpi5"'))  # pasted, renamed
    again = run_cli("targets", "show", "my-rpi5", "--target-file", str(mine), "--format", "json")
    assert again.returncode == 0, again.stderr
    original = json.loads(run_cli("targets", "show", "rpi5", "--format", "json").stdout)
    copy = json.loads(again.stdout)
    assert copy["resolved_pipelines"] == original["resolved_pipelines"] and copy["arch"] == original["arch"]
    listing = json.loads(run_cli("targets", "--format", "json").stdout)
    assert "x86-cpu" in listing["templates"]
    assert "x86-cpu" in run_cli("targets").stdout


def test_bench_json_is_one_compact_record_with_budget_and_warnings(tiny_onnx: Path, tmp_path: Path,
                                                                  results_db: Path) -> None:
    """Issues 17.7, 17.9, 17.13, 17.4: the BenchResult shape, samples on request, the budget verdict in the
    JSON, one JSON document also on failure, warnings for threads > cores and a thin p99, --input-shape."""
    from edgeify_runtime.result import BenchResult

    out = tmp_path / "b"
    assert run_cli("build", str(tiny_onnx), "--target", "x86", "-o", str(out), "--no-latency").returncode == 0
    quick = ("--warmup", "1", "--runs", "5", "--min-duration", "0")
    res = run_cli("bench", str(out), *quick, "--threads", "64", "--format", "json")
    assert res.returncode == 0, res.stderr
    r = BenchResult.from_dict(json.loads(res.stdout))
    assert "samples_ms" not in json.loads(res.stdout) and json.loads(res.stdout)["sample_count"] >= 5
    assert r.result_id and r.budget is None and r.engine.name == "onnxruntime"
    assert any("--threads 64" in w for w in r.warnings) and any("p99 from" in w for w in r.warnings)
    assert "warning" in res.stderr
    raw = run_cli("bench", str(out), *quick, "--samples", "--format", "json", "--no-store")
    assert len(raw.stdout.strip().splitlines()) == 1  # raw samples: one compact line
    assert len(json.loads(raw.stdout)["samples_ms"]) == json.loads(raw.stdout)["protocol"]["runs_done"]

    over = run_cli("bench", str(out), *quick, "--max-latency-ms", "0.000001", "--format", "json")
    assert over.returncode == 13 and "over the budget" in over.stderr
    rec = json.loads(over.stdout)  # one document: the result, with its verdict
    assert rec["ok"] is True and rec["budget"]["met"] is False and rec["budget"]["percentile"] == "p95"
    assert rec["budget"]["max_ms"] == 1e-06 and rec["budget"]["value_ms"] == rec["latency_ms"]["p95"]
    assert "int8" in over.stderr  # an fp32 bundle: int8 is a fair suggestion

    shaped = run_cli("bench", str(out), *quick, "--input-shape", "input:3,16", "--format", "json", "--no-store")
    assert shaped.returncode == 0, shaped.stderr
    proto = json.loads(shaped.stdout)["protocol"]
    assert proto["batch"] == 3 and proto["input_shapes"] == {"input": [3, 16]}
    assert list(proto["dynamic_axes"]["input"].values()) == [3]
    bad = run_cli("bench", str(out), "--input-shape", "input:3,17", "--format", "json")
    assert bad.returncode == 2 and "fixed at 16" in bad.stderr and "fix:" in bad.stderr
    assert json.loads(bad.stdout)["error"]["exit_code"] == 2  # under --format json: a JSON error on stdout
    missing = run_cli("bench", str(tmp_path / "nothing"), "--format", "json")
    assert missing.returncode == 12 and json.loads(missing.stdout) == {"ok": False, "error": {
        "type": "BundleError", "exit_code": 12, "message": json.loads(missing.stdout)["error"]["message"],
        "hint": json.loads(missing.stdout)["error"]["hint"]}}


def test_budget_hint_and_foreign_target_warning() -> None:
    """The fix line never suggests int8 for an int8 bundle; a local run of a board's bundle says whose figures
    these are (issue 17.7, 17.13)."""
    from edgeify.bench import budget_error
    from edgeify.bench_agent import host_warnings as _warnings
    from edgeify_runtime.result import BenchResult

    base = {"bundle_digest": "ab" * 32, "latency_ms": {"p95": 2.0}, "samples_ms": [1.0] * 200,
            "fingerprint": {"arch": "x86_64", "cpu": {"model": "Intel Xeon", "usable_cores": 2}}}
    int8 = BenchResult.from_dict({**base, "precision": "int8", "target": "x86-avx2"}).with_budget(1.0, "p95")
    err = budget_error([int8])
    assert err is not None and err.exit_code == 13 and "--precision int8" not in err.hint
    assert budget_error([int8.with_budget(5.0, "p95")]) is None
    rpi = BenchResult.from_dict({**base, "target": "rpi5"})
    (w,) = _warnings(rpi, local=True)
    assert "rpi5" in w and "this host's figures" in w
    assert _warnings(rpi, local=False) == [] and _warnings(int8, local=True) == []
    vnni = BenchResult.from_dict({**base, "target": "x86-avx2", "fingerprint": {
        "arch": "x86_64", "cpu": {"isa": ["avx2", "avx512f", "avx512_vnni"], "usable_cores": 2}}})
    (hint,) = _warnings(vnni, local=True)
    assert "x86-avx512" in hint


def test_usage_errors_and_devices_add_stores_the_board(tmp_path: Path) -> None:
    env = {"EDGEIFY_HOME": str(tmp_path / "home")}
    dep = run_cli("deploy", str(tmp_path), env=env)
    assert dep.returncode == 2 and "--device" in dep.stderr and "fix:" in dep.stderr
    add = run_cli("devices", "add", "pi-x", "--host", "127.0.0.1", "--target", "x86", env=env)
    assert add.returncode == 0, add.stderr
    listed = json.loads(run_cli("devices", "list", "--format", "json", env=env).stdout)["devices"]
    assert [d["target"] for d in listed] == ["x86-avx2"]
