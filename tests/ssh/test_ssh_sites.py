"""Local is just another site: the same bundle through the local site and through a loopback sshd site gives
BenchResult records of the same type with the same fields, from the same agent command line (issue 10)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from edgeify.bench import AGENT_MODULE, BenchSettings, bench
from edgeify.deploy.connect import open_site
from edgeify.deploy.local import LocalTransport
from edgeify.deploy.site import DeviceSite
from edgeify.deploy.site_exec import module_command
from edgeify.results import open_store
from edgeify_runtime.result import BenchResult
from sshtest import QUICK_PROTOCOL, device_for

pytestmark = pytest.mark.ssh


def _shape(value: object) -> object:
    """The field structure of a record: dataclass/dict keys, recursively (values ignored)."""
    if dataclasses.is_dataclass(value):
        return {f.name: _shape(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k not in ("deploy",)}
    return type(value).__name__ if value is not None else None


def test_local_and_ssh_sites_give_the_same_record(env, lab, workdir: Path, bundles) -> None:
    dev = device_for(lab.devices["dev-a"], name="site-ssh", workdir=workdir)
    settings = BenchSettings(**QUICK_PROTOCOL)
    local = bench(bundles["v1"], "local", settings=settings)[0].unwrap()
    remote = bench(bundles["v1"], dev, settings=settings)[0].unwrap()

    assert type(local) is type(remote) is BenchResult
    assert local.to_dict().keys() == remote.to_dict().keys()
    for part in ("engine", "latency_ms", "protocol"):
        assert _shape(getattr(local, part)) == _shape(getattr(remote, part)), part
    assert local.fingerprint.keys() == remote.fingerprint.keys()
    assert (local.device, remote.device) == ("local", "site-ssh")
    assert local.bundle_digest == remote.bundle_digest and local.agent_version == remote.agent_version
    assert local.protocol.threads == remote.protocol.threads == 1
    assert local.deploy is None and remote.deploy is not None  # only the device needed a deploy
    assert local.bundle == str(bundles["v1"].resolve()) and remote.bundle.startswith(str(workdir))

    # both stored as the same record, read back as the same type
    with open_store() as store:
        back = [store.get(r.result_id) for r in (local, remote)]
    assert [type(b) for b in back] == [BenchResult, BenchResult]
    assert back[0].to_dict().keys() == back[1].to_dict().keys()
    assert [b.device for b in back] == ["local", "site-ssh"]
    assert len(back[1].samples_ms) == remote.protocol.runs_done


def test_the_local_site_runs_the_ssh_command_line(env, lab, workdir: Path) -> None:
    """Same argv (deadline wrapper, python -m module) on both sites; only the transport differs."""
    local = DeviceSite.local()
    assert isinstance(local.transport, LocalTransport) and local.is_local
    with open_site(device_for(lab.devices["dev-b"], workdir=workdir)) as remote:
        assert not remote.is_local
        # the lab device's python is this interpreter, so the two command lines must be identical
        assert module_command(local, AGENT_MODULE, (), 60) == module_command(remote, AGENT_MODULE, (), 60)
