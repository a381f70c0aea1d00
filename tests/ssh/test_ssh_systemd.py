"""``edgeify deploy --app serve --systemd`` (issue 15.4) on a real sshd device. This lab's devices do not run
systemd (no /run/systemd/system), so what is proved here is: the unit is written (atomically, the token in a
0600 EnvironmentFile, not in the unit), ``systemd-analyze verify`` accepts it, and the deploy ends with a clear
error saying systemd is not running (exit 25) instead of pretending. Enabling and starting the unit on a device
that runs systemd: tests/systemd/test_systemd_device.py."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from edgeify.deploy.apps import deploy_app
from edgeify.deploy.connect import open_site
from edgeify.errors import RemoteCommandError
from sshtest import device_for
from test_ssh_apps import _free_port, _kill_apps

pytestmark = pytest.mark.ssh


def test_systemd_unit_is_written_and_verified_and_the_missing_systemd_is_said(env, lab, workdir: Path, bundles,
                                                                              tmp_path: Path) -> None:
    if Path("/run/systemd/system").is_dir():
        pytest.fail("this test expects a device without a running systemd (the lab's)")
    dev = device_for(lab.devices["dev-c"], workdir=workdir)
    units = tmp_path / "units"
    token = tmp_path / "token"
    token.write_text("unit-token-0123456789abcdef\n")
    try:
        with open_site(dev) as site, pytest.raises(RemoteCommandError) as exc:
            deploy_app(site, bundles["v1"], app="serve", port=_free_port(), device=dev, systemd=True,
                       unit_dir=str(units), token_file=token)
    finally:
        _kill_apps(workdir)
    assert exc.value.exit_code == 25 and "systemd is not running" in exc.value.message
    assert "without --systemd" in exc.value.hint
    unit = units / "edgeify-model.service"
    text = unit.read_text()
    assert "Restart=on-failure" in text and "RestartPreventExitStatus=2 5 11 12" in text
    assert '"-m" "edgeify_runtime.serve"' in text and "WantedBy=multi-user.target" in text  # root: a system unit
    assert "unit-token" not in text
    secret = workdir / "apps" / "model" / "secret.env"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and "EDGEIFY_SERVE_TOKEN=unit-token" in secret.read_text()
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing (apt-get install systemd)")
    proc = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
