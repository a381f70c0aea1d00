"""``edgeify.deploy(bundle, where)`` against real sshd devices: a tag selector from a devices file, one typed
outcome per device in name order (an unreachable device is its own UnreachableError, the others get the bundle),
upload progress per device, a list of names in the order given, and a target mismatch refused per device unless
forced. (The quick-tier test of the same API over local sites: tests/test_deploy_api.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import edgeify
import pytest
import sshlab
from edgeify.deploy.deployer import DeployReport
from edgeify.deploy.inventory import Inventory, make_device
from edgeify.errors import TargetError, UnreachableError
from sshtest import device_for

pytestmark = pytest.mark.ssh


def _digest(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["bundle_digest"]


def test_deploy_api_on_a_tagged_fleet_with_an_unreachable_device(env, lab, tmp_path: Path, bundles) -> None:
    inv = Inventory(env.devices_file)
    for name in ("dev-a", "dev-b", "dev-c"):
        inv.add(device_for(lab.devices[name], workdir=tmp_path / name, tags=("lab",)))
    inv.add(make_device("dev-off", host="127.0.0.5", port=sshlab.free_port("127.0.0.5"), user="root",
                        target="x86-avx2", tags=("lab",)))
    inv.save()
    uploads: dict[str, tuple[int, int]] = {}
    events: dict[str, list[str]] = {}

    def progress(device: str, event: str, info: dict) -> None:
        events.setdefault(device, []).append(event)
        if event == "upload":
            uploads[device] = (info["done"], info["total"])

    outcomes = edgeify.deploy(bundles["v1"], "tag:lab", parallelism=2, progress=progress)
    assert [o.device for o in outcomes] == ["dev-a", "dev-b", "dev-c", "dev-off"]
    for o in outcomes[:3]:
        assert o.ok and isinstance(o.result, DeployReport) and o.result.status == "installed", o.error
        assert sshlab.installed(tmp_path / o.device, "model") == {
            **sshlab.installed(tmp_path / o.device, "model"), "digest": _digest(bundles["v1"]), "intact": True}
        done, total = uploads[o.device]
        assert done == total > 0
        assert events[o.device][0] == "start" and events[o.device][-1] == "done"
    off = outcomes[3]
    assert isinstance(off.error, UnreachableError) and off.exit_code == 20 and events["dev-off"][-1] == "failed"

    names = edgeify.deploy(bundles["v2"], ["dev-c", "dev-a"], inventory=env.devices_file)
    assert [o.device for o in names] == ["dev-c", "dev-a"]
    for o in names:
        assert o.unwrap().status == "installed"
        assert sshlab.installed(tmp_path / o.device, "model", "previous")["digest"] == _digest(bundles["v1"])
    assert sshlab.installed(tmp_path / "dev-b", "model")["digest"] == _digest(bundles["v1"])  # not selected


def test_a_target_mismatch_is_refused_per_device_unless_forced(env, lab, tmp_path: Path, bundles) -> None:
    dev = device_for(lab.devices["dev-b"], workdir=tmp_path / "w")  # an x86-avx2 device
    refused = edgeify.deploy(bundles["avx512"], dev)[0]
    assert isinstance(refused.error, TargetError) and refused.exit_code == 3
    assert not (tmp_path / "w" / "bundles").exists()
    forced = edgeify.deploy(bundles["avx512"], dev, force=True)[0].unwrap()
    assert forced.status == "installed" and forced.warnings
