"""Errors raised on the device side.

Every error carries the process exit code that the benchmark agent and the host CLI use for it, and a hint
that says how to fix it. The codes are part of edgeify's public contract (README, "Exit codes"); the host side
(``edgeify.errors``) continues the same table.
"""

from __future__ import annotations


class EdgeifyRuntimeError(Exception):
    """Base class: ``exit_code`` is the documented process exit code, ``hint`` the fix."""

    exit_code = 1
    hint = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def to_dict(self) -> dict:
        return {"type": type(self).__name__, "message": self.message, "hint": self.hint,
                "exit_code": self.exit_code}


class InputSignatureError(EdgeifyRuntimeError):
    """Inputs do not match the model's signature (names, shapes, dtypes)."""

    exit_code = 5


class EngineMissingError(EdgeifyRuntimeError):
    """The engine a bundle needs is not installed, or too old, on this device."""

    exit_code = 11


class BundleError(EdgeifyRuntimeError):
    """A bundle is malformed, unsafe (path traversal) or fails its integrity check (sha256)."""

    exit_code = 12


class EngineBuildError(EdgeifyRuntimeError):
    """Building the engine on the device failed (e.g. TensorRT rejected the ONNX). Same code as a failed
    conversion on the host."""

    exit_code = 8
