"""Every error edgeify reports to a user, with its exit code and the fix.

One table for the whole tool (README, "Exit codes"). The device side (``edgeify_runtime.errors``) owns codes
5, 11 and 12 because the benchmark agent raises them on the device; they are re-exported here.
"""

from __future__ import annotations

from edgeify_runtime.errors import (
    BundleError,
    EdgeifyRuntimeError,
    EngineMissingError,
    InputSignatureError,
)

__all__ = [
    "EXIT_CODES",
    "AccuracyGateError",
    "BundleError",
    "ConfigError",
    "ConversionError",
    "DataError",
    "DeviceError",
    "EdgeifyError",
    "EngineMissingError",
    "HostKeyChangedError",
    "HostKeyUnknownError",
    "InputSignatureError",
    "InterruptedBuild",
    "LatencyBudgetError",
    "MatrixCellsFailedError",
    "ModelLoadError",
    "NoSpaceError",
    "ParityError",
    "PrometheusError",
    "RegressionError",
    "RemoteCommandError",
    "RemoteDiskError",
    "RemoteUnwritableError",
    "RolloutGateError",
    "SSHAuthError",
    "SessionLostError",
    "TargetError",
    "TransportLostError",
    "UnreachableError",
    "UsageError",
    "error_for_code",
]

#: Base class. ``EdgeifyError`` is the device side's base, so one ``except`` catches both sides.
EdgeifyError = EdgeifyRuntimeError


class UsageError(EdgeifyError):
    """Command-line usage error: a missing, conflicting or malformed option."""

    exit_code = 2
    meaning = "command-line usage error"


class TargetError(EdgeifyError):
    """Unknown target/engine, or a precision the target or engine does not support."""

    exit_code = 3
    meaning = "unknown target/engine, or precision not supported by the target or engine"


class ConfigError(EdgeifyError):
    """An invalid or duplicate target spec, devices file or other configuration."""

    exit_code = 4
    meaning = "invalid configuration: target spec, devices file"


class ModelLoadError(EdgeifyError):
    """The source model cannot be read: corrupt file, unknown kind, factory that fails."""

    exit_code = 6
    meaning = "source model cannot be loaded (corrupt or unsupported file)"


class DataError(EdgeifyError):
    """Calibration/evaluation data missing, unreadable or not matching the model's inputs."""

    exit_code = 7
    meaning = "calibration/evaluation data missing or invalid"


class ConversionError(EdgeifyError):
    """A converter or quantizer failed on the model."""

    exit_code = 8
    meaning = "conversion or quantization failed"


class ParityError(EdgeifyError):
    """The built model's outputs differ from the source model's beyond the tolerance table."""

    exit_code = 9
    meaning = "parity check failed: built model differs from the source beyond tolerance"


class AccuracyGateError(EdgeifyError):
    """Accuracy dropped by more than ``--max-accuracy-drop``."""

    exit_code = 10
    meaning = "accuracy drop above --max-accuracy-drop"


class LatencyBudgetError(EdgeifyError):
    """A benchmark's latency percentile is over ``--max-latency-ms``."""

    exit_code = 13
    meaning = "latency budget exceeded (--max-latency-ms)"


class RegressionError(EdgeifyError):
    """``edgeify gate``: the candidate is slower than the baseline by more than ``--max-regression``, and the
    difference is significant."""

    exit_code = 14
    meaning = "performance regression: candidate slower than the baseline beyond --max-regression (edgeify gate)"
    hint = ("look at `edgeify compare BASELINE CANDIDATE`; if the slowdown is intended, move the baseline: "
            "`edgeify results tag ID NAME`")


class NoSpaceError(EdgeifyError):
    """The filesystem of an output path (``-o``) ran out of space (or quota): the partial output was removed; the
    message names the path, what was free and about what it needs."""

    exit_code = 15
    meaning = "no space left on the output's filesystem (-o); partial output removed"
    hint = "free space on that filesystem, or write the output to a bigger disk"


class MatrixCellsFailedError(EdgeifyError):
    """``edgeify build-matrix``: the run finished, but some cells failed (the others were built and published;
    each failed cell's record says why)."""

    exit_code = 16
    meaning = "build-matrix: some cells failed (the other cells were built; see each cell's record)"
    hint = ("see the failed cells' errors in the summary (or OUT/_reports/MODEL/CELL.json), fix them and rerun "
            "the matrix")


class RolloutGateError(EdgeifyError):
    """A rollout wave failed its on-device gate (latency or accuracy against the bundle it replaced); that wave (or
    every wave, with ``--rollback all``) was rolled back to the previous bundle and the rollout stopped."""

    exit_code = 17
    meaning = "rollout stopped: a wave failed its on-device gate and was rolled back (`edgeify rollout status`)"


