"""One contract, two transports: every test here runs against LocalTransport and SSHTransport (a real sshd)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sshlab
from edgeify.deploy.local import LocalTransport
from edgeify.deploy.ssh import SSHTransport
from edgeify.deploy.transport import Transport
from edgeify.errors import RemoteCommandError, RemoteDiskError, UnreachableError
from sshtest import require

pytestmark = pytest.mark.ssh


@pytest.fixture(params=["local", "ssh"])
def transport(request: pytest.FixtureRequest, env, lab) -> Iterator[Transport]:
    if request.param == "local":
        t: Transport = LocalTransport()
    else:
        d = lab.devices["dev-a"]
        t = SSHTransport(d.address, port=d.port, user="root")
    with t:
        yield t


WEIRD = ["a b", "it's", '"dq"', "$HOME", "`id`", "; rm -rf /nonexistent", "*", "\\", "tab\there", "ünï", ""]


def test_run_passes_arguments_literally(transport: Transport) -> None:
    import sys

    rc, out, err = transport.run([sys.executable, "-c", "import sys, json; print(json.dumps(sys.argv[1:]))", *WEIRD],
                                 timeout=30)
    import json

    assert rc == 0, err
    assert json.loads(out) == WEIRD


def test_run_stdin_stdout_stderr_and_exit_status(transport: Transport) -> None:
    rc, out, err = transport.run(["sh", "-c", "cat; echo oops >&2; exit 3"], input="hello\n", timeout=30)
    assert (rc, out, err) == (3, "hello\n", "oops\n")
    rc, out, _ = transport.run(["sh", "-c", "wc -c"], input=b"\x00" * 300_000, timeout=30)
    assert (rc, out.strip()) == (0, "300000")


def test_run_env_and_cwd(transport: Transport, tmp_path: Path) -> None:
    rc, out, _ = transport.run(["sh", "-c", 'echo "$EDGEIFY_X|$(pwd)"'], env={"EDGEIFY_X": "a 'b' $c"},
                               cwd=str(tmp_path), timeout=30)
    assert rc == 0
    assert out.strip() == f"a 'b' $c|{tmp_path}"
    with pytest.raises(ValueError):
        transport.run(["true"], env={"BAD NAME": "x"}, timeout=5)


def test_missing_command_is_127(transport: Transport) -> None:
    rc, _, err = transport.run(["edgeify-no-such-command-xyz"], timeout=30)
    assert rc == 127
    assert "edgeify-no-such-command-xyz" in err


def test_command_killed_by_a_signal_has_a_negative_status(transport: Transport) -> None:
    rc, _, _ = transport.run(["sh", "-c", "echo started; kill -9 $$"], timeout=30)
    assert rc < 0


def test_deadline_is_enforced(transport: Transport) -> None:
    t0 = time.monotonic()
    with pytest.raises(RemoteCommandError) as exc:
        transport.run(["sleep", "30"], timeout=1.0)
    assert time.monotonic() - t0 < 3.0
    assert exc.value.exit_code == 25
    assert "deadline" in exc.value.message
    rc, out, _ = transport.run(["echo", "still usable"], timeout=10)  # the transport survives a timeout
    assert (rc, out) == (0, "still usable\n")


@pytest.mark.parametrize("size", [0, 1, 1_000_003])
def test_put_get_roundtrip(transport: Transport, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    src, remote, back = tmp_path / "src.bin", tmp_path / "remote.bin", tmp_path / "back.bin"
    src.write_bytes(data)
    remote.write_bytes(b"old content that must be replaced entirely" * 100)
    seen: list[tuple[int, int]] = []
    transport.put(str(src), str(remote), callback=lambda d, t: seen.append((d, t)))
    assert remote.read_bytes() == data
    assert seen and seen[-1] == (size, size)
    transport.get(str(remote), str(back))
    assert back.read_bytes() == data


def test_put_into_missing_directory_and_get_missing_file(transport: Transport, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    with pytest.raises(RemoteCommandError):
        transport.put(str(src), str(tmp_path / "no" / "such" / "dir" / "f"))
    with pytest.raises(RemoteCommandError):
        transport.get(str(tmp_path / "missing"), str(tmp_path / "out"))


def test_put_to_read_only_place_is_a_disk_error(transport: Transport, tmp_path: Path) -> None:
    require("sshd", root=True)
    src = tmp_path / "f"
    src.write_bytes(b"x")
    ro = tmp_path / "ro"
    ro.mkdir()
    sshlab.bind_readonly(ro)
    try:
        with pytest.raises(RemoteDiskError) as exc:
            transport.put(str(src), str(ro / "f"))
    finally:
        sshlab.umount(ro)
    assert exc.value.exit_code == 28  # RemoteUnwritableError, a RemoteDiskError
    assert "not writable" in exc.value.message


def test_close_is_idempotent_and_reconnects(transport: Transport) -> None:
    transport.close()
    transport.close()
    assert transport.run(["echo", "again"], timeout=30).stdout == "again\n"


def test_ssh_connect_is_lazy(env) -> None:
    t = SSHTransport("127.0.0.9", port=1, user="root", connect_timeout=2)  # nothing listens there
    with pytest.raises(UnreachableError):
        t.run(["true"], timeout=5)


def test_command_line_quotes_everything() -> None:
    line = SSHTransport.command_line(["echo", "a b", "$(x)"], env={"K": "v w"}, cwd="/tmp/a b")
    assert line == "cd '/tmp/a b' && export K='v w' && exec echo 'a b' '$(x)'"
