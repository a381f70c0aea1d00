"""The test tiers (tests/_tiers.py): every tier marker is registered, `-m quick` selects exactly the tests that
carry no service marker and are not slow, and a test that starts a service without its marker fails loudly
(each service's real start helper, in a pytest run of its own; nothing is started: the guard comes first)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import _tiers
import pytest
import tomllib
from _kit import REPO

#: directories and modules whose every test starts a service
SERVICE_FILES = ("tests/ssh/", "tests/arm64/", "tests/ray/", "tests/systemd/", "tests/test_store_postgres.py",
                 "tests/test_report.py", "tests/test_monitoring.py")


def _registered() -> dict[str, str]:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in cfg["addopts"]
    return dict(m.split(":", 1) for m in cfg["markers"])


def test_every_tier_marker_is_registered() -> None:
    markers = _registered()
    for name in (*_tiers.SERVICES, *_tiers.NOT_QUICK, _tiers.QUICK):
        assert name in markers, f"marker {name!r} is not registered in pyproject.toml"
    assert set(_tiers.SERVICES) == {"ssh", "arm64", "systemd", "ray", "postgres", "browser", "prometheus"}


DUMP_PLUGIN = '''
import json, os

_deselected = []

def pytest_deselected(items):
    _deselected.extend(items)

def pytest_collection_finish(session):
    def rows(items):
        return {i.nodeid: sorted({m.name for m in i.iter_markers()}) for i in items}
    with open(os.environ["TIERS_DUMP"], "w") as f:
        json.dump({"selected": rows(session.items), "deselected": rows(_deselected)}, f)
'''


def test_quick_selects_every_test_without_a_service_or_slow_marker(tmp_path: Path) -> None:
    (tmp_path / "tiers_dump.py").write_text(DUMP_PLUGIN)
    env = {**os.environ, "TIERS_DUMP": str(tmp_path / "dump.json"),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-p", "tiers_dump", "-m", "quick"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    dump = json.loads((tmp_path / "dump.json").read_text())
    selected, deselected = dump["selected"], dump["deselected"]
    not_quick = set(_tiers.SERVICES) | set(_tiers.NOT_QUICK)
    assert len(selected) > 200 and "tests/test_tiers.py::test_every_tier_marker_is_registered" in selected
    for nodeid, markers in selected.items():
        assert "quick" in markers and not (set(markers) & not_quick), (nodeid, markers)
        assert not nodeid.startswith(SERVICE_FILES), f"{nodeid} starts a service but is in the quick tier"
    for nodeid, markers in deselected.items():  # left out only for a reason
        assert set(markers) & not_quick and "quick" not in markers, (nodeid, markers)
    for prefix in SERVICE_FILES:
        assert any(n.startswith(prefix) for n in deselected), f"no test of {prefix} was collected"
    for service in _tiers.SERVICES:
        assert any(service in m for m in deselected.values()), f"no test carries the {service!r} marker"


#: each service's own start helper, called by a test that lacks its marker
UNMARKED = {
    "ssh": "import sshlab\n    sshlab.Sshd('x', '127.0.0.1', tmp_path / 'd', 'ssh-ed25519 AAAA t').start()",
    "arm64": "import armlab\n    armlab.Arm64Device(tmp_path).start(tmp_path)",
    "systemd": "import sdlab\n    sdlab.SystemdDevice(tmp_path).boot(tmp_path / 'boot.log')",
    "ray": "from raylab import RayLab\n    RayLab(root=tmp_path).start()",
    "postgres": "from _pg import postgres_server\n    with postgres_server():\n        pass",
    "browser": "from test_report import chromium\n    chromium()",
    "prometheus": "from test_monitoring import _tool\n    _tool('prometheus')",
}


def test_a_service_started_without_its_marker_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text("from _tiers import pytest_collection_modifyitems, "
                                          "pytest_runtest_protocol  # noqa: F401\n")
    body = "import pytest\n\n"
    for service, call in UNMARKED.items():
        body += f"\ndef test_unmarked_{service}(tmp_path):\n    {call}\n\n"
    body += "\n@pytest.mark.ssh\ndef test_marked_ssh():\n    import _tiers\n    _tiers.starting('ssh')\n"
    (tmp_path / "test_services.py").write_text(body)
    tests = REPO / "tests"
    path = [tests, tests / "ssh", tests / "arm64", tests / "systemd", tests / "ray"]
    env = {**{k: v for k, v in os.environ.items() if k != "CI"},
           "PYTHONPATH": os.pathsep.join([*map(str, path), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "1000"}  # the short summary lines whole
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-m", "",
                           "--rootdir", str(tmp_path), "-c", str(REPO / "pyproject.toml"), "test_services.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout
    for service in UNMARKED:
        line = next((ln for ln in out.splitlines() if ln.startswith(f"FAILED test_services.py::test_unmarked_"
                                                                     f"{service} ")), "")
        assert "UnmarkedServiceError" in line and f"{service!r} marker" in line, (service, out[-4000:])
    assert "PASSED test_services.py::test_marked_ssh" in out, out[-4000:]
    assert f"{len(UNMARKED)} failed, 1 passed" in out, out[-4000:]


def test_the_guard_outside_a_test_and_with_the_marker() -> None:
    running = _tiers._current
    _tiers.set_current(None)
    try:
        _tiers.starting("ray")  # a benchmark script using the lab: nothing to check
        _tiers.set_current(frozenset({"ray", "quick"}))
        _tiers.starting("ray")
        _tiers.set_current(frozenset({"quick"}))
        with pytest.raises(_tiers.UnmarkedServiceError, match="'ray' marker"):
            _tiers.starting("ray")
        with pytest.raises(ValueError, match="unknown service marker"):
            _tiers.starting("redis")
    finally:
        _tiers.set_current(running)
