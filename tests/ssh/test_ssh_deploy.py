"""Deploy, redeploy, rollback, target checks, fleets and the CLI, against real sshd devices."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import sshlab
from edgeify.deploy.connect import open_site
from edgeify.deploy.deployer import deploy, rollback, runtime_package, status
from edgeify.deploy.inventory import Inventory
from edgeify.errors import TargetError
from sshtest import device_for, run_cli

pytestmark = pytest.mark.ssh


def _digest(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["bundle_digest"]


def test_deploy_redeploy_rollback(env, lab, workdir: Path, bundles) -> None:
    dev = device_for(lab.devices["dev-a"], workdir=workdir)
    v1, v2 = bundles["v1"], bundles["v2"]
    with open_site(dev) as site:
        r = deploy(site, v1, device=dev)
        assert r.status == "installed" and r.runtime_uploaded
        assert set(r.uploaded_files) == {"model.onnx", "manifest.json", "report.md"}
        assert sshlab.installed(workdir, "model") == {**sshlab.installed(workdir, "model"), "digest": _digest(v1),
                                                      "intact": True}
        assert (workdir / "runtime" / runtime_package().file).is_file()

        again = deploy(site, v1, device=dev)  # unchanged: one device call, nothing sent
        assert again.status == "unchanged" and again.uploaded_bytes == 0 and not again.runtime_uploaded
        assert again.timings_s["total"] < 2.0

        r2 = deploy(site, v2, device=dev)
        assert r2.status == "installed" and "model.onnx" in r2.uploaded_files and not r2.runtime_uploaded
        assert sshlab.installed(workdir, "model")["digest"] == _digest(v2)
        assert sshlab.installed(workdir, "model", "previous")["digest"] == _digest(v1)

        back = rollback(site, "model")
        assert back["current"]["digest"] == _digest(v1) and back["previous"]["digest"] == _digest(v2)
        assert sshlab.installed(workdir, "model") == {**sshlab.installed(workdir, "model"), "digest": _digest(v1),
                                                      "intact": True}

        r3 = deploy(site, v2, device=dev)  # v2 is still on the device as `previous`: nothing to send
        assert r3.status == "installed" and r3.uploaded_bytes == 0 and r3.reused_files == 3
        assert sshlab.installed(workdir, "model")["digest"] == _digest(v2)
        st = status(site)
        assert st["bundles"]["model"]["current"]["digest"] == _digest(v2)
    versions = sorted(p.name for p in (workdir / "bundles" / "model").iterdir() if p.name.startswith("v-"))
    assert len(versions) == 2, versions  # current + previous; older versions are removed
    assert not any((workdir / "staging").iterdir())


def test_only_changed_files_are_sent(env, lab, workdir: Path, bundles, tmp_path: Path) -> None:
    dev = device_for(lab.devices["dev-b"], workdir=workdir)
    with open_site(dev) as site:
        deploy(site, bundles["v2"], device=dev)
        v3 = sshlab.make_bundle(tmp_path / "v3" / "model", seed=2, extra_files={"labels.txt": b"a\nb\n"})
        r = deploy(site, v3, device=dev)
    assert r.status == "installed"
    assert "model.onnx" not in r.uploaded_files and "labels.txt" in r.uploaded_files
    assert r.reused_files >= 1
    assert sshlab.installed(workdir, "model") == {**sshlab.installed(workdir, "model"), "digest": _digest(v3),
                                                  "intact": True}


def test_target_mismatch_is_refused_unless_forced(env, lab, workdir: Path, bundles) -> None:
    dev = device_for(lab.devices["dev-a"], workdir=workdir)  # an x86-avx2 device
    with open_site(dev) as site:
        with pytest.raises(TargetError) as exc:
            deploy(site, bundles["avx512"], device=dev)
        assert exc.value.exit_code == 3
        assert "x86-avx512" in exc.value.message and "--force" in exc.value.hint
        assert not (workdir / "bundles").exists()  # refused before touching the device
        r = deploy(site, bundles["avx512"], device=dev, force=True)
    assert r.status == "installed" and r.warnings


def test_cli_devices_deploy_rollback(env, lab, workdir: Path, bundles) -> None:
    d = lab.devices["dev-c"]
    add = run_cli("devices", "add", "pi-01", "--host", d.address, "--port", str(d.port), "--user", "root",
                  "--python", os.sys.executable, "--workdir", str(workdir), "--target", "x86-avx2", "--tag", "lab",
                  "--tag", "x86")
    assert add.returncode == 0, add.stderr
    dup = run_cli("devices", "add", "pi-01", "--host", d.address, "--target", "x86-avx2")
    assert dup.returncode == 4 and "--replace" in dup.stderr
    bad = run_cli("devices", "add", "pi-02", "--host", d.address, "--target", "x86-avx3")
    assert bad.returncode == 3 and "did you mean" in bad.stderr
    inv = Inventory(env.devices_file)
    assert inv.get("pi-01").tags == ("lab", "x86") and inv.get("pi-01").port == d.port

    lst = run_cli("devices", "list", "--format", "json")
    assert [x["name"] for x in json.loads(lst.stdout)["devices"]] == ["pi-01"]
    show = run_cli("devices", "show", "pi-01", "--format", "json")
    assert json.loads(show.stdout)["resolved"]["hostname"] == d.address

    chk = run_cli("devices", "check", "pi-01", "--format", "json")
    assert chk.returncode == 0, chk.stderr
    fp = json.loads(chk.stdout)["devices"][0]["result"]
    assert fp["fingerprint"]["arch"] == "x86_64" and "onnxruntime" in fp["fingerprint"]["engines"]
    assert fp["fit"]["arch_ok"] is True

    dep = run_cli("deploy", str(bundles["v1"]), "--device", "pi-01", "--format", "json")
    assert dep.returncode == 0, dep.stderr
    assert json.loads(dep.stdout)["status"] == "installed"
    dep2 = run_cli("deploy", str(bundles["v2"]), "--device", "pi-01")
    assert dep2.returncode == 0 and "installed" in dep2.stdout
    rb = run_cli("rollback", "model", "--device", "pi-01", "--format", "json")
    assert rb.returncode == 0, rb.stderr
    assert sshlab.installed(workdir, "model")["digest"] == _digest(bundles["v1"])
    st = run_cli("devices", "status", "pi-01", "--format", "json")
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout)["bundles"]["model"]["current"]["digest"] == _digest(bundles["v1"])
    rb_missing = run_cli("rollback", "nothing-here", "--device", "pi-01")
    assert rb_missing.returncode == 12 and "not installed" in rb_missing.stderr

    rm = run_cli("devices", "remove", "pi-01")
    assert rm.returncode == 0 and "pi-01" not in Inventory(env.devices_file)


def test_fleet_deploy_gives_one_outcome_per_device(env, lab, tmp_path: Path, bundles) -> None:
    inv = Inventory(env.devices_file)
    for name in ("dev-a", "dev-b", "dev-c"):
        inv.add(device_for(lab.devices[name], workdir=tmp_path / name, tags=("lab",)))
    closed = sshlab.free_port("127.0.0.5")
    from edgeify.deploy.inventory import make_device

    inv.add(make_device("dev-off", host="127.0.0.5", port=closed, user="root", target="x86-avx2", tags=("lab",)))
    inv.save()
    r = run_cli("deploy", str(bundles["v1"]), "--devices", "tag:lab", "--format", "json")
    assert r.returncode == 20, r.stderr  # the failing device's code; the others still got the bundle
    outcomes = {o["device"]: o for o in json.loads(r.stdout)["devices"]}
    assert [n for n, o in outcomes.items() if o["ok"]] == ["dev-a", "dev-b", "dev-c"]
    assert outcomes["dev-off"]["error"]["type"] == "UnreachableError"
    for name in ("dev-a", "dev-b", "dev-c"):
        assert sshlab.installed(tmp_path / name, "model")["digest"] == _digest(bundles["v1"])


def test_device_without_python_gets_a_clear_message(env, lab, workdir: Path, bundles) -> None:
    from edgeify.errors import RemoteCommandError

    dev = device_for(lab.devices["dev-a"], workdir=workdir, python="/nonexistent/bin/python3")
    with pytest.raises(RemoteCommandError) as exc, open_site(dev) as site:
        deploy(site, bundles["v1"], device=dev)
    assert exc.value.exit_code == 25 and "/nonexistent/bin/python3" in exc.value.message
    assert "--python" in exc.value.hint
