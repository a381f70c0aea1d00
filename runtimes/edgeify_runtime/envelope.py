"""The device-side reply envelope: every device-side module prints exactly ONE JSON object on stdout.

Written by :func:`respond` on the device (``{"ok": true, ...}`` or ``{"ok": false, "error": {"type", "message",
"hint", "exit_code"}}``, with the error's exit code), read by :func:`parse_reply` on the host. Engine chatter on
file descriptor 1 goes to stderr while a command works, so the last stdout line is always the reply.
A deadline in ``EDGEIFY_DEADLINE_S`` (seconds, set by the host) is enforced here too, so a device without
``timeout`` still stops a command that runs too long: it answers with exit code 25 ("remote command failed or
timed out"). Standard library only; Python 3.8+.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from collections.abc import Iterator
from typing import Any, Callable

from . import __version__
from .errors import EdgeifyRuntimeError

#: environment variable with the command's deadline in seconds (the host sets it; absent: no deadline)
DEADLINE_ENV = "EDGEIFY_DEADLINE_S"


class DeadlineError(EdgeifyRuntimeError):
    """The command ran past the deadline the host gave it (``EDGEIFY_DEADLINE_S``) and stopped itself."""

    exit_code = 25  # "remote command failed or timed out" in edgeify's exit code table
    hint = "lower the runs/duration (e.g. --runs, --min-duration), or check what else runs on the device"


@contextlib.contextmanager
def _deadline() -> Iterator[None]:
    """Raise DeadlineError in the main thread once ``EDGEIFY_DEADLINE_S`` seconds have passed (SIGALRM)."""
    import signal

    try:
        seconds = float(os.environ.get(DEADLINE_ENV) or 0)
    except ValueError:
        seconds = 0.0
    if seconds <= 0 or not hasattr(signal, "setitimer"):
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise DeadlineError(f"ran past its {seconds:g} s deadline and stopped itself")

    try:
        previous = signal.signal(signal.SIGALRM, _raise)
    except (ValueError, OSError):  # not the main thread
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _stdout_reserved() -> Iterator[Any]:
    """Point fd 1 (and sys.stdout) at stderr while the agent works; yield a writer for the real stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    old_stdout = sys.stdout
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    real = os.fdopen(os.dup(saved), "w", encoding="utf-8")
    try:
        yield real
    finally:
        with contextlib.suppress(Exception):
            real.flush()
            real.close()
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)
        sys.stdout = old_stdout


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a deployer's deadline, a stopped build) ends the work like Ctrl-C (KeyboardInterrupt): the
    device side answers with a JSON error and exit 130, a build removes its staging directory."""
    import signal

    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, _raise)
    except (ValueError, OSError, AttributeError):  # not the main thread, or no SIGTERM on this platform
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def error_payload(err: dict[str, Any]) -> dict[str, Any]:
    return {"ok": False, "error": err, "agent_version": __version__}


def respond(call: Callable[[], dict[str, Any]]) -> int:
    """Run ``call()`` as a device-side command: stdout carries exactly one JSON object (its result, or
    ``{"ok": false, "error": ...}``), SIGTERM counts as an interrupt, the host's deadline
    (``EDGEIFY_DEADLINE_S``) is enforced; returns the process exit code."""
    with _stdout_reserved() as out, sigterm_as_interrupt():
        code = 0
        try:
            with _deadline():
                result = call()
        except EdgeifyRuntimeError as err:
            result, code = error_payload(err.to_dict()), err.exit_code
        except KeyboardInterrupt:
            result, code = error_payload({"type": "Interrupted", "message": "interrupted (SIGINT/SIGTERM)",
                                           "hint": "", "exit_code": 130}), 130
        except Exception as exc:
            if os.environ.get("EDGEIFY_DEBUG") == "1":
                traceback.print_exc(file=sys.stderr)
            result, code = error_payload({"type": type(exc).__name__, "message": str(exc),
                                           "hint": "set EDGEIFY_DEBUG=1 for the traceback on stderr",
                                           "exit_code": 1}), 1
        out.write(json.dumps(result) + "\n")
    return code


def parse_reply(stdout: str) -> dict[str, Any] | None:
    """The reply a device-side command printed: its last stdout line that is a JSON object, else None."""
    for line in reversed((stdout or "").strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        return value if isinstance(value, dict) else None
    return None


__all__ = ["DEADLINE_ENV", "DeadlineError", "error_payload", "parse_reply", "respond", "sigterm_as_interrupt"]
