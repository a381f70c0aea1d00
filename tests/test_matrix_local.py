"""`edgeify build-matrix` on the local process pool: built, failed and skipped cells, records, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from _kit import make_gemm_onnx, run_cli
from edgeify_runtime.manifest import Manifest


def _matrix(tmp_path: Path) -> Path:
    make_gemm_onnx(tmp_path / "tiny.onnx")
    make_gemm_onnx(tmp_path / "tiny2.onnx", seed=1)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", input=rng.standard_normal((32, 16)).astype(np.float32))
    p = tmp_path / "matrix.toml"
    p.write_text("""
targets = ["x86-avx2"]
precisions = ["fp32", "int8"]

[[models]]
name = "nocalib"           # int8 without calibration data: that cell fails, fp32 builds
path = "tiny.onnx"
extra_precisions = ["bf16"]      # x86-avx2 has no bf16: skipped

[[models]]
name = "calib"
path = "tiny2.onnx"
calib = "calib.npz"
""", encoding="utf-8")
    return p


@pytest.mark.slow  # a process-pool matrix build (the serial matrix tests stay quick)
def test_local_pool_builds_skips_and_reports_failures(tmp_path: Path) -> None:
    out = tmp_path / "zoo"
    r = run_cli("build-matrix", str(_matrix(tmp_path)), "-o", str(out), "--jobs", "2", "--no-latency",
                "--format", "json", env={"EDGEIFY_HOME": str(tmp_path / "home")})
    assert r.returncode == 16, r.stderr  # some cells failed (documented code), the rest were built
    res = json.loads(r.stdout)
    cells = {c["cell"]: c for c in res["cells"]}
    assert {k: c["status"] for k, c in cells.items()} == {
        "nocalib/x86-avx2-fp32": "built", "nocalib/x86-avx2-int8": "failed", "nocalib/x86-avx2-bf16": "skipped",
        "calib/x86-avx2-fp32": "built", "calib/x86-avx2-int8": "built"}
    assert res["counts"] == {"built": 3, "failed": 1, "skipped": 1, "cancelled": 0}
    failed = cells["nocalib/x86-avx2-int8"]
    assert failed["error"]["type"] == "DataError" and failed["error"]["exit_code"] == 7
    assert failed["bundle"] is None and not (out / "nocalib" / "x86-avx2-int8").exists()
    assert "bf16" in cells["nocalib/x86-avx2-bf16"]["reason"]
    for name in ("nocalib/x86-avx2-fp32", "calib/x86-avx2-fp32", "calib/x86-avx2-int8"):
        c = cells[name]
        bundle = Path(c["bundle"])
        assert bundle == out / name
        Manifest.read(bundle).verify_files(bundle)  # a complete, intact bundle
        assert Path(c["report"]).is_file() and c["report"].endswith("report.md")
        assert c["node"]["id"] == "local" and c["seconds"] > 0 and c["size_bytes"] > 0
        assert c["parity"]["pass"] is True
    assert json.loads(Path(cells["calib/x86-avx2-int8"]["bundle"], "manifest.json").read_text())["precision"] == "int8"
    for c in cells.values():  # every cell's record is kept, failures and skips included
        assert json.loads(Path(c["record"]).read_text())["status"] == c["status"]
    assert not [p for p in out.rglob("*") if p.name.startswith(".edgeify-staging")]
    # the calib model's int8 cell waited for its fp32 cell, so the export step ran once for that model
    assert res["steps"]["onnx-export"] == {"ran": 2, "cached": 1}

    # again, serial, for people: the summary table names the failure; nothing is converted a second time
    again = run_cli("build-matrix", str(tmp_path / "matrix.toml"), "-o", str(out), "--jobs", "1", "--no-latency",
                    env={"EDGEIFY_HOME": str(tmp_path / "home")})
    assert again.returncode == 16
    assert "nocalib/x86-avx2-int8" in again.stdout and "needs calibration data" in again.stdout
    assert "onnx-export 0 ran/3 cached" in again.stdout
    assert "error [16]" in again.stderr and "fix:" in again.stderr
    Manifest.read(out / "calib" / "x86-avx2-int8").verify_files(out / "calib" / "x86-avx2-int8")


def test_ray_executor_without_ray_says_how_to_install_it(tmp_path: Path) -> None:
    blocker = tmp_path / "sitecustomize.py"  # this interpreter then behaves as one without Ray installed
    blocker.write_text("import sys\nclass _NoRay:\n    def find_spec(self, name, path=None, target=None):\n"
                       "        if name == 'ray' or name.startswith('ray.'):\n"
                       "            raise ModuleNotFoundError(\"No module named 'ray'\")\n"
                       "sys.meta_path.insert(0, _NoRay())\n")
    r = run_cli("build-matrix", str(_matrix(tmp_path)), "-o", str(tmp_path / "zoo"), "--executor", "ray",
                env={"PYTHONPATH": str(tmp_path)})
    assert r.returncode == 4, r.stderr
    assert "needs Ray" in r.stderr and "pip install 'edgeify[ray]'" in r.stderr
    assert not (tmp_path / "zoo").exists()


def test_usage_errors(tmp_path: Path) -> None:
    m = _matrix(tmp_path)
    r = run_cli("build-matrix", str(m), "-o", str(tmp_path / "zoo"), "--ray-address", "127.0.0.1:1")
    assert r.returncode == 2 and "--executor ray" in r.stderr
    r = run_cli("build-matrix", str(m), "-o", str(tmp_path / "zoo"), "--jobs", "0")
    assert r.returncode == 2


def test_ctrl_c_stops_the_pool_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    make_gemm_onnx(tmp_path / "tiny.onnx")
    m = tmp_path / "matrix.toml"
    m.write_text('targets = ["x86-avx2"]\nprecisions = ["fp32"]\n[[models]]\nname = "t"\npath = "tiny.onnx"\n')
    marker, out = tmp_path / "paused", tmp_path / "zoo"
    env = {**os.environ, "EDGEIFY_HOME": str(tmp_path / "home"), "EDGEIFY_TEST_PAUSE_AT": "check",
           "EDGEIFY_TEST_PAUSE_FILE": str(marker)}  # the cell's check step stops at a known point
    proc = subprocess.Popen([sys.executable, "-m", "edgeify", "build-matrix", str(m), "-o", str(out), "--jobs", "1",
                             "--no-latency"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    worker = int(marker.read_text().split()[1])
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "cancelled" in stdout and "interrupted" in stderr
    assert not (out / "t" / "x86-avx2-fp32").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".edgeify-staging")]
    assert not psutil.pid_exists(worker) or psutil.Process(worker).status() == psutil.STATUS_ZOMBIE
