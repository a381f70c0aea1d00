"""Helpers for the SSH tests (importable from the test modules; fixtures live in conftest.py)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sshlab


def require(*tools: str, root: bool = False) -> None:
    """Skip (fail in CI) unless the tools are installed (and we are root, for namespaces and mounts)."""
    missing = sshlab.missing_tools(*tools)
    reason = ""
    if missing:
        reason = f"needs {', '.join(missing)} (apt-get install -y --no-install-recommends openssh-server iproute2)"
    elif root and os.geteuid() != 0:
        reason = "needs root (sshd privilege separation, network namespaces, tmpfs mounts)"
    if reason:
        if sshlab.IN_CI:
            pytest.fail(f"CI: {reason}")
        pytest.skip(reason)  # outside CI only: in CI (CI=true) the line above fails instead


def device_for(sshd: sshlab.Sshd, *, name: str | None = None, workdir: Path | None = None,
               python: str | None = None, target: str = "x86-avx2", tags: tuple[str, ...] = (),
               **extra: Any) -> Any:
    """An inventory Device for a lab sshd (host/port/user explicit; the key comes from ~/.ssh/id_ed25519)."""
    from edgeify.deploy.inventory import make_device

    return make_device(name or sshd.name, host=sshd.address, port=sshd.port, user="root",
                       python=python or sys.executable, workdir=str(workdir or sshd.workdir), target=target,
                       tags=tags, **extra)


QUICK_PROTOCOL = {"warmup": 1, "runs": 5, "min_duration_s": 0.0, "max_duration_s": 20.0, "threads": 1}


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.monotonic()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.t0


def run_cli(*args: str, timeout: float = 120) -> Any:
    """The real CLI in a subprocess, with the device commands registered (the lead's main.py may not yet)."""
    import subprocess

    code = ("import sys\n"
            "from edgeify.cli import main as m\n"
            "from edgeify.cli.devices import register\n"
            "if not any(getattr(g, 'name', None) == 'devices' for g in m.app.registered_groups):\n"
            "    register(m.app)\n"
            "m.main(sys.argv[1:])\n")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))
