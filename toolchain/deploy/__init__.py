"""Deploying bundles to devices and benchmarking them there (``edgeify devices|deploy|rollback``,
``edgeify bench --device``).

The pieces, each in its own module (nothing here imports paramiko until an SSH connection is made):

- ``transport``: the contract every transport implements (run with a deadline, put, get, close);
- ``local`` / ``ssh``: the two transports (this machine; a device over SSH with paramiko);
- ``sshconfig``: resolving a host the way OpenSSH does, from ``~/.ssh/config``;
- ``inventory``: the devices file (``devices.toml`` in edgeify's config dir);
- ``deployer``: upload, verify, install atomically, roll back;
- ``site`` / ``site_exec``: where device-side code runs (this machine or a device) and the one way to run it;
- ``fleet``: one function on many devices in parallel, one outcome each (``edgeify.bench`` benchmarks through it).
"""

from __future__ import annotations

from .transport import CommandResult, Transport

__all__ = ["CommandResult", "Transport"]
