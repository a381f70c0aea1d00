"""Engine adapters and their registry, found by entry points.

Every adapter, the built-in ones included, is registered by the distribution that ships it, in the entry-point
group ``edgeify_runtime.engines``: ``name = "module.path:AdapterClass"`` (see ``runtimes/pyproject.toml``). The
adapter class carries everything about its engine (``engines.base.EngineAdapter``): how to find the engine
without importing it, its typed options, tuning axes, CPU placement, profile and intermediate-dump hooks and
version check. Two distributions registering one name is an EngineConflictError naming both.

Nothing here imports an engine: ``available_engines()`` uses ``importlib.util.find_spec`` and package metadata
only; ``create_adapter`` returns an unloaded adapter, which imports its engine inside ``load``. The registry is
read once (``registry()``, cached) and is read-only.

The runtime zip the deployer installs on a device carries the ``edgeify_runtime`` dist-info (its
``entry_points.txt``), so the built-ins are found there the same way.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Iterable

from ..errors import EngineMissingError
from .base import (
    EngineAdapter,
    EngineInfo,
    Option,
    ProfileRun,
    TuningAxis,
    distribution_version,
    first_importable,
    version_at_least,
    version_tuple,
)

__all__ = [
    "ENGINES", "GROUP", "EngineAdapter", "EngineConflictError", "EngineInfo", "Option", "ProfileRun", "TuningAxis",
    "adapter_class", "adapter_classes", "available_engines", "broken_adapters", "check_bundle_options", "check_unique",
    "create_adapter",
    "engine_info", "engine_status", "entry_points", "installed_version", "is_installed", "load_adapter", "registry",
    "version_at_least", "version_tuple",
]

#: the entry-point group device-side adapters register in
GROUP = "edgeify_runtime.engines"


class EngineConflictError(EngineMissingError, ValueError):
    """Two installed distributions register an engine adapter under one name."""


def entry_points(group: str) -> list[tuple[str, str, str]]:
    """(name, value, distribution) of every entry point in ``group`` (the host reads its own group with it too).

    One distribution counts once (the first on ``sys.path`` wins, as for imports). Works on Python 3.8 (no
    ``entry_points(group=)``, no ``ep.dist``)."""
    from importlib import metadata

    out: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for dist in metadata.distributions():
        try:
            dist_name = str(dist.metadata["Name"] or "")
            eps = [ep for ep in dist.entry_points if ep.group == group]
        except Exception:  # corrupt metadata: skip that distribution, discovery must not fail
            continue
        key = dist_name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        out += [(ep.name, ep.value, dist_name) for ep in eps]
    return out


def check_unique(found: Iterable[tuple[str, str, str]], what: str) -> dict[str, tuple[str, str]]:
    """name -> (value, distribution); a name registered by two distributions is an EngineConflictError."""
    table: dict[str, tuple[str, str]] = {}
    for name, value, dist in found:
        if name in table:
            other_value, other = table[name]
            raise EngineConflictError(
                f"{what} {name!r} is registered twice: by {other} ({other_value}) and by {dist} ({value})",
                hint=f"pip uninstall one of {other}, {dist}")
        table[name] = (value, dist)
    return table


def load_adapter(name: str, value: str, dist: str) -> type[EngineAdapter]:
    import importlib

    mod_name, _, attr = value.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name.strip())
        for part in attr.strip().split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        raise EngineMissingError(f"engine adapter {name!r} from {dist} ({value}) cannot be imported: {exc}",
                                 hint=f"pip install --force-reinstall {dist}") from exc
    if not (isinstance(obj, type) and issubclass(obj, EngineAdapter)) or obj.name != name:
        raise EngineMissingError(f"entry point {name!r} of {dist} ({value}) is not an EngineAdapter named {name!r}",
                                 hint=f"report it to the maintainers of {dist}")
    return obj


@functools.lru_cache(maxsize=1)
def _loaded() -> tuple[Mapping[str, tuple[type[EngineAdapter], str]], Mapping[str, tuple[EngineMissingError, str]]]:
    """(the adapters that import, the ones that do not): one plugin whose adapter cannot be imported (a device half
    deployed without its dependencies, a broken install) is refused by name when used, never breaks the others."""
    table = check_unique(entry_points(GROUP), "engine")
    loaded: dict[str, tuple[type[EngineAdapter], str]] = {}
    broken: dict[str, tuple[EngineMissingError, str]] = {}
    for name, (value, dist) in sorted(table.items()):
        try:
            loaded[name] = (load_adapter(name, value, dist), dist)
        except EngineMissingError as exc:
            broken[name] = (exc, dist)
    return MappingProxyType(loaded), MappingProxyType(broken)


def _classes() -> Mapping[str, tuple[type[EngineAdapter], str]]:
    return _loaded()[0]


def broken_adapters() -> Mapping[str, tuple[EngineMissingError, str]]:
    """name -> (the import error, the distribution) of every registered adapter that cannot be imported."""
    return _loaded()[1]


@functools.lru_cache(maxsize=1)
def registry() -> Mapping[str, EngineInfo]:
    """name -> EngineInfo of every registered adapter, read-only (read once per process)."""
    return MappingProxyType({name: cls.engine_info(dist) for name, (cls, dist) in _classes().items()})


def _build_registry(infos: Iterable[EngineInfo]) -> Mapping[str, EngineInfo]:
    """A read-only name -> EngineInfo table; a duplicate name is an EngineConflictError (a ValueError)."""
    check_unique(((i.name, i.adapter, i.distribution or "?") for i in infos), "engine")
    return MappingProxyType({i.name: i for i in infos})


def __getattr__(name: str) -> Any:  # ``ENGINES``: the registry, read on first use
    if name == "ENGINES":
        return registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _table() -> Mapping[str, EngineInfo]:
    return globals().get("ENGINES") or registry()


def engine_info(name: str) -> EngineInfo:
    """The registry entry for ``name``; EngineMissingError (with a "did you mean") for an unknown name."""
    table = _table()
    try:
        return table[name]
    except KeyError:
        if name in broken_adapters():
            raise broken_adapters()[name][0] from None
        close = difflib.get_close_matches(str(name), list(table), n=1)
        suggestion = f" Did you mean {close[0]!r}?" if close else ""
        raise EngineMissingError(
            f"this edgeify-runtime has no adapter for engine {name!r} "
            f"(it knows {', '.join(table) or 'none: no distribution registers one in ' + GROUP}).{suggestion}",
            hint="pip install --upgrade edgeify-runtime (the bundle may come from a newer edgeify), or install "
                 "the engine's plugin") from None


def adapter_class(name: str) -> type[EngineAdapter]:
    """The adapter class registered as ``name`` (EngineMissingError for an unknown name); nothing is loaded."""
    info = engine_info(name)
    entry = _classes().get(name)
    if entry is not None and entry[0].engine_info().adapter == info.adapter:
        return entry[0]
    return load_adapter(name, info.adapter, info.distribution or "?")


def check_bundle_options(engine: str, options: Mapping[str, Any]) -> None:
    """Refuse engine options in a bundle's manifest that ``engine``'s adapter does not allow (BundleError)."""
    adapter_class(engine).check_bundle_options(options)


def adapter_classes() -> dict[str, type[EngineAdapter]]:
    """Every registered adapter class, by name."""
    return {name: adapter_class(name) for name in _table()}


def _find_module(info: EngineInfo) -> str | None:
    return first_importable(info.modules)


def installed_version(info: EngineInfo) -> str | None:
    """The engine's version from its distribution metadata (no import), or None when no metadata is found."""
    return distribution_version(info.distributions)


