"""Gone: the benchmark orchestrator is ``edgeify.bench``; the device steps are ``deploy.device_steps``. This shim
keeps the deployer's lazy import working until it imports ``device_steps`` itself."""

from __future__ import annotations

from .device_steps import run_device_steps_on_site

__all__ = ["run_device_steps_on_site"]
