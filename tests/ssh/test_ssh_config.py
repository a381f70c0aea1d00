"""The devices file and ~/.ssh/config resolution, and the ways to authenticate (key file, passphrase, agent)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import sshlab
from edgeify.deploy.connect import endpoint_for, open_site, transport_for
from edgeify.deploy.inventory import Inventory, make_device
from edgeify.deploy.ssh import SSHTransport
from edgeify.errors import ConfigError, SSHAuthError
from sshtest import device_for, require

pytestmark = pytest.mark.ssh


def test_inventory_roundtrip_and_unset_fields(env) -> None:
    inv = Inventory(env.devices_file)
    inv.add(make_device("pi-01", host="192.168.1.50", user="pi", target="x86-avx2", tags=("pi", "lab", "pi")))
    inv.add(make_device("edge-box", target="x86-avx2", python="/opt/venv/bin/python -X utf8",
                        workdir="/data/edgeify"))
    inv.save()
    text = env.devices_file.read_text()
    assert "[devices.pi-01]" in text and "\nport =" not in text  # unset stays unset
    again = Inventory(env.devices_file)
    pi = again.get("pi-01")
    assert (pi.host, pi.port, pi.user, pi.tags) == ("192.168.1.50", None, "pi", ("pi", "lab"))
    box = again.get("edge-box")
    assert box.ssh_alias == "edge-box" and box.python_argv == ["/opt/venv/bin/python", "-X", "utf8"]
    assert [d.name for d in again.select("tag:lab")] == ["pi-01"]
    assert [d.name for d in again.select("all")] == ["edge-box", "pi-01"]
    with pytest.raises(ConfigError) as exc:
        again.get("pi-1")
    assert "did you mean 'pi-01'" in exc.value.hint
    with pytest.raises(ConfigError, match="no device has the tag"):
        again.select("tag:nope")
    with pytest.raises(ConfigError, match="already exists"):
        again.add(make_device("pi-01", target="x86-avx2"))
    assert not list(env.devices_file.parent.glob(".devices-*"))  # the atomic write left no temp file


@pytest.mark.parametrize("fields, problem", [
    ({"port": 70000}, "port"),
    ({"host": "pi@192.168.1.5"}, "host"),
    ({"tags": ["bad tag"]}, "tag"),
    ({"colour": "blue"}, "colour"),
    ({}, "target"),
])
def test_invalid_devices_file_is_a_config_error(env, fields, problem) -> None:
    env.devices_file.parent.mkdir(parents=True, exist_ok=True)
    lines = ["[devices.x]"] + [f"{k} = {v!r}".replace("'", '"') for k, v in fields.items()]
    if fields and "target" not in fields:
        lines.append('target = "x86-avx2"')
    env.devices_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as exc:
        Inventory(env.devices_file)
    assert exc.value.exit_code == 4 and problem in exc.value.message and str(env.devices_file) in exc.value.message


def test_ssh_config_host_alias_resolves_like_openssh(env, lab, workdir: Path) -> None:
    d = lab.devices["dev-b"]
    ssh = env.home / ".ssh"
    shutil.move(env.key, ssh / "lab_key")  # only the config names the key now
    kh = ssh / "lab_known_hosts"
    env.known_hosts.rename(kh)
    (ssh / "config").write_text(f"Host edge-b\n  HostName {d.address}\n  Port {d.port}\n  User root\n"
                                f"  IdentityFile ~/.ssh/lab_key\n  UserKnownHostsFile ~/.ssh/lab_known_hosts\n")
    dev = make_device("edge-b", python=os.sys.executable, workdir=str(workdir), target="x86-avx2")
    ep = endpoint_for(dev)
    assert (ep.hostname, ep.port, ep.user) == (d.address, d.port, "root")
    assert ep.key_files == (str(ssh / "lab_key"),) and ep.known_hosts_files == (str(kh),)
    with open_site(dev) as site:
        assert site.transport.run(["echo", "via alias"], timeout=20).stdout == "via alias\n"
    # explicit device fields win over the config file
    assert endpoint_for(make_device("edge-b", port=2222, user="pi", target="x86-avx2")).port == 2222
    # EDGEIFY_SSH_CONFIG replaces ~/.ssh/config
    other = env.tmp / "other_config"
    other.write_text("Host edge-b\n  HostName 127.0.0.99\n  Port 2200\n")
    os.environ["EDGEIFY_SSH_CONFIG"] = str(other)
    try:
        ep2 = endpoint_for(dev)
        assert (ep2.hostname, ep2.port) == ("127.0.0.99", 2200)
        other.write_text("Host edge-b\n  ProxyJump bastion\n")
        with pytest.raises(ConfigError, match="proxyjump"):
            endpoint_for(dev)
    finally:
        del os.environ["EDGEIFY_SSH_CONFIG"]


def _encrypt_key(src: Path, dst: Path, passphrase: str) -> None:
    from cryptography.hazmat.primitives import serialization

    priv = serialization.load_ssh_private_key(src.read_bytes(), password=None)
    dst.write_bytes(priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.BestAvailableEncryption(passphrase.encode())))
    dst.chmod(0o600)


def test_encrypted_key_needs_its_passphrase_which_is_never_shown(env, lab) -> None:
    d = lab.devices["dev-a"]
    secret = "correct horse battery staple"
    _encrypt_key(lab.client_key, env.key.with_name("enc_key"), secret)
    env.key.unlink()
    dev = device_for(d, key=str(env.key.with_name("enc_key")))
    with pytest.raises(SSHAuthError) as exc, transport_for(dev) as t:
        t.connect()
    assert exc.value.exit_code == 21 and "encrypted, no passphrase given" in exc.value.message
    with transport_for(dev, passphrase=secret) as t:
        assert t.run(["echo", "ok"], timeout=20).stdout == "ok\n"
        assert secret not in repr(t) and secret not in str(vars(t).get("endpoint"))
    with pytest.raises(SSHAuthError) as exc, transport_for(dev, passphrase="hunter2-not-it") as t:
        t.connect()
    assert "wrong passphrase" in exc.value.message and "hunter2" not in exc.value.message


def test_agent_authentication(env, lab) -> None:
    require("ssh-agent", "ssh-add")
    d = lab.devices["dev-c"]
    env.key.unlink()  # no key file anywhere: only the agent holds it
    sock = env.tmp / "agent.sock"
    agent = subprocess.run(["ssh-agent", "-a", str(sock), "-s"], capture_output=True, text=True, check=True)
    pid = int(agent.stdout.split("SSH_AGENT_PID=")[1].split(";")[0])
    try:
        os.environ["SSH_AUTH_SOCK"] = str(sock)
        subprocess.run(["ssh-add", str(lab.client_key)], capture_output=True, check=True,
                       env={**os.environ, "SSH_AUTH_SOCK": str(sock)})
        with SSHTransport(d.address, port=d.port, user="root") as t:
            assert t.run(["echo", "agent"], timeout=20).stdout == "agent\n"
        with pytest.raises(SSHAuthError, match="no keys"), \
                SSHTransport(d.address, port=d.port, user="root", use_agent=False) as t:
            t.connect()
    finally:
        os.environ.pop("SSH_AUTH_SOCK", None)
        os.kill(pid, signal.SIGTERM)


def test_lab_devices_are_separate(lab) -> None:
    addrs = {d.address for d in lab.devices.values()}
    dirs = {d.workdir for d in lab.devices.values()}
    assert len(addrs) == len(dirs) == len(lab.devices) >= 3
    assert all(isinstance(d, sshlab.Sshd) for d in lab.devices.values())
