"""Ctrl-C / SIGTERM inside each long build step leaves nothing behind (issue 11 item 2).

Each build is paused at a known point inside the step (``EDGEIFY_TEST_PAUSE_AT``: the step writes a marker file
and waits), then signalled: no sleep that hopes to land inside a step. The child gets default SIGINT handling
explicitly, so the test also holds when the suite runs as a background job (which inherits SIGINT ignored).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _kit import REPO, make_gemm_onnx

DIGITS = f"{REPO}/examples/digits/model.py:digits_cnn"


def _args(point: str, tmp_path: Path) -> list[str]:
    if point == "torch-export":
        return [DIGITS, "--input-shape", "1,1,8,8", "--target", "x86"]
    if point == "nncf-calibration":
        np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).standard_normal((16, 1, 8, 8), np.float32))
        return [DIGITS, "--input-shape", "1,1,8,8", "--target", "x86", "--precision", "int8", "--engine",
                "openvino", "--calib", str(tmp_path / "calib.npz")]
    onnx = str(make_gemm_onnx(tmp_path / "m.onnx"))
    return [onnx, "--target", "rpi5" if point == "onnx2tf" else "x86"]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(("point", "sig"), [
    ("torch-export", signal.SIGINT), ("onnx2tf", signal.SIGINT), ("nncf-calibration", signal.SIGINT),
    ("check", signal.SIGINT), ("onnx2tf", signal.SIGTERM), ("check", signal.SIGTERM),
])
def test_interrupted_build_leaves_nothing(tmp_path: Path, point: str, sig: signal.Signals) -> None:
    out, marker, home = tmp_path / "bundle", tmp_path / "paused", tmp_path / "home"
    env = {**os.environ, "EDGEIFY_TEST_PAUSE_AT": point, "EDGEIFY_TEST_PAUSE_FILE": str(marker),
           "EDGEIFY_HOME": str(home)}
    env.pop("EDGEIFY_DEBUG", None)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under `nohup ... &`: the child must not care
    try:
        proc = subprocess.Popen([sys.executable, "-m", "edgeify", "build", *_args(point, tmp_path), "--no-latency",
                                 "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                preexec_fn=_default_sigint)
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 300
    while not marker.exists():  # the step reached its pause point
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"build never reached {point}: {proc.communicate()}")
        time.sleep(0.05)
    where, pid = marker.read_text().split()
    assert where == point and list(tmp_path.glob(".edgeify-staging-*/work"))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists()
    assert not list(tmp_path.glob(".edgeify-*"))
    assert not list(home.rglob(".tmp-*"))  # no half-written cache entry
    if int(pid) != proc.pid:  # the pause was in a subprocess (onnx2tf): it was killed with the build
        assert _ends(int(pid)), f"the {point} subprocess {pid} outlived the interrupted build"


def _ends(pid: int, within_s: float = 30) -> bool:
    """The process is gone or a zombie (killed; its new parent reaps it) within ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False
