"""Rough edges a new user hit on the documented paths (issue 23, section 4), each pinned by a test that failed on the
behaviour before: what ``build --help`` lists, refusals that name the way out, a random-bytes ``--calib``,
"cached" instead of "0.0 s", stdout holding only the table, an fp32 parity failure told as a conversion fault,
the optimize table fitting 100 columns, and the ``--max-time`` budget said up front.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from _kit import make_gemm_onnx, run_cli


@pytest.fixture(scope="module")
def gemm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("newuser")
    return make_gemm_onnx(root / "gemm.onnx")


def test_build_help_lists_every_precision() -> None:
    res = run_cli("build", "--help", env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0
    text = " ".join(res.stdout.split())
    assert "int8-mixed" in text and "bf16" in text and "int16x8" in text
    assert "int16x8 (TFLite" not in text  # ONNX Runtime targets list it too


def test_bf16_refusal_names_the_target_and_cpu_flag_that_have_it(gemm: Path) -> None:
    res = run_cli("build", str(gemm), "--target", "x86-avx2", "--precision", "bf16", "-o", str(gemm.parent / "b"))
    assert res.returncode == 3, res.stderr
    assert "x86-avx512" in res.stderr and "avx512_bf16" in res.stderr
    assert res.stderr.splitlines()[0].startswith("building ")  # said at once, before the toolchain loads


def test_random_bytes_calib_is_not_an_npz_archive(gemm: Path) -> None:
    bad = gemm.parent / "calib.npz"
    bad.write_bytes(np.random.default_rng(0).bytes(4096).replace(b"PK", b"pk").lstrip(b"\x80\x93"))
    res = run_cli("build", str(gemm), "--target", "x86", "--precision", "int8", "--calib", str(bad), "-o",
                  str(gemm.parent / "c"), "--no-latency")
    assert res.returncode == 7, res.stderr
    assert "not an .npz archive" in res.stderr and "pickled" not in res.stderr


def test_a_cached_build_says_cached_and_stdout_holds_only_the_summary(gemm: Path) -> None:
    for i in range(2):
        res = run_cli("build", str(gemm), "--target", "x86", "-o", str(gemm.parent / f"cached{i}"), "--no-latency")
        assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].startswith("built ") and "conversion cached" in res.stdout.splitlines()[0]
    steps = [ln for ln in res.stderr.splitlines() if ln.startswith("✓")]
    assert steps and all(ln.split()[-1] == "cached" for ln in steps if " check " not in ln), res.stderr
    assert " 0.00 s" not in res.stderr


def test_fp32_parity_failure_is_a_conversion_fault_not_a_precision_one() -> None:
    from edgeify.checks import parity
    from edgeify.errors import ParityError
    from edgeify.targets.spec import DEFAULT_TOLERANCES
    from edgeify_runtime.manifest import TensorSpec

    sig_in, sig_out = [TensorSpec("x", (4, 8), "float32")], [TensorSpec("y", (4, 8), "float32")]
    for precision, wanted, unwanted in (("fp32", "converter route", "try a higher precision"),
                                        ("fp16", "try a higher precision", "converter route")):
        with pytest.raises(ParityError) as exc:
            parity(sig_in, sig_out, lambda f: [f["x"] * 2.0], lambda f: [f["x"] * 2.2], ["y"],
                   DEFAULT_TOLERANCES[precision], None, 8, 0, 0, precision=precision)
        assert wanted in exc.value.hint and unwanted not in exc.value.hint
    assert exc.value.message.startswith("the built model differs")


def _result(reason: str):
    from edgeify.optimize.records import Budgets, Candidate, OptimizeResult, Recipe, Rung, Settings

    cand = Candidate(engine="onnxruntime", precision="int8-mixed",
                     recipe=Recipe(name="mixed-3", float_layers=("features.3.conv.1", "classifier.1", "softmax")),
                     settings=Settings(threads=2, options={"graph_optimization_level": "extended",
                                                           "execution_mode": "parallel"}),
                     accuracy_drop=1.25, size_bytes=123456, quantized_ops=40, total_ops=53,
                     screen_latency_ms={"p50": 1.2345, "p95": 1.5}, status="screened", reason=reason)
    rung = Rung(rung="int8-mixed float: features.3.conv.1, classifier.1, softmax", engine="onnxruntime",
                precision="int8-mixed", recipe=Recipe(name="mixed-3"), reason=reason)
    return OptimizeResult(run_id="opt-20261206T000000Z-abcdef", objective="latency", budgets=Budgets(),
                          target="x86-avx512", accuracy_measure="agreement", chosen=None, candidates=(cand,) * 3,
                          pareto=(0,), ladder=(rung,))


def test_optimize_table_fits_100_columns_unless_wide(capsys: pytest.CaptureFixture[str]) -> None:
    from edgeify.cli.optimize import print_table

    reason = "failed: sensitivity ranking raised RuntimeError: " + "x" * 120
    print_table(_result(reason))
    narrow = capsys.readouterr().out
    assert max(len(ln) for ln in narrow.splitlines()) <= 100, narrow
    assert "--wide" in narrow
    print_table(_result(reason), wide=True)
    wide = capsys.readouterr().out
    assert "p95 ms" in wide and "p95 ms" not in narrow
    headers = [ln for ln in narrow.splitlines() if "┃" in ln]
    assert all("drop pt" in h and "p50 ms" in h for h in headers), headers  # numbers keep their headers


def test_max_time_budget_is_said_up_front_and_a_bare_small_number_warns() -> None:
    from edgeify.cli.optimize import budget_note, parse_duration

    assert parse_duration("3") == 3.0
    note = budget_note("3", 3.0)
    assert "3 s" in note and "a bare number is seconds" in note and "--max-time 3m" in note
    assert "warning" not in budget_note("20m", parse_duration("20m")) and "20 min" in budget_note("20m", 1200.0)
    assert "warning" not in budget_note("90", 90.0)


def test_a_tiny_int8_build_says_per_call_overhead_dominates(capsys: pytest.CaptureFixture[str]) -> None:
    """The digits CNN's x86 int8 bundle ran 0.11 ms against ONNX Runtime fp32's 0.030 ms: the build says so."""
    from edgeify.cli.output import print_build_summary

    summary = {"bundle": "b", "target": "x86-avx2", "engine": "e", "precision": "int8", "size_bytes": 10,
               "seconds": 1.0, "steps": [], "parity": [], "accuracy": None,
               "latency": {"latency_ms": {"p50": 0.11, "p95": 0.13}}}
    print_build_summary(summary)
    assert "per-call overhead dominates" in capsys.readouterr().err
    print_build_summary({**summary, "precision": "fp32"})
    assert "per-call overhead" not in capsys.readouterr().err


def test_a_data_warning_is_printed_once(gemm: Path) -> None:
    calib = gemm.parent / "calib64.npz"
    np.savez(calib, input=np.random.default_rng(0).standard_normal((8, 16)))  # float64 for a float32 input
    res = run_cli("build", str(gemm), "--target", "x86", "--calib", str(calib), "-o", str(gemm.parent / "w"),
                  "--no-latency")
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "float64" in ln]
    assert len(lines) == 1 and "DataWarning" not in res.stderr, res.stderr
