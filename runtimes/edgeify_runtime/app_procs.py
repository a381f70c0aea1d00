"""Processes of device apps: names, pid liveness, stop, log tails, the secret environment file. Shared by
:mod:`edgeify_runtime.device_apps` (no import of it here)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

from .device_io import Args, OpError, read_json, read_text

LOG_TAIL_LINES = 20
LOG_TAIL_BYTES = 16384


def safe_name(name: Any) -> str:
    if not isinstance(name, str) or not name or "/" in name or "\x00" in name or name[0] in "._":
        raise OpError("unsafe", f"unsafe app name: {name!r}")
    return name


def read_int(path: str) -> int | None:
    text = read_text(path)
    try:
        return int(text.strip()) if text else None
    except ValueError:
        return None


def log_tail(path: str, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - LOG_TAIL_BYTES))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return data.splitlines()[-lines:]


def alive(pid: int | None, marker: str | None) -> bool:
    """Is ``pid`` running, and is it our app (its command line holds ``marker``)? A zombie counts as gone."""
    if not pid or pid <= 1:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or another user's process: a reused pid
        return False
    stat = read_text(f"/proc/{pid}/stat")
    if stat is not None:
        if stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]:
            return False
        cmdline = read_text(f"/proc/{pid}/cmdline")
        if marker and cmdline is not None and marker not in cmdline.replace("\x00", " "):
            return False
    return True


def instance(work: str, name: Any) -> str:
    return os.path.join(work, "apps", safe_name(name))


def exit_code(inst: str, wait_s: float = 0.0) -> int | None:
    deadline = time.monotonic() + wait_s
    while True:
        code = read_int(os.path.join(inst, "app.exit"))
        if code is not None or time.monotonic() >= deadline:
            return code
        time.sleep(0.02)


def wait_gone(pid: int, marker: str | None, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while alive(pid, marker) and time.monotonic() < deadline:
        time.sleep(0.05)


def stop_app(inst: str, timeout: float) -> Args:
    """SIGTERM the instance's app, wait up to ``timeout`` s, then SIGKILL (and wait up to 5 s more)."""
    meta = read_json(os.path.join(inst, "app.json")) or {}
    pid = read_int(os.path.join(inst, "app.pid"))
    marker = meta.get("marker")
    if not alive(pid, marker):
        return {"was_running": False, "pid": pid}
    assert pid is not None
    t0 = time.monotonic()
    sent = "TERM"
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    wait_gone(pid, marker, timeout)
    if alive(pid, marker):
        sent = "KILL"
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone(pid, marker, 5.0)
    if alive(pid, marker):
        raise OpError("stop_failed", f"app pid {pid} survived SIGKILL", pid=pid)
    return {"was_running": True, "pid": pid, "signal": sent, "seconds": round(time.monotonic() - t0, 3),
            "exit_code": exit_code(inst, 2.0), "log_tail": log_tail(os.path.join(inst, "app.log"), 5)}




def write_secret(inst: str, secret: dict[str, str]) -> None:
    path = os.path.join(inst, "secret.env")
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("".join(f"{k}={v}\n" for k, v in secret.items()))
    os.replace(path + ".tmp", path)


def read_secret(inst: str) -> dict[str, str]:
    text = read_text(os.path.join(inst, "secret.env")) or ""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
