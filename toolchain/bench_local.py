"""Run the device-side benchmark agent on this machine, in a subprocess, exactly as it runs over SSH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from edgeify_runtime.errors import EdgeifyRuntimeError

from .errors import EXIT_CODES, RemoteCommandError, error_for_code

AGENT_MODULE = "edgeify_runtime.bench"


def agent_command(python: str = sys.executable) -> list[str]:
    return [python, "-m", AGENT_MODULE]


def parse_agent_output(stdout: str, stderr: str, returncode: int, where: str) -> dict[str, Any]:
    """Turn the agent's JSON (or its failure) into a result dict or the matching typed error."""
    text = stdout.strip()
    try:
        result = json.loads(text.splitlines()[-1]) if text else None
    except ValueError:
        result = None
    if isinstance(result, dict) and result.get("ok"):
        return result
    if isinstance(result, dict) and isinstance(result.get("error"), dict):
        err = result["error"]
        cls = error_for_code(int(err.get("exit_code") or returncode or 1))
        raise cls(f"{where}: {err.get('message')}", hint=err.get("hint") or None)
    tail = (stderr or "").strip().splitlines()[-5:]
    meaning = EXIT_CODES.get(returncode, "")
    raise RemoteCommandError(f"{where}: the benchmark agent exited {returncode} without a result"
                             f"{f' ({meaning})' if meaning else ''}" + (": " + " | ".join(tail) if tail else ""),
                             hint="rerun with EDGEIFY_DEBUG=1 for the agent's traceback")


def run_agent(request: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
    timeout = timeout or float(request.get("max_duration_s", 120)) + 120
    env = dict(os.environ)
    try:
        proc = subprocess.run(agent_command(), input=json.dumps(request), capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise RemoteCommandError(f"local benchmark agent ran past its {timeout:.0f} s deadline") from None
    return parse_agent_output(proc.stdout, proc.stderr, proc.returncode, "local")


__all__ = ["EdgeifyRuntimeError", "agent_command", "parse_agent_output", "run_agent"]
