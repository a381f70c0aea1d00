"""A bundle's device steps on the device (``python -m edgeify_runtime.device_steps``), e.g. the TensorRT engine
built on the Jetson: ``edgeify deploy`` runs them after installing the bundle."""

from __future__ import annotations

import json
import posixpath
from typing import Any

from .site import DeviceSite
from .site_exec import run_module

#: seconds allowed for a bundle's device steps (a TensorRT engine build takes minutes on an Orin Nano)
DEVICE_STEPS_TIMEOUT_S = 3600.0


def run_device_steps_on_site(site: DeviceSite, report: Any, *, options: dict[str, Any] | None = None,
                             timeout: float = DEVICE_STEPS_TIMEOUT_S) -> list[dict[str, Any]]:
    """Run the device steps of the installed ``current`` version of ``report.name``; what each step did.

    Raises the typed error the device reported: EngineMissingError (exit 11) when the device has no TensorRT,
    ConversionError (8) when the engine build failed, BundleError (12)."""
    workdir = report.workdir or ""
    args = ["--bundle", posixpath.join(workdir, "bundles", report.name, "current")]
    if options:
        args += ["--options", json.dumps(options)]
    runtime = getattr(site, "runtime_path", None) or posixpath.join(workdir, "runtime", report.runtime or "")
    reply = run_module(site, "edgeify_runtime.device_steps", *args, timeout=timeout, runtime_path=runtime,
                       what="the device steps (see the engine build log in the bundle's engines/ directory)")
    return list(reply.get("steps") or [])


__all__ = ["DEVICE_STEPS_TIMEOUT_S", "run_device_steps_on_site"]
