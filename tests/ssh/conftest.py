"""Fixtures for the SSH tests: real sshd devices on 127.0.0.x (see sshlab.py), an isolated HOME with
known_hosts and a client key, isolated edgeify config/results, tiny real bundles.

Without sshd (or root, for namespaces and mounts) the tests skip with the reason, except in CI (CI=true),
where a missing tool is a failure: CI installs openssh-server and iproute2.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sshlab
from sshtest import require

LOOPBACK_ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


@dataclass
class Lab:
    root: Path
    client_key: Path
    client_pub: str
    devices: dict[str, sshlab.Sshd]

    def known_hosts(self) -> str:
        return "".join(d.known_hosts_line() + "\n" for d in self.devices.values())


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Three sshd devices on 127.0.0.2-4, each with its own directory; one client key authorized on all.
    Root: sshd needs /run/sshd, and the tests log in as root (the device's python is this venv's)."""
    require("sshd", root=True)
    root = tmp_path_factory.mktemp("sshlab")
    key = root / "client" / "id_ed25519"
    pub = sshlab.write_ed25519_key(key, "edgeify-tests")
    devices: dict[str, sshlab.Sshd] = {}
    try:
        for i, addr in enumerate(LOOPBACK_ADDRESSES):
            name = f"dev-{'abc'[i]}"
            devices[name] = sshlab.Sshd(name, addr, root / name, pub).start()
        yield Lab(root, key, pub, devices)
    finally:
        for d in devices.values():
            d.stop()


@dataclass
class Env:
    home: Path
    known_hosts: Path
    key: Path
    results_db: Path
    devices_file: Path
    tmp: Path


@pytest.fixture()
def env(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    """A fresh HOME (~/.ssh/id_ed25519 = the lab's client key; known_hosts = every lab device), EDGEIFY_HOME,
    results DB; no ssh-agent, no EDGEIFY_SSH_CONFIG from the outside."""
    home = tmp_path / "home"
    ssh = home / ".ssh"
    ssh.mkdir(parents=True)
    ssh.chmod(0o700)
    shutil.copy(lab.client_key, ssh / "id_ed25519")
    (ssh / "id_ed25519").chmod(0o600)
    kh = ssh / "known_hosts"
    kh.write_text(lab.known_hosts())
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("EDGEIFY_HOME", str(tmp_path / "edgeify-home"))
    db = tmp_path / "results.sqlite"
    monkeypatch.setenv("EDGEIFY_RESULTS_DB", str(db))
    for var in ("SSH_AUTH_SOCK", "EDGEIFY_SSH_CONFIG", "EDGEIFY_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    return Env(home=home, known_hosts=kh, key=ssh / "id_ed25519", results_db=db,
               devices_file=tmp_path / "edgeify-home" / "config" / "devices.toml", tmp=tmp_path)


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    """A fresh work directory for the test's device (devices share one filesystem)."""
    p = tmp_path / "device-work"
    p.mkdir()
    return p


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny real bundles: v1 and v2 (same name 'model', different weights), one for another target, a 4 MB one."""
    root = tmp_path_factory.mktemp("bundles")
    return {
        "v1": sshlab.make_bundle(root / "v1" / "model", seed=1),
        "v2": sshlab.make_bundle(root / "v2" / "model", seed=2),
        "avx512": sshlab.make_bundle(root / "avx512" / "model", seed=3, target="x86-avx512"),
        "big": sshlab.make_bundle(root / "big" / "model", seed=4, weight_mb=4),
    }


class FaultMatrix:
    """Collects (case, error, exit code, seconds, intact) rows; written to $EDGEIFY_FAULT_MATRIX when set."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def record(self, case: str, exc: BaseException, seconds: float, intact: str) -> None:
        self.rows.append({"case": case, "error": type(exc).__name__, "exit_code": getattr(exc, "exit_code", None),
                          "seconds": round(seconds, 3), "verified_intact": intact,
                          "message": str(exc)[:300]})


@pytest.fixture(scope="session")
def fault_matrix() -> Iterator[FaultMatrix]:
    fm = FaultMatrix()
    yield fm
    out = os.environ.get("EDGEIFY_FAULT_MATRIX")
    if out and fm.rows:
        Path(out).write_text(json.dumps(sorted(fm.rows, key=lambda r: r["exit_code"] or 0), indent=2))


