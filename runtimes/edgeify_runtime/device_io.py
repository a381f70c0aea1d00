"""Shared pieces of the device-side file and app operations (``device_files``, ``device_apps``).

An operation is ``python -m edgeify_runtime.<module> OP`` with a JSON object on stdin; it answers with one
JSON object on stdout through :func:`edgeify_runtime.envelope.respond`. Failures are :class:`OpError`: a
``kind`` the host maps to its typed errors (``disk_full``, ``not_writable``, ``hash_mismatch``, ``missing``,
``unsafe``, ``busy``, ...) plus extra fields (``bad``, ``log_tail``, ...). Standard library only, Python 3.8+.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any, Callable, Dict

from .envelope import respond
from .errors import EdgeifyRuntimeError
from .manifest import safe_relpath, sha256_file

_KIND_BY_ERRNO = {errno.ENOSPC: "disk_full", errno.EDQUOT: "disk_full", errno.EROFS: "not_writable",
                  errno.EACCES: "not_writable", errno.EPERM: "not_writable"}
#: the exit code of the operation process per kind (the host's codes for the same faults)
_EXIT_BY_KIND = {"disk_full": 26, "not_writable": 28, "hash_mismatch": 12, "missing": 12, "unsafe": 12}
#: how long an operation waits for another one holding the same lock (a concurrent deploy) before giving up
LOCK_TIMEOUT_S = 120.0

Args = Dict[str, Any]


class OpError(EdgeifyRuntimeError):
    """A device operation failed; ``kind`` says how, ``extra`` carries what the host reports with it."""

    def __init__(self, kind: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.extra = extra
        self.exit_code = _EXIT_BY_KIND.get(kind, 25)

    def to_dict(self) -> dict:
        out = super().to_dict()
        out.update(self.extra)
        out["kind"] = self.kind
        return out


def os_error(exc: OSError, what: str) -> OpError:
    kind = _KIND_BY_ERRNO.get(exc.errno or 0, "io")
    return OpError(kind, f"{what}: {exc.strerror or exc}", errno=exc.errno)


def safe_rel(rel: str) -> str:
    """A relative path from a request (a bundle file): no traversal, no absolute path."""
    try:
        return safe_relpath(rel)
    except EdgeifyRuntimeError:
        raise OpError("unsafe", f"unsafe path in request: {rel!r}") from None


def workdir(args: Args) -> str:
    return os.path.abspath(os.path.expanduser(str(args["workdir"])))


def matches(path: str, meta: Args, hash_check: bool = True) -> bool:
    """Does the file at ``path`` have the size (and sha256) of ``meta``? Symlinks never match."""
    try:
        if os.path.islink(path) or os.path.getsize(path) != meta["size"]:
            return False
        return (not hash_check) or sha256_file(path) == meta["sha256"]
    except OSError:
        return False


def inside(path: str, root: str) -> bool:
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path.startswith(root + os.sep)


def mkdirs(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, f"cannot create {path}") from None


def read_text(path: str, default: Any = None) -> Any:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return default


def read_json(path: str) -> Any:
    text = read_text(path)
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def file_lock(path: str, *, timeout: float = LOCK_TIMEOUT_S, what: str = "this bundle") -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the block; waits at most ``timeout`` s
    for another holder, then raises OpError("busy"). The kernel drops the lock when the process dies."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise os_error(exc, f"cannot open the lock file {path}") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise OpError("busy", f"another edgeify operation on {what} held its lock for {timeout:g} s",
                                  lock=path) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def try_lock(path: str) -> Any:
    """A non-blocking exclusive ``flock`` on ``path``: the open fd (close it to release), or None if held."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def run_ops(ops: dict[str, Callable[[Args], Args]], argv: list[str] | None, prog: str) -> int:
    """``prog OP`` with the JSON request on stdin: run ``ops[OP]`` and answer through ``envelope.respond``."""

    argv = list(sys.argv[1:] if argv is None else argv)

    def call() -> Args:
        if len(argv) != 1 or argv[0] not in ops:
            raise OpError("usage", f"usage: {prog} {{{','.join(sorted(ops))}}} < request.json")
        try:
            args = json.loads(sys.stdin.read() or "{}")
        except ValueError as exc:
            raise OpError("usage", f"the request on stdin is not JSON: {exc}") from None
        if not isinstance(args, dict):
            raise OpError("usage", "the request on stdin must be a JSON object")
        try:
            result = ops[argv[0]](args)
        except OSError as exc:
            raise os_error(exc, "device operation failed") from None
        result["ok"] = True
        return result

    return respond(call)


__all__ = ["LOCK_TIMEOUT_S", "OpError", "file_lock", "fsync_dir", "inside", "matches", "mkdirs", "os_error",
           "read_json", "read_text", "run_ops", "safe_rel", "try_lock", "workdir"]