class PrometheusError(EdgeifyError):
    """``--prometheus``: the server does not answer or refuses a query, so a rollout's soak cannot watch its wave;
    the rollout pauses (nothing is rolled back, nothing counted as passing) until ``resume``."""

    exit_code = 18
    meaning = "Prometheus (--prometheus) unreachable or a query failed; a soaking rollout pauses"
    hint = "check the URL (e.g. http://127.0.0.1:9090) and that Prometheus runs, then edgeify rollout resume ID"


class DeviceError(EdgeifyError):
    """Base for errors talking to a device."""

    exit_code = 20


class UnreachableError(DeviceError):
    """The device does not answer (no route, refused, timed out)."""

    exit_code = 20
    meaning = "device unreachable"


class SSHAuthError(DeviceError):
    """The device refused every key (and the agent's)."""

    exit_code = 21
    meaning = "SSH authentication failed"


class HostKeyUnknownError(DeviceError):
    """The device's host key is not in known_hosts (``--trust-new-host-key`` after checking it)."""

    exit_code = 22
    meaning = "SSH host key unknown (not in known_hosts)"


class HostKeyChangedError(DeviceError):
    """The device's host key differs from the one in known_hosts: never accepted."""

    exit_code = 23
    meaning = "SSH host key changed (possible man-in-the-middle)"


class TransportLostError(DeviceError):
    """The connection dropped mid-operation (link cut, sshd killed, device rebooted)."""

    exit_code = 24
    meaning = "connection lost during a transfer (link cut, device gone)"


class SessionLostError(TransportLostError):
    """The connection died while a remote command was running (sshd killed, device rebooted mid-benchmark)."""

    exit_code = 27
    meaning = "connection lost while a remote command ran (sshd killed, device rebooted)"


class RemoteCommandError(DeviceError):
    """A command on the device failed or ran past its deadline."""

    exit_code = 25
    meaning = "remote command failed or timed out"


class RemoteDiskError(DeviceError):
    """The device's work directory is full or not writable."""

    exit_code = 26
    meaning = "device disk full"


class RemoteUnwritableError(RemoteDiskError):
    """The device's work directory is not writable (read-only filesystem, permissions)."""

    exit_code = 28
    meaning = "device work directory not writable"


class InterruptedBuild(EdgeifyError):
    """SIGINT/SIGTERM during a build: the partial output was removed."""

    exit_code = 130
    meaning = ("interrupted (Ctrl-C / SIGTERM); partial output removed (`optimize` and `build-matrix` keep what "
               "finished: the best so far, the built cells)")


#: the classes the device side (``edgeify_runtime.errors``) owns: their meaning in edgeify's table
_RUNTIME_MEANINGS: dict[type[EdgeifyError], str] = {
    EdgeifyError: "unexpected internal error (set EDGEIFY_DEBUG=1 for the traceback)",
    InputSignatureError: "input signature mismatch: wrong input name, shape or dtype",
    EngineMissingError: "engine missing or too old on the device",
    BundleError: "bundle invalid: missing manifest, hash mismatch, unsafe path",
}


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def _table() -> dict[int, tuple[type[EdgeifyError], str]]:
    """code -> (the class that stands for it, its meaning): every class that declares ``meaning`` itself."""
    table: dict[int, tuple[type[EdgeifyError], str]] = {}
    here = [c for c in _subclasses(EdgeifyError) if c.__module__ == __name__ and "meaning" in c.__dict__]
    for cls, meaning in [*_RUNTIME_MEANINGS.items(), *((c, c.__dict__["meaning"]) for c in here)]:
        if cls.exit_code in table:
            raise RuntimeError(f"exit code {cls.exit_code} claimed by {table[cls.exit_code][0].__name__} and "
                               f"{cls.__name__}")
        table[cls.exit_code] = (cls, meaning)
    return dict(sorted(table.items()))


_TABLE = _table()

#: code -> meaning for the README and ``edgeify exit-codes``, derived from the classes (a test checks the README
#: lists every code)
EXIT_CODES: dict[int, str] = {0: "success", **{code: meaning for code, (_, meaning) in _TABLE.items()}}


def error_for_code(code: int) -> type[EdgeifyError]:
    """The error class for an exit code reported by the agent or a remote edgeify process (RemoteCommandError
    for a code edgeify does not define, for 1: something unexpected failed there, and for 130: it was
    interrupted there)."""
    cls = _TABLE.get(code, (RemoteCommandError, ""))[0]
    return RemoteCommandError if cls in (EdgeifyError, InterruptedBuild) else cls
