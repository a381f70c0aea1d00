"""The transport contract: what the deployer and the remote benchmark need from a way to reach a device.

Four operations, a lazy connection and a context manager::

    with transport:                                   # connects on first use, closes on exit
        rc, out, err = transport.run(["python3", "-V"], timeout=10)
        transport.put("local/file", "/abs/remote/file")
        transport.get("/abs/remote/file", "local/copy")

Semantics every implementation follows (``tests/ssh/test_transport_contract.py`` checks them against both):

- ``run`` executes an argv list (never a shell string: each argument arrives exactly as given), feeds
  ``input`` on stdin, and returns ``CommandResult(rc, stdout, stderr)``. A non-zero exit status is returned,
  not raised; a command not found returns 127 as a shell would. A command running past ``timeout``
  seconds raises ``RemoteCommandError`` (exit 25) within about a second of the deadline.
- ``put``/``get`` copy one regular file, replacing the destination; the destination's directory must exist.
  A full or read-only disk or a permission problem raises ``RemoteDiskError`` (26); another remote I/O
  failure (missing directory, missing file) raises ``RemoteCommandError`` (25).
- Losing the connection in any operation raises ``TransportLostError`` (24); failing to establish it raises
  ``UnreachableError`` (20), ``SSHAuthError`` (21), ``HostKeyUnknownError`` (22) or ``HostKeyChangedError`` (23).
- ``close`` is idempotent; a closed transport reconnects on next use.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import NamedTuple

#: ``callback(bytes_done, bytes_total)`` during ``put``
ProgressCallback = Callable[[int, int], None]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class CommandResult(NamedTuple):
    rc: int
    stdout: str
    stderr: str


def check_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """Validate environment variable names (they end up in a remote command line)."""
    out: dict[str, str] = {}
    for k, v in (env or {}).items():
        if not _ENV_NAME.match(k):
            raise ValueError(f"invalid environment variable name {k!r}")
        out[k] = str(v)
    return out


def as_bytes(data: str | bytes | None) -> bytes | None:
    if data is None:
        return None
    return data.encode("utf-8") if isinstance(data, str) else bytes(data)


class Transport(ABC):
    """A way to reach one device. Subclasses implement the abstract methods; see the module docstring."""

    #: a short human label for messages ("local", "pi@192.168.1.50:22")
    label: str = "device"

    def connect(self) -> None:  # noqa: B027 - optional: transports connect lazily on first use
        """Establish the connection now (it is otherwise made on first use)."""

    @abstractmethod
    def run(self, cmd: Sequence[str], *, timeout: float, input: str | bytes | None = None,
            env: Mapping[str, str] | None = None, cwd: str | None = None) -> CommandResult:
        """Run ``cmd`` (argv list) with a deadline; see the module docstring."""

    @abstractmethod
    def put(self, local: str, remote: str, *, callback: ProgressCallback | None = None) -> None:
        """Copy the local file ``local`` to ``remote`` (replacing it)."""

    @abstractmethod
    def get(self, remote: str, local: str) -> None:
        """Copy the remote file ``remote`` to ``local`` (replacing it)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection; idempotent."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


__all__ = ["CommandResult", "ProgressCallback", "Transport", "as_bytes", "check_env"]
