"""Run a device-side module on a site: the ONE place that builds the command line for the device.

Every device-side program (``python -m edgeify_runtime.<module>``: the benchmark agent, the device steps, the
fingerprint, the file and app operations) runs through :func:`run_module`, on an SSH device or on this machine
(``DeviceSite.local()``) alike::

    reply = run_module(site, "edgeify_runtime.bench", request={"bundle": path, "runs": 100}, timeout=300)
    reply = run_module(site, "edgeify_runtime.device_steps", "--bundle", path, timeout=3600)

What it does, so callers do not:

- ``PYTHONPATH``: ``site.runtime_path`` (the runtime zip in the device's work directory, or the installed
  ``edgeify_runtime`` for a local site); ``runtime_path=`` overrides it for one call;
- ``EDGEIFY_DEBUG`` passes through (the device prints its traceback on stderr);
- the deadline: the command runs under ``timeout`` where the device has it (then it cannot outlive the deadline
  even when the connection is gone) and gets ``EDGEIFY_DEADLINE_S``, which the device side enforces itself
  (``edgeify_runtime.envelope.respond``) where ``timeout`` is missing; the host waits a little longer so the
  device can report its own timeout;
- the reply: the one JSON object the module printed (``edgeify_runtime.envelope.parse_reply``); ``{"ok": false,
  "error": {...}}`` becomes the host error class for its ``exit_code`` (``edgeify.errors.error_for_code``), or
  what ``on_error`` makes of it; no reply at all becomes a ``RemoteCommandError`` naming the cause (Python
  missing, too old, killed) with the last stderr lines.

Returns the reply (a dict). Raises the typed error. Never returns a failed reply.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable, Mapping
from typing import Any

from edgeify_runtime.envelope import DEADLINE_ENV, parse_reply

from ..errors import EXIT_CODES, EdgeifyError, RemoteCommandError, error_for_code
from .site import DeviceSite

#: the host waits this much longer than the device-side deadline, so the device reports its own timeout
CLIENT_GRACE_S = 15.0
#: ``timeout`` stops the command this long after the device-side deadline (time for the device to report)
DEVICE_GRACE_S = 3
#: run "$@" under coreutils/busybox `timeout` when the device has it, else plainly; $1 is the deadline (s)
DEVICE_DEADLINE = ('d=$1; shift; if command -v timeout >/dev/null 2>&1; then exec timeout -k 5 "$d" "$@"; fi; '
                   'exec "$@"')
#: exit status of `timeout` when it stopped the command
TIMEOUT_RC = 124

ErrorHook = Callable[[dict[str, Any]], "BaseException | None"]


def module_command(site: DeviceSite, module: str, args: tuple[str, ...], timeout: float) -> list[str]:
    """The argv run on the device: ``sh -c <deadline wrapper> sh <s> <python> -m <module> <args>``."""
    return ["sh", "-c", DEVICE_DEADLINE, "sh", str(int(timeout) + DEVICE_GRACE_S), *site.python, "-m", module,
            *args]


def module_env(site: DeviceSite, timeout: float, runtime_path: str | None = None) -> dict[str, str]:
    path = runtime_path or site.runtime_path
    if not path:
        raise ValueError(f"site {site.name}: no runtime_path (install the runtime on the device first)")
    env = {"PYTHONPATH": path, DEADLINE_ENV: str(int(timeout))}
    if os.environ.get("EDGEIFY_DEBUG", "") not in ("", "0"):
        env["EDGEIFY_DEBUG"] = "1"
    return env


def run_module(site: DeviceSite, module: str, *args: str, request: Mapping[str, Any] | None = None,
               timeout: float, runtime_path: str | None = None, what: str | None = None,
               on_error: ErrorHook | None = None) -> dict[str, Any]:
    """Run ``python -m <module> <args>`` on ``site`` with ``request`` as JSON on stdin, within ``timeout``
    seconds; return its reply or raise the typed error (see the module docstring).

    ``what``: names the program in messages ("the benchmark agent"); ``on_error(error_dict)``: an exception for
    a failed reply (None: the default mapping by exit code)."""
    label = what or f"`python -m {module}`"
    where = site.name if site.is_local else f"device {site.name}"
    cmd = module_command(site, module, tuple(str(a) for a in args), timeout)
    stdin = json.dumps(dict(request)) if request is not None else None
    rc, out, err = site.transport.run(cmd, input=stdin, env=module_env(site, timeout, runtime_path),
                                      timeout=timeout + DEVICE_GRACE_S + CLIENT_GRACE_S)
    reply = parse_reply(out)
    if reply is not None and reply.get("ok") is False:
        raise _reply_error(reply.get("error") or {}, rc, where, on_error)
    if rc == TIMEOUT_RC:  # `timeout` stopped it (it may have printed an "interrupted" reply first)
        raise RemoteCommandError(f"{where}: {label} ran past its {int(timeout)} s deadline and was stopped",
                                 hint="lower --runs/--min-duration, or check what else runs on the device")
    if reply is not None and rc == 0:
        return reply
    raise no_reply_error(site, label, rc, err)


def _reply_error(err: dict[str, Any], rc: int, where: str, on_error: ErrorHook | None) -> BaseException:
    if on_error is not None:
        exc = on_error(err)
        if exc is not None:
            return exc
    code = err.get("exit_code")
    cls = error_for_code(int(code) if isinstance(code, int) else (rc or 1))
    return cls(f"{where}: {err.get('message') or 'failed'}", hint=err.get("hint") or None)


def no_reply_error(site: DeviceSite, label: str, rc: int, stderr: str) -> EdgeifyError:
    """The device printed no reply: Python cannot run, is too old, or the program died."""
    tail = [ln for ln in (stderr or "").strip().splitlines() if ln.strip()][-5:]
    py = shlex.join(site.python)
    where = f"device {site.name}"
    if rc in (126, 127):
        return RemoteCommandError(f"{where}: cannot run `{py}` ({' | '.join(tail) or f'exit {rc}'})",
                                  hint="install Python 3 on the device, or tell edgeify where it is: "
                                       f"edgeify devices add {site.name} ... --python /path/to/python3 --replace")
    if any("SyntaxError" in ln for ln in tail):
        return RemoteCommandError(f"{where}: `{py}` is too old for edgeify ({' | '.join(tail)})",
                                  hint="edgeify needs Python 3.8 or newer on the device (--python)")
    meaning = EXIT_CODES.get(rc, "")
    return RemoteCommandError(f"{where}: {label} exited {rc} without a result"
                              f"{f' ({meaning})' if meaning else ''}" + (": " + " | ".join(tail) if tail else ""),
                              hint="rerun with EDGEIFY_DEBUG=1 for the device's traceback")


__all__ = ["CLIENT_GRACE_S", "DEVICE_DEADLINE", "module_command", "module_env", "no_reply_error", "run_module"]
