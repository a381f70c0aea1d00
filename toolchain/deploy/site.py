"""A site: where device-side code runs. A transport (SSH or this machine), the Python to run there, the work
directory, and where ``edgeify_runtime`` is importable.

"local" is a site like any other: ``DeviceSite.local()`` runs the same command lines over ``LocalTransport`` that
an SSH device runs over ``SSHTransport`` (``site_exec.run_module`` builds them).

>>> site = DeviceSite.local()
>>> site.name, site.is_local, site.runtime_path == installed_runtime_path()
('local', True, True)
"""

from __future__ import annotations

import sys
from pathlib import Path

import edgeify_runtime

from .inventory import DEFAULT_PYTHON, DEFAULT_WORKDIR, Device
from .local import LocalTransport
from .transport import Transport


def installed_runtime_path() -> str:
    """The directory holding the ``edgeify_runtime`` package this host imports (PYTHONPATH for a local site)."""

    return str(Path(edgeify_runtime.__file__).resolve().parent.parent)


class DeviceSite:
    """A device's Python and work directory behind a transport.

    ``runtime_path`` is the ``PYTHONPATH`` entry under which ``edgeify_runtime`` imports on the device: the
    runtime zip in the work directory once it is installed there (remote sites), the installed package on this
    machine (local sites).
    """

    def __init__(self, transport: Transport, *, name: str = "device", python: list[str] | None = None,
                 workdir: str | None = None, runtime_path: str | None = None, local: bool = False) -> None:
        self.transport = transport
        self.name = name
        self.python = list(python or [DEFAULT_PYTHON])
        self.workdir = workdir or DEFAULT_WORKDIR
        self.runtime_path = runtime_path
        self.is_local = local

    @classmethod
    def for_device(cls, transport: Transport, device: Device) -> DeviceSite:
        return cls(transport, name=device.name, python=device.python_argv, workdir=device.remote_workdir)

    @classmethod
    def local(cls, *, name: str = "local", workdir: str | None = None) -> DeviceSite:
        """This machine: this Python, the installed ``edgeify_runtime``, commands as subprocesses."""
        return cls(LocalTransport(name), name=name, python=[sys.executable], workdir=workdir,
                   runtime_path=installed_runtime_path(), local=True)

    def __repr__(self) -> str:
        return f"DeviceSite({self.name!r}, python={self.python!r}, workdir={self.workdir!r})"


__all__ = ["DeviceSite", "installed_runtime_path"]
