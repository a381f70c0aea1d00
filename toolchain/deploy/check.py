"""``edgeify devices check``: connect to a device, make sure the runtime is there, fingerprint it and compare the
fingerprint with the device's target (arch, engines, CPU features)."""

from __future__ import annotations

import posixpath
import time
from typing import Any

from ..errors import EdgeifyError
from ..targets import load_registry
from .connect import open_site
from .deployer import ensure_runtime
from .inventory import Device
from .site_exec import run_module


def check_device(dev: Device, *, trust_new_host_key: bool = False, passphrase: str | None = None) -> dict[str, Any]:
    """Connect, make sure the runtime is cached there, take the fingerprint, compare it with the target."""

    t0 = time.perf_counter()
    with open_site(dev, trust_new_host_key=trust_new_host_key, passphrase=passphrase) as site:
        site.transport.connect()
        connect_s = time.perf_counter() - t0
        rt, prep = ensure_runtime(site)
        fp = run_module(site, "edgeify_runtime.fingerprint", "--compact", timeout=60, what="the fingerprint",
                        runtime_path=site.runtime_path or posixpath.join(prep["workdir"],
                                                                                          "runtime", rt.file))
        host_key = getattr(site.transport, "host_key_fingerprint", None)
        trusted = getattr(site.transport, "trusted_new_key", False)
    return {"device": dev.name, "target": dev.target, "connect_s": round(connect_s, 3), "host_key": host_key,
            "host_key_trusted_now": trusted, "workdir": prep["workdir"], "free_mb": round(prep["free_bytes"] / 1e6, 1),
            "fingerprint": fp, "fit": target_fit(dev.target, fp)}


def target_fit(target: str, fp: dict[str, Any]) -> dict[str, Any]:
    """How a device's fingerprint fits a target: arch, the target's engines present/missing, CPU features."""

    try:
        spec, _ = load_registry().resolve(target)
    except EdgeifyError:
        return {"target_known": False}
    engines = fp.get("engines") or {}
    missing = {name: e.install_hint or f"pip install {e.runtime}" for name, e in spec.engines.items()
               if e.runtime not in engines}
    features = [f for f in spec.cpu.features if f not in ((fp.get("cpu") or {}).get("isa") or [])]
    return {"target_known": True, "arch_ok": fp.get("arch") == spec.arch, "target_arch": spec.arch,
            "engines_present": {n: engines[e.runtime] for n, e in spec.engines.items() if e.runtime in engines},
            "engines_missing": missing, "cpu_features_missing": features}


__all__ = ["check_device", "target_fit"]
