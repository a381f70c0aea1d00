"""The fault matrix: each failure has its own exit code and error class, fails within a bound, and the device's
previous good bundle stays installed and intact (checked by hashing the files in the device's directory).

Set EDGEIFY_FAULT_MATRIX=path.json to write the table (case, exit code, seconds to fail, what was verified).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sshlab
from edgeify.bench import BenchSettings, bench
from edgeify.deploy.connect import open_site
from edgeify.deploy.deployer import deploy
from edgeify.errors import (
    BundleError,
    EngineMissingError,
    HostKeyChangedError,
    HostKeyUnknownError,
    RemoteDiskError,
    SessionLostError,
    SSHAuthError,
    TransportLostError,
    UnreachableError,
)
from edgeify.results import open_store
from sshtest import QUICK_PROTOCOL, Timer, device_for, require

pytestmark = pytest.mark.ssh


def _digest(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["bundle_digest"]


def _install_good(dev: Any, bundle: Path, workdir: Path) -> dict[str, Any]:
    with open_site(dev) as site:
        deploy(site, bundle, device=dev)
    good = sshlab.installed(workdir, "model")
    assert good is not None and good["intact"] and good["digest"] == _digest(bundle)
    return good


def _assert_intact(workdir: Path, good: dict[str, Any], which: str = "current") -> str:
    now = sshlab.installed(workdir, "model", which)
    assert now == good, f"the device's {which} bundle changed: {now} != {good}"
    return f"{which} bundle {good['digest'][:12]} still installed, sha256 of every file re-checked"


@pytest.fixture()
def own_sshd(lab, env, tmp_path: Path) -> Iterator[sshlab.Sshd]:
    """A device of the test's own (faults kill or firewall it), on 127.0.0.7, in known_hosts."""
    d = sshlab.Sshd("own", "127.0.0.7", tmp_path / "own-sshd", lab.client_pub).start()
    with env.known_hosts.open("a") as f:
        f.write(d.known_hosts_line() + "\n")
    try:
        yield d
    finally:
        d.stop()


def test_unknown_host_key(env, lab, workdir: Path, bundles, fault_matrix) -> None:
    dev = device_for(lab.devices["dev-a"], workdir=workdir)
    good = _install_good(dev, bundles["v1"], workdir)
    env.known_hosts.write_text("")
    with Timer() as t, pytest.raises(HostKeyUnknownError) as exc, open_site(dev) as site:
        deploy(site, bundles["v2"], device=dev)
    assert exc.value.exit_code == 22 and t.seconds < 5
    assert "SHA256:" in exc.value.message and "--trust-new-host-key" in exc.value.hint
    assert env.known_hosts.read_text() == ""  # nothing is trusted without the flag
    fault_matrix.record("unknown host key", exc.value, t.seconds, _assert_intact(workdir, good))
    with open_site(dev, trust_new_host_key=True) as site:  # trust on first use, explicitly
        site.transport.connect()
    assert lab.devices["dev-a"].host_key_line in env.known_hosts.read_text()
    with open_site(dev) as site:  # and from now on strictly
        site.transport.connect()


def test_changed_host_key(env, lab, workdir: Path, bundles, fault_matrix, tmp_path: Path) -> None:
    d = lab.devices["dev-b"]
    dev = device_for(d, workdir=workdir)
    good = _install_good(dev, bundles["v1"], workdir)
    impostor = sshlab.write_ed25519_key(tmp_path / "impostor").split(" edgeify-test")[0]
    env.known_hosts.write_text(f"{d.known_hosts_name} {impostor}\n")
    for trust in (False, True):  # --trust-new-host-key never replaces a changed key
        with Timer() as t, pytest.raises(HostKeyChangedError) as exc, open_site(dev, trust_new_host_key=trust) as s:
            deploy(s, bundles["v2"], device=dev)
        assert exc.value.exit_code == 23 and t.seconds < 5
        assert "HOST KEY CHANGED" in exc.value.message and "ssh-keygen -R" in exc.value.hint
    assert env.known_hosts.read_text() == f"{d.known_hosts_name} {impostor}\n"
    fault_matrix.record("changed host key", exc.value, t.seconds, _assert_intact(workdir, good))


