"""``edgeify.deploy(bundle, where)`` over local sites (``DeviceSite.local``: this machine through LocalTransport,
the same command lines an SSH device runs): one typed outcome per device, a failing device does not stop the
others, progress events per device, refusals before any device is touched, selection from a devices file, and
an app started and checked healthy. The same API against real sshd devices: tests/ssh/test_ssh_deploy_api.py."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import edgeify
import pytest
from edgeify.deploy.apps import AppReport, stop_app
from edgeify.deploy.deployer import DeployReport
from edgeify.deploy.fleet import AppSettings, Outcome, select
from edgeify.deploy.inventory import Inventory, make_device
from edgeify.deploy.site import DeviceSite
from edgeify.errors import BundleError, ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parent / "ssh"))
import sshlab  # its tiny real bundles; nothing here starts sshd


def _digest(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["bundle_digest"]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("api-bundles")
    return {"v1": sshlab.make_bundle(root / "v1" / "model", seed=1),
            "v2": sshlab.make_bundle(root / "v2" / "model", seed=2)}


def test_one_outcome_per_site_and_a_broken_one_does_not_stop_the_others(bundles, tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("a file where the work directory should be")
    sites = [DeviceSite.local(name="a", workdir=str(tmp_path / "a")),
             DeviceSite.local(name="broken", workdir=str(tmp_path / "not-a-dir" / "w")),
             DeviceSite.local(name="b", workdir=str(tmp_path / "b"))]
    events: list[tuple[str, str]] = []
    outcomes = edgeify.deploy(bundles["v1"], sites, progress=lambda d, e, _i: events.append((d, e)))
    assert [o.device for o in outcomes] == ["a", "broken", "b"]
    assert all(isinstance(o, Outcome) for o in outcomes)
    for o, name in ((outcomes[0], "a"), (outcomes[2], "b")):
        assert o.ok and isinstance(o.result, DeployReport) and o.result.status == "installed", o.error
        assert sshlab.installed(tmp_path / name, "model") == {**sshlab.installed(tmp_path / name, "model"),
                                                               "digest": _digest(bundles["v1"]), "intact": True}
    bad = outcomes[1]
    assert not bad.ok and bad.exit_code != 0 and bad.error_dict()["message"]
    with pytest.raises(type(bad.error)):
        bad.unwrap()
    for name in ("a", "b"):
        seen = [e for d, e in events if d == name]
        assert seen[0] == "start" and seen[-1] == "done" and "installed" in seen, seen
    assert [e for d, e in events if d == "broken"][-1] == "failed"

    again = edgeify.deploy(bundles["v2"], sites[0], name="model", parallelism=1)
    assert again[0].unwrap().status == "installed"
    assert sshlab.installed(tmp_path / "a", "model", "previous")["digest"] == _digest(bundles["v1"])
    same = edgeify.deploy(bundles["v2"], [sites[0]])[0].unwrap()
    assert same.status == "unchanged" and same.uploaded_bytes == 0


def test_refusals_come_before_any_device_is_touched(bundles, tmp_path: Path) -> None:
    site = DeviceSite.local(name="a", workdir=str(tmp_path / "w"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{}")
    with pytest.raises(BundleError):
        edgeify.deploy(broken, site)
    with pytest.raises(ConfigError, match="invalid --app-option '=nope'"):
        edgeify.deploy(bundles["v1"], site, app=AppSettings("serve", options=("=nope",)))
    with pytest.raises(ConfigError, match="no device given"):
        edgeify.deploy(bundles["v1"], [])
    assert not (tmp_path / "w").exists()


def test_names_and_tag_selectors_come_from_the_devices_file(bundles, tmp_path: Path) -> None:
    inv = Inventory(tmp_path / "devices.toml")
    for name, tags in (("cam-1", ("cameras",)), ("cam-2", ("cameras", "lab")), ("gw-1", ("lab",))):
        inv.add(make_device(name, host="192.0.2.1", target="x86-avx2", tags=tags))
    inv.save()
    path = tmp_path / "devices.toml"
    assert [d.name for d in select("tag:cameras", path)] == ["cam-1", "cam-2"]
    assert [d.name for d in select(["gw-1", "tag:lab"], path)] == ["gw-1", "cam-2"]  # each once, in order
    with pytest.raises(ConfigError, match="unknown device 'cam-11'") as exc:
        edgeify.deploy(bundles["v1"], "cam-11", inventory=path)
    assert "did you mean 'cam-1'" in exc.value.hint
    with pytest.raises(ConfigError, match="no device has the tag 'nope'"):
        edgeify.deploy(bundles["v1"], "tag:nope", inventory=inv)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_app_is_started_and_checked_healthy(bundles, tmp_path: Path) -> None:
    site = DeviceSite.local(name="a", workdir=str(tmp_path / "w"))
    port = _free_port()
    events: list[str] = []
    out = edgeify.deploy(bundles["v1"], site, app=AppSettings("serve", port=port),
                         progress=lambda _d, e, _i: events.append(e))[0]
    try:
        report = out.unwrap()
        assert isinstance(report, AppReport) and report.port == port
        assert report.bundle_digest == _digest(bundles["v1"]) and report.health
        assert events[0] == "start" and "probed" in events and "started" in events and events[-1] == "done"
    finally:
        stop_app(site, "model", timeout=10)
