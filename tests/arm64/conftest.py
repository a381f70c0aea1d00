"""The emulated arm64 device for the tests: a cached arm64 Debian root under qemu-user, sshd on 127.0.0.5.

Every test here carries the ``arm64`` marker (`pytest -m arm64` runs them alone; ``armlab.Arm64Device.start``
refuses a test without it). Setting the device up needs root and qemu-user-static, binfmt-support and debootstrap
(`./install.sh --dev` installs them); without them the tests skip with the reason, except in CI (CI=true), where
that is a failure.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "ssh"))

import armlab  # noqa: E402
import sshlab  # noqa: E402


@dataclass
class Arm64:
    device: armlab.Arm64Device
    home: Path
    setup: dict


@pytest.fixture(scope="session")
def arm64(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arm64]:
    missing = armlab.missing_system_tools()
    reason = ""
    if missing:
        reason = f"needs {', '.join(missing)} (apt-get install qemu-user-static binfmt-support debootstrap)"
    elif os.geteuid() != 0:
        reason = "needs root (chroot, mounts, binfmt_misc)"
    if reason:
        if sshlab.IN_CI:
            pytest.fail(f"CI: the emulated arm64 device cannot be set up: {reason}")
        pytest.skip(reason)  # outside CI only
    work = tmp_path_factory.mktemp("arm64")
    t0 = time.monotonic()
    root, info = armlab.ensure_root(work)
    dev = armlab.Arm64Device(root)
    mp = pytest.MonkeyPatch()
    try:
        dev.start(work)
        info["setup_seconds"] = round(time.monotonic() - t0, 1)
        home = work / "home"
        (home / ".ssh").mkdir(parents=True)
        (home / ".ssh" / "known_hosts").write_text(dev.known_hosts_line() + "\n")
        mp.setenv("HOME", str(home))
        for var in ("SSH_AUTH_SOCK", "EDGEIFY_SSH_CONFIG"):
            mp.delenv(var, raising=False)
        print(f"\n[arm64] device ready in {info['setup_seconds']} s (cached root: {info['cached']})",
              file=sys.stderr)
        yield Arm64(dev, home, info)
    finally:
        mp.undo()
        dev.stop()


def _emulated(arm64: Arm64, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, target: str,
              qemu_cpu: str | None = None):
    """An inventory entry for the emulated device as ``target``, with a fresh results DB; ``qemu_cpu`` sets the
    core qemu emulates (``QEMU_CPU``) for the device's Python."""
    from edgeify.deploy.inventory import make_device

    monkeypatch.setenv("EDGEIFY_RESULTS_DB", str(tmp_path / "results.sqlite"))
    d = arm64.device
    python = f"env QEMU_CPU={qemu_cpu} {d.python}" if qemu_cpu else d.python
    return make_device(name, host=d.address, port=d.port, user="root", key=str(d.key), python=python,
                       workdir=d.workdir, target=target, tags=("arm64", "emulated"))


@pytest.fixture()
def arm64_device(arm64: Arm64, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The emulated device as target rpi5 (a Raspberry Pi 5 stand-in) on qemu's default CPU."""
    return _emulated(arm64, tmp_path, monkeypatch, "emu-arm64", "rpi5")


@pytest.fixture()
def pi5_device(arm64: Arm64, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The emulated device as a Pi 5 (``QEMU_CPU=cortex-a76``: the Pi 5's core, not qemu's "max" CPU, whose
    hardware capabilities made XNNPACK's int8 kernels give wrong answers: see test_arm64_litert.py)."""
    return _emulated(arm64, tmp_path, monkeypatch, "emu-pi5", "rpi5", qemu_cpu="cortex-a76")


@pytest.fixture()
def jetson_device(arm64: Arm64, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The emulated device as a Jetson Orin Nano (no NVIDIA GPU: its bundles run on ONNX Runtime's CPU provider)."""
    return _emulated(arm64, tmp_path, monkeypatch, "emu-jetson", "jetson-orin-nano")
