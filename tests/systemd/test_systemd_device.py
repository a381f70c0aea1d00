"""``edgeify deploy --app serve --systemd`` (issue 15.4) on a device that runs systemd: a Debian root booted with
systemd as PID 1 in its own namespaces (``sdlab.py``), reached over a real sshd that is one of its units. The unit
is enabled and active, the service answers ``/v2/health/ready``, a killed service is restarted by systemd
(Restart=on-failure), and after a power cycle of the device (PID 1 killed, booted again) the enabled unit starts
on its own."""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import sdlab  # noqa: E402
from sdlab import sshlab  # noqa: E402

pytestmark = pytest.mark.systemd  # the device's sshd is one of its units: part of this tier
UNIT = "edgeify-model.service"


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sdlab.SystemdDevice]:
    missing = sdlab.missing_system_tools()
    reason = ""
    if missing:
        reason = f"needs {', '.join(missing)} (apt-get install debootstrap util-linux)"
    elif os.geteuid() != 0:
        reason = "needs root (namespaces, mounts, cgroups)"
    elif sdlab.cgroup2_mount() is None:
        reason = "needs a cgroup2 hierarchy mounted on the host"
    if reason:
        if sshlab.IN_CI:
            pytest.fail(f"CI: the systemd device cannot be set up: {reason}")
        pytest.skip(reason)  # outside CI only
    work = tmp_path_factory.mktemp("systemd")
    t0 = time.monotonic()
    root, info = sdlab.ensure_root(work)
    dev = sdlab.SystemdDevice(root).prepare(work)
    mp = pytest.MonkeyPatch()
    try:
        dev.boot(work / "boot.log")
        home = work / "home"
        (home / ".ssh").mkdir(parents=True)
        (home / ".ssh" / "known_hosts").write_text(dev.known_hosts_line() + "\n")
        mp.setenv("HOME", str(home))
        for var in ("SSH_AUTH_SOCK", "EDGEIFY_SSH_CONFIG"):
            mp.delenv(var, raising=False)
        print(f"\n[systemd] device booted in {time.monotonic() - t0:.1f} s (cached root: {info['cached']}, "
              f"boot {dev.boots[-1]} s)", file=sys.stderr)
        yield dev
    finally:
        mp.undo()
        dev.stop()


def _ready(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _show(dev: sdlab.SystemdDevice, prop: str) -> str:
    return dev.run("systemctl", "show", "-p", prop, "--value", UNIT).stdout.strip()


def _wait(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_systemd_unit_enabled_active_restarted_and_started_at_boot(device: sdlab.SystemdDevice, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeify.deploy.apps import deploy_app
    from edgeify.deploy.connect import open_site
    from edgeify.deploy.inventory import make_device

    monkeypatch.setenv("EDGEIFY_RESULTS_DB", str(tmp_path / "results.sqlite"))
    bundle = sshlab.make_bundle(tmp_path / "bundle" / "model", seed=1)
    inv = make_device("sd-device", host=device.address, port=device.port, user="root", key=str(device.key),
                      python=device.python, workdir=device.workdir, target="x86-avx2", tags=("systemd",))
    port = sshlab.free_port("127.0.0.1")  # the device shares the host's network: its 127.0.0.1 is ours
    with open_site(inv) as site:
        report = deploy_app(site, bundle, app="serve", port=port, device=inv, systemd=True)
        enabled = site.transport.run(["systemctl", "is-enabled", UNIT], timeout=30)
    assert report.unit == f"/etc/systemd/system/{UNIT}"  # root on the device: a system unit
    assert enabled.stdout.strip() == "enabled", enabled
    assert device.run("systemctl", "is-active", UNIT).stdout.strip() == "active"
    assert _ready(port) == 200
    pid = report.pid
    assert _show(device, "MainPID") == str(pid)

    # killed: systemd restarts it (Restart=on-failure, RestartSec=2)
    assert device.run("kill", "-9", str(pid)).returncode == 0
    _wait("the restart", lambda: _show(device, "MainPID") not in ("0", str(pid)) and _ready(port) == 200)
    assert _show(device, "NRestarts") == "1"
    assert device.run("systemctl", "is-active", UNIT).stdout.strip() == "active"

    # power cycle: the enabled unit comes up at boot with nobody deploying
    device.stop()
    assert _ready(port) is None
    device.boot(tmp_path / "boot2.log")
    _wait("the service after boot", lambda: _ready(port) == 200)
    assert device.run("systemctl", "is-active", UNIT).stdout.strip() == "active"
    assert _show(device, "NRestarts") == "0"
