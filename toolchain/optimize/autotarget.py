"""``--target auto``: the board whose CPU the device's fingerprint matches best, and why."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeify.deploy.connect import open_site
from edgeify.deploy.deployer import ensure_runtime
from edgeify.deploy.inventory import Inventory
from edgeify.deploy.site_exec import run_module
from edgeify.errors import TargetError

from .space import DeviceFacts

if TYPE_CHECKING:
    from edgeify.targets import Registry
    from edgeify.targets.spec import TargetSpec

#: fingerprint arch -> target arch
_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64", "armv7l": "armv7l"}


def choose_target(registry: Registry, facts: DeviceFacts) -> tuple[TargetSpec, str]:
    """The target for ``facts``: same arch, every required CPU feature present, most features matched
    (then a verified board, then the model name); raises TargetError when none fits."""

    arch = _ARCH.get(facts.arch, facts.arch)
    flags = set(facts.flags)
    fits: list[tuple[tuple[int, int, int], TargetSpec]] = []
    for spec in registry:
        if spec.arch != arch:
            continue
        missing = [f for f in spec.cpu.features if f not in flags]
        if missing:
            continue
        model_match = int(bool(spec.cpu.model) and spec.cpu.model.lower() in facts.cpu_model.lower())
        fits.append(((model_match, len(spec.cpu.features), int(spec.verified_on_hardware)), spec))
    if not fits:
        raise TargetError(f"--target auto: no target matches this device ({facts.arch}, {facts.cpu_model or 'CPU ?'})",
                          hint="pass --target NAME (see `edgeify targets`)")
    fits.sort(key=lambda t: t[0], reverse=True)
    spec = fits[0][1]
    feats = ", ".join(spec.cpu.features) or "none required"
    others = [s.name for _, s in fits[1:]]
    why = (f"{spec.name}: {facts.arch} CPU '{facts.cpu_model or '?'}' has every feature it requires ({feats})"
           + (f"; the most specific of {', '.join([spec.name, *others])}" if others else ""))
    if spec.cpu.model and spec.cpu.model.lower() in facts.cpu_model.lower():
        why += f"; CPU model matches {spec.cpu.model}"
    return spec, why


def device_facts(device: str) -> DeviceFacts:
    """The fingerprint of a device from the devices file, taken there by the runtime's own fingerprint program
    (the runtime is copied first if the device lacks this version)."""

    with open_site(Inventory().get(device)) as site:
        _, prep = ensure_runtime(site)
        fp = run_module(site, "edgeify_runtime.fingerprint", "--compact", timeout=60,
                        runtime_path=prep["runtime_path"], what="the fingerprint program")
    return DeviceFacts.from_fingerprint(fp)