def test_wrong_key_is_an_auth_failure(env, lab, workdir: Path, bundles, fault_matrix) -> None:
    dev = device_for(lab.devices["dev-c"], workdir=workdir)
    good = _install_good(dev, bundles["v1"], workdir)
    sshlab.write_ed25519_key(env.key, "not-authorized")
    with Timer() as t, pytest.raises(SSHAuthError) as exc, open_site(dev) as site:
        deploy(site, bundles["v2"], device=dev)
    assert exc.value.exit_code == 21 and t.seconds < 5
    assert str(env.key) in exc.value.message and "ssh-copy-id" in exc.value.hint
    fault_matrix.record("wrong key (auth failure)", exc.value, t.seconds, _assert_intact(workdir, good))


def test_unreachable_device(env, own_sshd: sshlab.Sshd, workdir: Path, bundles, fault_matrix) -> None:
    dev = device_for(own_sshd, workdir=workdir)
    good = _install_good(dev, bundles["v1"], workdir)
    own_sshd.stop()  # the device is off: its port is closed
    with Timer() as t, pytest.raises(UnreachableError) as exc, open_site(dev) as site:
        deploy(site, bundles["v2"], device=dev)
    assert exc.value.exit_code == 20 and t.seconds < 3
    assert f"127.0.0.7:{own_sshd.port}" in exc.value.message
    fault_matrix.record("unreachable (closed port)", exc.value, t.seconds, _assert_intact(workdir, good))


@contextlib.contextmanager
def _netns_device(env, lab, tmp_path: Path, name: str) -> Iterator[tuple[sshlab.NetnsLink, sshlab.Sshd]]:
    """A real sshd inside a fresh network namespace (its host key known), behind a veth the test can cut."""
    require("sshd", "ip", root=True)
    link = sshlab.NetnsLink(name).up()
    sshd = None
    try:
        sshd = sshlab.Sshd(f"netns-{name}", link.ns_addr, tmp_path / "ns-dev", lab.client_pub, netns=link.ns).start()
        with env.known_hosts.open("a") as f:
            f.write(sshd.known_hosts_line() + "\n")
        yield link, sshd
    finally:
        if sshd is not None:
            sshd.stop()
        link.down_all()


def test_link_cut_mid_upload(env, lab, tmp_path: Path, bundles, fault_matrix) -> None:
    """A device in a network namespace; its veth goes down during the transfer (sshd keeps running)."""
    with _netns_device(env, lab, tmp_path, "cut") as (link, sshd):
        workdir = tmp_path / "ns-work"
        dev = device_for(sshd, workdir=workdir)
        good = _install_good(dev, bundles["v1"], workdir)
        cut_at: list[float] = []

        def cut(done: int, total: int) -> None:
            if not cut_at and done >= total // 4:
                link.cut()
                cut_at.append(time.monotonic())

        with pytest.raises(TransportLostError) as exc, open_site(dev) as site:
            deploy(site, bundles["big"], device=dev, on_progress=cut)
        seconds = time.monotonic() - cut_at[0]
        assert cut_at and exc.value.exit_code == 24
        assert seconds < 15, f"a cut link took {seconds:.1f} s to notice"
        link.restore()
        intact = _assert_intact(workdir, good)
        assert sshlab.installed(workdir, "model", "previous") is None  # nothing half-installed anywhere
        fault_matrix.record("link cut mid-upload (veth down)", exc.value, seconds, intact)
        with open_site(dev) as site:  # once the link is back, the same deploy goes through
            r = deploy(site, bundles["big"], device=dev)
        assert r.status == "installed" and sshlab.installed(workdir, "model")["digest"] == _digest(bundles["big"])


