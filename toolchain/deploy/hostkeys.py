"""SSH host keys and the TCP socket under an SSH connection: fingerprints, known_hosts reading and appending,
a socket with keepalive and ``TCP_USER_TIMEOUT`` (a cut link fails in seconds, not ~15 minutes)."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, UnreachableError

if TYPE_CHECKING:  # paramiko is imported when a connection is made, not when edgeify starts
    import paramiko

#: milliseconds of unacknowledged data after which the kernel drops the connection (a cut link)
TCP_USER_TIMEOUT_MS = 5000


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def key_kind(key: paramiko.PKey) -> str:
    name = key.get_name()
    return {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA"}.get(name, name.upper())


def tcp_socket(host: str, port: int, *, timeout: float, user_timeout_ms: int = TCP_USER_TIMEOUT_MS,
               label: str = "") -> socket.socket:
    """A connected TCP socket with keepalive and TCP_USER_TIMEOUT; UnreachableError when it cannot connect."""
    where = f"{label} ({host}:{port})" if label and label != f"{host}:{port}" else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnreachableError(f"{where}: cannot resolve {host!r}: {exc.strerror}",
                               hint="check the device's host (edgeify devices show NAME) and your DNS") from None
    last: OSError | None = None
    deadline = time.monotonic() + timeout
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for opt, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3),
                               ("TCP_USER_TIMEOUT", user_timeout_ms), ("TCP_NODELAY", 1)):
                if hasattr(socket, opt):  # Linux; other systems keep the SSH keepalive only
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            sock.connect(addr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    reason = "timed out" if isinstance(last, socket.timeout) else (
        last.strerror if last is not None and last.strerror else str(last))
    raise UnreachableError(f"cannot connect to {where}: {reason}",
                           hint="check that the device is on, on the network, and that sshd listens on that "
                                "port (`edgeify devices show NAME` prints the resolved host and port)")


def load_host_keys(paths: Sequence[str]) -> paramiko.HostKeys:
    """Every known_hosts file of ``paths`` that exists, in one paramiko HostKeys."""
    import paramiko

    keys = paramiko.HostKeys()
    for path in paths:
        if os.path.isfile(path):
            try:
                keys.load(path)
            except (OSError, paramiko.SSHException) as exc:
                raise ConfigError(f"cannot read known_hosts file {path}: {exc}") from exc
    return keys


def remember_host_key(path: str, name: str, key: paramiko.PKey) -> None:
    """Append ``name keytype base64`` to known_hosts (0600, its directory 0700), on a line of its own."""
    p = Path(path)
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        needs_nl = False
        if os.fstat(fd).st_size > 0:
            with open(p, "rb") as f:
                f.seek(-1, os.SEEK_END)
                needs_nl = f.read(1) != b"\n"
        line = ("\n" if needs_nl else "") + f"{name} {key.get_name()} {key.get_base64()}\n"
        os.write(fd, line.encode())
    finally:
        os.close(fd)


__all__ = ["TCP_USER_TIMEOUT_MS", "fingerprint", "key_kind", "load_host_keys", "remember_host_key", "tcp_socket"]
