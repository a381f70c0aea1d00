"""``LocalTransport``: this machine as a device (subprocesses and file copies), same contract as SSH."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from ..errors import RemoteCommandError, RemoteDiskError, RemoteUnwritableError
from .transport import CommandResult, ProgressCallback, Transport, as_bytes, check_env

#: errnos that mean "the device's disk is full or not writable"
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})

_COPY_CHUNK = 1 << 20


def io_error(exc: OSError, what: str) -> Exception:
    """Map an OSError from a file operation on the device to RemoteDiskError or RemoteCommandError."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return RemoteDiskError(f"{what}: the device's disk is full ({reason})",
                               hint="free space in the device's work directory or set another --workdir")
    if exc.errno in DISK_ERRNOS:
        return RemoteUnwritableError(f"{what}: not writable ({reason})",
                               hint="make the device's work directory writable for the login user, or set "
                                    "another one: edgeify devices add NAME ... --workdir DIR")
    return RemoteCommandError(f"{what}: {reason}")


class LocalTransport(Transport):
    """Runs commands as subprocesses and copies files on this machine."""

    def __init__(self, label: str = "local") -> None:
        self.label = label

    def run(self, cmd: Sequence[str], *, timeout: float, input: str | bytes | None = None,
            env: Mapping[str, str] | None = None, cwd: str | None = None) -> CommandResult:
        argv = [str(c) for c in cmd]
        full_env = {**os.environ, **check_env(env)}
        try:
            proc = subprocess.run(argv, input=as_bytes(input), capture_output=True, timeout=timeout,
                                  env=full_env, cwd=cwd, check=False)
        except subprocess.TimeoutExpired:
            raise RemoteCommandError(f"{self.label}: `{argv[0]}` ran past its {timeout:g} s deadline",
                                     hint="raise the deadline or check the device's load") from None
        except FileNotFoundError as exc:
            if cwd and not os.path.isdir(cwd):
                return CommandResult(1, "", f"cd: {cwd}: No such file or directory\n")
            return CommandResult(127, "", f"{argv[0]}: {exc.strerror or 'not found'}\n")
        except PermissionError as exc:
            return CommandResult(126, "", f"{argv[0]}: {exc.strerror}\n")
        return CommandResult(proc.returncode, proc.stdout.decode("utf-8", "replace"),
                             proc.stderr.decode("utf-8", "replace"))

    def put(self, local: str, remote: str, *, callback: ProgressCallback | None = None) -> None:
        total = os.path.getsize(local)
        done = 0
        try:
            with open(local, "rb") as src, open(remote, "wb") as dst:
                while True:
                    block = src.read(_COPY_CHUNK)
                    if not block:
                        break
                    dst.write(block)
                    done += len(block)
                    if callback:
                        callback(done, total)
        except OSError as exc:
            if not os.path.exists(local):
                raise
            raise io_error(exc, f"{self.label}: writing {remote}") from exc
        if callback and total == 0:
            callback(0, 0)

    def get(self, remote: str, local: str) -> None:
        try:
            with open(remote, "rb") as src, open(local, "wb") as dst:
                shutil.copyfileobj(src, dst, _COPY_CHUNK)
        except FileNotFoundError as exc:
            if os.path.exists(remote):
                raise
            raise RemoteCommandError(f"{self.label}: no such file {remote}") from exc

    def close(self) -> None:
        pass


__all__ = ["DISK_ERRNOS", "LocalTransport", "io_error"]
