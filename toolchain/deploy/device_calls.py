"""Calls of the device-side operations (``python -m edgeify_runtime.device_files|device_apps OP``, run through
``site_exec.run_module``) and what they report, as edgeify's typed errors (one place for the map)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import (
    BundleError,
    EdgeifyError,
    RemoteCommandError,
    RemoteDiskError,
    RemoteUnwritableError,
)
from .site_exec import run_module


def device_op(site: Any, runtime: Any, module: str, op: str, args: dict[str, Any], *, timeout: float = 300.0,
              on_error: Callable[[dict[str, Any]], BaseException | None] | None = None) -> dict[str, Any]:
    """Run ``python -m <module> <op>`` from the runtime zip on ``site`` (through ``site_exec.run_module``) with
    ``args`` (+ the work directory) as its JSON request; its reply, or the typed error it reports (``on_error``
    first, then :func:`op_error` by kind, then the exit code)."""

    def error(err: dict[str, Any]) -> BaseException | None:
        exc = on_error(err) if on_error is not None else None
        return exc if exc is not None else op_error(site.name, err)

    return run_module(site, module, op, request={"workdir": site.workdir, **args}, timeout=timeout,
                      runtime_path=runtime.path, what=f"`{module.rsplit('.', 1)[-1]} {op}`", on_error=error)


def op_error(device: str, err: dict[str, Any]) -> EdgeifyError | None:
    """The typed error for a device operation's ``{"kind", "message", ...}`` error (None: it has no kind)."""
    kind = err.get("kind")
    if not kind:
        return None
    msg = f"device {device}: {err.get('message', 'device-side operation failed')}"
    if kind == "disk_full":
        return RemoteDiskError(msg, hint="free space in the device's work directory, or point --workdir at a "
                                         "bigger disk")
    if kind == "not_writable":
        return RemoteUnwritableError(msg, hint="make the device's work directory writable for the login user, or "
                                               "choose another one with --workdir")
    if kind == "hash_mismatch":
        return BundleError(msg, hint="redeploy; if it happens again, check the device's storage")
    if kind == "missing":
        return BundleError(msg, hint="deploy the bundle first: edgeify deploy BUNDLE --device " + device)
    if kind == "unsafe":
        return BundleError(msg, hint="use a plain bundle name and the files `edgeify build` wrote")
    if kind == "busy":
        return RemoteCommandError(msg, hint="another deploy or rollback of this bundle is running on the device; "
                                            "retry when it is done")
    return RemoteCommandError(msg, hint=err.get("hint") or None)


def space_error(device: str, workdir: str, need: int, free: int, held: int = 0) -> RemoteDiskError:
    note = (f"; {_mb(held)} of it is held by interrupted uploads in {workdir}/staging, removed "
            "automatically 10 minutes after they stopped") if held else ""
    return RemoteDiskError(
        f"device {device}: not enough space in {workdir}: the upload needs {_mb(need)} "
        f"(+{_mb(1 << 20)} margin), {_mb(free)} is free; nothing was changed{note}",
        hint="free space on the device, or point --workdir at a bigger disk")


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


__all__ = ["device_op", "op_error", "space_error"]
