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
    "ModelLoadError",
    "ParityError",
    "RemoteCommandError",
    "RemoteDiskError",
    "RemoteUnwritableError",
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


class TargetError(EdgeifyError):
    """Unknown target/engine, or a precision the target or engine does not support."""

    exit_code = 3


class ConfigError(EdgeifyError):
    """An invalid or duplicate target spec, devices file or other configuration."""

    exit_code = 4


class ModelLoadError(EdgeifyError):
    """The source model cannot be read: corrupt file, unknown kind, factory that fails."""

    exit_code = 6


class DataError(EdgeifyError):
    """Calibration/evaluation data missing, unreadable or not matching the model's inputs."""

    exit_code = 7


class ConversionError(EdgeifyError):
    """A converter or quantizer failed on the model."""

    exit_code = 8


class ParityError(EdgeifyError):
    """The built model's outputs differ from the source model's beyond the tolerance table."""

    exit_code = 9


class AccuracyGateError(EdgeifyError):
    """Accuracy dropped by more than ``--max-accuracy-drop``."""

    exit_code = 10


class LatencyBudgetError(EdgeifyError):
    """A benchmark's latency percentile is over ``--max-latency-ms``."""

    exit_code = 13


class DeviceError(EdgeifyError):
    """Base for errors talking to a device."""

    exit_code = 20


class UnreachableError(DeviceError):
    exit_code = 20


class SSHAuthError(DeviceError):
    exit_code = 21


class HostKeyUnknownError(DeviceError):
    exit_code = 22


class HostKeyChangedError(DeviceError):
    exit_code = 23


class TransportLostError(DeviceError):
    """The connection dropped mid-operation (link cut, sshd killed, device rebooted)."""

    exit_code = 24


class SessionLostError(TransportLostError):
    """The connection died while a remote command was running (sshd killed, device rebooted mid-benchmark)."""

    exit_code = 27


class RemoteCommandError(DeviceError):
    """A command on the device failed or ran past its deadline."""

    exit_code = 25


class RemoteDiskError(DeviceError):
    """The device's work directory is full or not writable."""

    exit_code = 26


class RemoteUnwritableError(RemoteDiskError):
    """The device's work directory is not writable (read-only filesystem, permissions)."""

    exit_code = 28


class InterruptedBuild(EdgeifyError):
    """SIGINT/SIGTERM during a build: the partial output was removed."""

    exit_code = 130


#: code -> (meaning) for the README and ``edgeify --help``; a test checks the README lists every code.
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "unexpected internal error (set EDGEIFY_DEBUG=1 for the traceback)",
    2: "command-line usage error",
    3: "unknown target/engine, or precision not supported by the target or engine",
    4: "invalid configuration: target spec, devices file",
    5: "input signature mismatch: wrong input name, shape or dtype",
    6: "source model cannot be loaded (corrupt or unsupported file)",
    7: "calibration/evaluation data missing or invalid",
    8: "conversion or quantization failed",
    9: "parity check failed: built model differs from the source beyond tolerance",
    10: "accuracy drop above --max-accuracy-drop",
    11: "engine missing or too old on the device",
    12: "bundle invalid: missing manifest, hash mismatch, unsafe path",
    13: "latency budget exceeded (--max-latency-ms)",
    20: "device unreachable",
    21: "SSH authentication failed",
    22: "SSH host key unknown (not in known_hosts)",
    23: "SSH host key changed (possible man-in-the-middle)",
    24: "connection lost during a transfer (link cut, device gone)",
    25: "remote command failed or timed out",
    26: "device disk full",
    27: "connection lost while a remote command ran (sshd killed, device rebooted)",
    28: "device work directory not writable",
    130: "interrupted (Ctrl-C / SIGTERM); partial output removed",
}


def error_for_code(code: int) -> type[EdgeifyError]:
    """The error class for an exit code reported by the agent or a remote edgeify process."""
    classes: list[type[EdgeifyError]] = [
        InputSignatureError, EngineMissingError, BundleError, TargetError, ConfigError, ModelLoadError, DataError,
        ConversionError, ParityError, AccuracyGateError, LatencyBudgetError, UnreachableError, SSHAuthError,
        HostKeyUnknownError, HostKeyChangedError, TransportLostError, SessionLostError, RemoteCommandError,
        RemoteDiskError, RemoteUnwritableError,
    ]
    for cls in classes:
        if cls.exit_code == code:
            return cls
    return RemoteCommandError