def test_link_cut_during_authentication_is_a_lost_link_not_an_auth_failure(env, lab, tmp_path: Path, bundles,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The veth goes down right after the handshake, before the key is offered (a rollout hit this in a dry run:
    paramiko's "No route to host" during authentication was reported as exit 21, so the rollout failed the device
    and rolled its wave back instead of pausing on an unreachable device). A network failure there is exit 24."""
    from edgeify.deploy.ssh import SSHTransport

    with _netns_device(env, lab, tmp_path, "auth") as (link, sshd):
        dev = device_for(sshd, workdir=tmp_path / "ns-work")
        checked = SSHTransport._check_host_key

        def check_then_cut(self, key, known) -> None:  # our own step between handshake and authentication
            checked(self, key, known)
            link.cut()

        monkeypatch.setattr(SSHTransport, "_check_host_key", check_then_cut)
        with pytest.raises(TransportLostError) as exc, open_site(dev) as site:
            deploy(site, bundles["v1"], device=dev)
        assert exc.value.exit_code == 24 and "during authentication" in exc.value.message
        assert not isinstance(exc.value, SSHAuthError)
        monkeypatch.setattr(SSHTransport, "_check_host_key", checked)
        link.restore()
        with open_site(dev) as site:  # the same device and key authenticate once the link is back
            assert deploy(site, bundles["v1"], device=dev).status == "installed"


def test_sshd_killed_mid_benchmark(env, own_sshd: sshlab.Sshd, workdir: Path, bundles, fault_matrix) -> None:
    dev = device_for(own_sshd, name="doomed", workdir=workdir)
    good = _install_good(dev, bundles["v1"], workdir)
    errors: list[BaseException] = []
    failed_at: list[float] = []

    def bench() -> None:
        try:
            _bench_one(dev, bundles["v1"], {**QUICK_PROTOCOL, "runs": 1, "min_duration_s": 20.0,
                                              "max_duration_s": 30.0})
        except BaseException as exc:
            failed_at.append(time.monotonic())
            errors.append(exc)

    th = threading.Thread(target=bench)
    th.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(
            "edgeify_runtime.bench" in _cmdline(p) for p in own_sshd.processes()):
        time.sleep(0.05)
    time.sleep(0.5)  # the agent is measuring
    own_sshd.kill_all()
    th.join(30)
    assert not th.is_alive() and len(errors) == 1
    seconds = failed_at[0] - own_sshd.killed_at  # from SIGKILL to the error
    exc = errors[0]
    assert isinstance(exc, SessionLostError) and exc.exit_code == 27, exc
    assert seconds < 10
    assert _stored(env, "doomed") == []  # nothing half-recorded
    fault_matrix.record("sshd killed mid-benchmark", exc, seconds, _assert_intact(workdir, good))


def _stored(env: Any, device: str) -> list[Any]:
    """The results stored for ``device`` (none when nothing created the store yet)."""
    if not Path(env.results_db).exists():
        return []
    with open_store(env.results_db) as store:
        return store.query(device=device, samples=False)


def _cmdline(p: Any) -> str:
    try:
        return " ".join(p.cmdline())
    except Exception:  # exited or a zombie meanwhile
        return ""


def test_device_without_the_engine(env, lab, workdir: Path, bundles, fault_matrix, tmp_path: Path) -> None:
    good = _install_good(device_for(lab.devices["dev-a"], workdir=workdir), bundles["v1"], workdir)
    py = sshlab.python_without_engines(tmp_path)
    dev = device_for(lab.devices["dev-a"], name="no-engine", workdir=workdir, python=py)
    with Timer() as t, pytest.raises(EngineMissingError) as exc:
        _bench_one(dev, bundles["v1"], QUICK_PROTOCOL)
    assert exc.value.exit_code == 11 and t.seconds < 20
    assert "no-engine" in exc.value.message and "pip install onnxruntime" in exc.value.message
    assert _stored(env, "no-engine") == []
    fault_matrix.record("device without the engine", exc.value, t.seconds, _assert_intact(workdir, good))


def test_corrupted_file_on_the_device(env, lab, workdir: Path, bundles, fault_matrix) -> None:
    dev = device_for(lab.devices["dev-b"], workdir=workdir)
    good_v1 = _install_good(dev, bundles["v1"], workdir)
    _install_good(dev, bundles["v2"], workdir)
    model = Path(sshlab.installed(workdir, "model")["dir"]) / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content: bit rot
    model.write_bytes(bytes(data))
    with Timer() as t, pytest.raises(BundleError) as exc:
        _bench_one(dev, bundles["v2"], QUICK_PROTOCOL)
    assert exc.value.exit_code == 12 and t.seconds < 20
    assert "sha256" in exc.value.message and "model.onnx" in exc.value.message
    intact = _assert_intact(workdir, good_v1, "previous")
    fault_matrix.record("corrupted file on the device (hash mismatch)", exc.value, t.seconds, intact)
    with open_site(dev) as site:  # `edgeify deploy` hashes what is there and repairs it
        r = deploy(site, bundles["v2"], device=dev)
    assert r.status == "repaired" and r.uploaded_files == ["model.onnx"]
    assert sshlab.installed(workdir, "model")["intact"]
    assert _bench_one(dev, bundles["v2"], QUICK_PROTOCOL)["latency_ms"]["p50"] > 0
    _assert_intact(workdir, good_v1, "previous")  # a repair keeps the older previous version


def test_file_corrupted_between_upload_and_install_is_not_installed(env, lab, workdir: Path, bundles) -> None:
    dev = device_for(lab.devices["dev-c"], workdir=workdir)
    good = _install_good(dev, bundles["v1"], workdir)

    def tamper(phase: str, info: dict[str, Any]) -> None:
        if phase == "transferred":
            staged = Path(info["staging"]) / "model.onnx"
            staged.write_bytes(b"\0" + staged.read_bytes()[1:])

    with pytest.raises(BundleError) as exc, open_site(dev) as site:
        deploy(site, bundles["v2"], device=dev, on_phase=tamper)
    assert exc.value.exit_code == 12 and "model.onnx: sha256 mismatch" in exc.value.message
    assert "nothing was installed" in exc.value.message
    _assert_intact(workdir, good)
    assert not any((workdir / "staging").iterdir())


def test_disk_full(env, lab, tmp_path: Path, bundles, fault_matrix) -> None:
    require("sshd", root=True)
    workdir = tmp_path / "tiny-disk"
    sshlab.mount_tmpfs(workdir, "2m")
    try:
        dev = device_for(lab.devices["dev-a"], workdir=workdir)
        good = _install_good(dev, bundles["v1"], workdir)
        free = sshlab.disk_free(workdir)
        with Timer() as t, pytest.raises(RemoteDiskError) as exc, open_site(dev) as site:
            deploy(site, bundles["big"], device=dev)  # 4 MB into a 2 MB disk: refused before sending
        assert exc.value.exit_code == 26 and t.seconds < 5 and "not enough space" in exc.value.message
        fault_matrix.record("disk full (checked before upload)", exc.value, t.seconds, _assert_intact(workdir, good))
        with Timer() as t, pytest.raises(RemoteDiskError) as exc, open_site(dev) as site:
            deploy(site, bundles["big"], device=dev, check_space=False)  # ENOSPC in the middle of the upload
        assert exc.value.exit_code == 26 and t.seconds < 10 and "full" in exc.value.message
        assert not any((workdir / "staging").iterdir())  # the partial upload was removed ...
        assert sshlab.disk_free(workdir) == free  # ... and its space given back
        fault_matrix.record("disk full (ENOSPC mid-upload)", exc.value, t.seconds, _assert_intact(workdir, good))
    finally:
        sshlab.umount(workdir)


def test_unwritable_work_directory(env, lab, workdir: Path, bundles, fault_matrix) -> None:
    require("sshd", root=True)
    dev = device_for(lab.devices["dev-b"], workdir=workdir)
    good = _install_good(dev, bundles["v1"], workdir)
    sshlab.bind_readonly(workdir)
    try:
        with Timer() as t, pytest.raises(RemoteDiskError) as exc, open_site(dev) as site:
            deploy(site, bundles["v2"], device=dev)
        assert exc.value.exit_code == 28 and t.seconds < 5 and "not writable" in exc.value.message
        assert "--workdir" in exc.value.hint
        fault_matrix.record("unwritable work directory (read-only)", exc.value, t.seconds,
                            _assert_intact(workdir, good))
    finally:
        sshlab.umount(workdir)


def _bench_one(dev: Any, bundle: Any, proto: dict[str, Any]) -> Any:
    """One device through the bench orchestrator: its BenchResult as the JSON dict, or its error raised."""
    return bench(bundle, dev, settings=BenchSettings(**proto))[0].unwrap().to_dict(samples=True)
