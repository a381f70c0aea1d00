"""The engines edgeify builds bundles for: entry-point group ``edgeify.engines``.

Each entry is ``name = "module:AdapterClass"``: the device-side adapter (``edgeify_runtime.engines.base.
EngineAdapter``) is the engine's whole record — its typed options (what a bundle may carry), tuning axes (what
``optimize`` varies), CPU placement, profile and intermediate-dump hooks, version check and the target families it
serves beyond those whose target files name it. The host derives everything from it; there is no second table.
The built-ins register in edgeify's own ``pyproject.toml``, a plugin in its own; one name from two distributions is
an EngineConflictError naming both. ``edgeify engines`` lists them; ``edgeify targets`` shows which engines each
target can use.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from edgeify_runtime.engines import EngineAdapter, check_unique, entry_points, load_adapter
from edgeify_runtime.errors import EngineMissingError

if TYPE_CHECKING:
    from edgeify.targets.spec import TargetSpec

#: the host-side entry-point group
GROUP = "edgeify.engines"


@dataclass(frozen=True)
class HostEngine:
    """One engine edgeify builds for: its adapter class and the distribution that registered it."""

    name: str
    distribution: str
    adapter: type[EngineAdapter]

    @property
    def target_families(self) -> tuple[str, ...]:
        return tuple(self.adapter.target_families)

    def status(self) -> dict[str, Any]:
        """``{name, distribution, available, reason}`` (``available()`` imports no engine)."""
        try:
            ok, reason = self.adapter.available()
        except Exception as exc:  # a broken plugin is reported, not fatal to the listing
            ok, reason = False, f"{type(exc).__name__}: {exc}"
        return {"name": self.name, "distribution": self.distribution, "available": bool(ok), "reason": reason}

    def describe(self) -> dict[str, Any]:
        """The engine's declared contract, for ``edgeify engines --verbose``."""
        a = self.adapter
        return {**self.status(), "adapter": f"{a.__module__}:{a.__qualname__}",
                "options": {k: {"bundle": o.bundle, "doc": o.doc} for k, o in a.option_specs.items()},
                "tuning_axes": {t.option: list(t.values) for t in a.tuning_axes},
                "cpu_placement": dict(a.cpu_placement), "profile": a.profile_source, "dump": a.can_dump,
                "target_families": list(a.target_families)}


@functools.lru_cache(maxsize=1)
def host_engines() -> Mapping[str, HostEngine]:
    """name -> HostEngine of every ``edgeify.engines`` entry point, read-only (read once per process)."""
    table = check_unique(entry_points(GROUP), "engine")
    return MappingProxyType({name: HostEngine(name, dist, load_adapter(name, value, dist))
                             for name, (value, dist) in sorted(table.items())})


def host_engine(name: str) -> HostEngine:
    try:
        return host_engines()[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(str(name), list(host_engines()), n=1)
        raise EngineMissingError(f"no engine {name!r} is registered (group {GROUP}); edgeify knows "
                                 f"{', '.join(host_engines())}" + (f". Did you mean {close[0]!r}?" if close else ""),
                                 hint="edgeify engines lists them; install the engine's plugin") from None


def engines_for_target(spec: TargetSpec) -> dict[str, str]:
    """The engines ``spec`` can use: its own engine entries (entry name -> the runtime adapter it uses) plus the
    registered engines that declare ``spec``'s family in ``target_families`` (name -> name)."""
    out = {name: str(getattr(eng, "runtime", name) or name) for name, eng in spec.engines.items()}
    for name, eng in host_engines().items():
        if spec.family and spec.family in eng.target_families and name not in out:
            out[name] = name
    return out


__all__ = ["GROUP", "HostEngine", "engines_for_target", "host_engine", "host_engines"]