def is_installed(name: str) -> bool:
    return _find_module(engine_info(name)) is not None


def available_engines() -> dict[str, str]:
    """Installed engines and their versions, without importing them: ``{"onnxruntime": "1.32.0", ...}``.

    An engine whose module is importable but has no package metadata is reported with version ``"unknown"``.
    """
    found: dict[str, str] = {}
    for name, info in _table().items():
        if _find_module(info) is not None:
            try:
                version = adapter_class(name).installed_version()
            except Exception:  # a broken plugin: its distributions still say
                version = installed_version(info)
            found[name] = version or "unknown"
    return found


def engine_status() -> list[dict[str, Any]]:
    """One row per registered adapter: ``{name, distribution, available, reason}`` (the adapter's ``available()``,
    which imports no engine)."""
    rows = []
    for name, info in _table().items():
        try:
            ok, reason = adapter_class(name).available()
        except Exception as exc:  # a broken plugin is reported, not fatal to the listing
            ok, reason = False, f"{type(exc).__name__}: {exc}"
        rows.append({"name": name, "distribution": info.distribution, "available": bool(ok), "reason": reason})
    for name, (exc, dist) in broken_adapters().items():
        rows.append({"name": name, "distribution": dist, "available": False, "reason": str(exc)})
    return rows


def create_adapter(name: str, min_version: str | None = None) -> EngineAdapter:
    """A fresh, unloaded adapter for engine ``name``.

    Raises EngineMissingError naming the pip package when the engine is not installed, and naming the version
    needed when the installed one is older than ``min_version``.
    """
    info = engine_info(name)
    if _find_module(info) is None:
        raise EngineMissingError(
            f"engine {name!r} is not installed on this device: {info.install_command}",
            hint=info.install_command)
    cls = adapter_class(name)
    cls.check_min_version(installed_version(info), min_version)
    adapter = cls()
    adapter.min_version = min_version
    return adapter

