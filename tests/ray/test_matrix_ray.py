"""`edgeify build-matrix --executor ray` on a real two-node Ray cluster started by the tests (raylab.py).

The node-loss and Ctrl-C tests pause a cell at a known point instead of guessing with sleeps: the worker node is
started with ``EDGEIFY_TEST_PAUSE_AT=check`` (the check step writes a marker with its PID and waits), so exactly
the cells that run on that node stop there, while the head node builds normally.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from _kit import make_gemm_onnx
from edgeify_runtime.manifest import Manifest
from raylab import RayLab

pytestmark = pytest.mark.ray


def _wait(proc, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _wait_for(path: Path, proc, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path.name} never appeared: {proc.communicate()}")
        time.sleep(0.05)


def _two_tiny_models(tmp_path: Path) -> Path:
    make_gemm_onnx(tmp_path / "a.onnx")
    make_gemm_onnx(tmp_path / "b.onnx", seed=1)
    m = tmp_path / "matrix.toml"  # two models: two first cells that start at once, one on each 1-CPU node
    m.write_text('targets = ["x86-avx2"]\nprecisions = ["fp32"]\n[[models]]\nname = "a"\npath = "a.onnx"\n'
                 '[[models]]\nname = "b"\npath = "b.onnx"\n', encoding="utf-8")
    return m


def _paused_cell(marker: Path) -> tuple[int, str]:
    pid = int(marker.read_text().split()[1])
    title = " ".join(psutil.Process(pid).cmdline())  # Ray names the worker process after its task
    return pid, title.split("edgeify-cell:", 1)[1].split()[0]


def test_matrix_spreads_over_both_nodes_and_shares_the_step_cache(lab: RayLab, digits, tmp_path: Path) -> None:
    node = lab.add_node("w1")
    make_gemm_onnx(tmp_path / "tiny.onnx")
    np.savez(tmp_path / "calib.npz", input=np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32))
    m = tmp_path / "matrix.toml"
    m.write_text(f"""
targets = ["x86-avx2"]
precisions = ["fp32", "int8"]
[[models]]
name = "digits"
path = "{digits['model']}"
calib = "{digits['calib']}"
eval = "{digits['eval']}"
[[models]]
name = "tiny"
path = "tiny.onnx"
precisions = ["fp32"]
""", encoding="utf-8")
    out = tmp_path / "zoo"
    proc = lab.cli("build-matrix", str(m), "-o", str(out), "--executor", "ray", "--ray-address", lab.address,
                   "--no-latency", "--format", "json", env={"EDGEIFY_HOME": str(tmp_path / "home")})
    rc, stdout, stderr = _wait(proc)
    try:
        assert rc == 0, stderr[-3000:]
        res = json.loads(stdout)
        cells = {c["cell"]: c for c in res["cells"]}
        assert {k: c["status"] for k, c in cells.items()} == dict.fromkeys(
            ("digits/x86-avx2-fp32", "digits/x86-avx2-int8", "tiny/x86-avx2-fp32"), "built")
        ids = {c["node"]["id"] for c in cells.values()}
        alive = {n["ip"]: n["id"] for n in res["nodes"] if n["alive"]}
        assert ids <= set(alive.values()) and len(ids) == 2  # both nodes built cells
        assert {c["node"]["ip"] for c in cells.values()} == {"127.0.0.1", node.ip}
        for c in cells.values():
            Manifest.read(c["bundle"]).verify_files(c["bundle"])  # shipped back and published intact
            assert Path(c["report"]).is_file()
        # digits/int8 waited for digits/fp32: one ONNX export per model, even across nodes (shared EDGEIFY_HOME)
        assert res["steps"]["onnx-export"] == {"ran": 2, "cached": 1}
        assert cells["digits/x86-avx2-int8"]["parity"]["pass"] is True
    finally:
        lab.kill_node("w1")


def test_worker_node_killed_mid_build_its_cell_finishes_on_the_other_node(lab: RayLab, tmp_path: Path) -> None:
    marker = tmp_path / "paused"
    node = lab.add_node("w2", env={"EDGEIFY_TEST_PAUSE_AT": "check", "EDGEIFY_TEST_PAUSE_FILE": str(marker)})
    out = tmp_path / "zoo"
    proc = lab.cli("build-matrix", str(_two_tiny_models(tmp_path)), "-o", str(out), "--executor", "ray",
                   "--ray-address", lab.address, "--no-latency", "--format", "json",
                   env={"EDGEIFY_HOME": str(tmp_path / "home")})
    _wait_for(marker, proc)
    pid, cell = _paused_cell(marker)  # this cell is mid-build (in its check step) on the worker node
    killed = lab.kill_node("w2")
    assert pid in killed and not psutil.pid_exists(pid)
    rc, stdout, stderr = _wait(proc)
    assert rc == 0, stderr[-3000:]
    res = json.loads(stdout)
    cells = {c["cell"]: c for c in res["cells"]}
    assert all(c["status"] == "built" for c in cells.values())
    assert cells[cell]["node"]["ip"] == "127.0.0.1"  # retried by Ray, built on the head node
    # the killed node took part in the run; whether Ray's GCS already marks it dead when the run ends depends on
    # its health-check period (seconds to tens of seconds), so its "alive" flag is not asserted
    assert [n for n in res["nodes"] if n["ip"] == node.ip]
    Manifest.read(out / cell).verify_files(out / cell)
    assert not [p for p in out.rglob("*") if p.name.startswith(".edgeify-staging")]


def test_ctrl_c_cancels_cluster_tasks_and_keeps_finished_bundles(lab: RayLab, tmp_path: Path) -> None:
    marker = tmp_path / "paused"
    lab.add_node("w3", env={"EDGEIFY_TEST_PAUSE_AT": "check", "EDGEIFY_TEST_PAUSE_FILE": str(marker)})
    out = tmp_path / "zoo"
    proc = lab.cli("build-matrix", str(_two_tiny_models(tmp_path)), "-o", str(out), "--executor", "ray",
                   "--ray-address", lab.address, "--no-latency", env={"EDGEIFY_HOME": str(tmp_path / "home")})
    try:
        _wait_for(marker, proc)
        pid, cell = _paused_cell(marker)
        other = out / ({"a/x86-avx2-fp32", "b/x86-avx2-fp32"} - {cell}).pop()
        _wait_for(other / "manifest.json", proc)  # the head node's cell finished and was published
        proc.send_signal(signal.SIGINT)
        rc, stdout, stderr = _wait(proc, timeout=120)
        assert rc == 130, stderr[-3000:]
        assert "cancelled" in stdout and "interrupted" in stderr
        Manifest.read(other).verify_files(other)          # the finished bundle stays
        assert not (out / cell).exists()                  # the cancelled one left nothing
        assert not [p for p in out.rglob("*") if p.name.startswith(".edgeify-staging")]
        deadline = time.monotonic() + 30                  # ray.cancel stopped the task on the worker node
        while time.monotonic() < deadline and _runs(pid, cell):
            time.sleep(0.2)
        assert not _runs(pid, cell)
    finally:
        lab.kill_node("w3")


def _runs(pid: int, cell: str) -> bool:
    try:
        return cell in " ".join(psutil.Process(pid).cmdline())
    except psutil.NoSuchProcess:
        return False
