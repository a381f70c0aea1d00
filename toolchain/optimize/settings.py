"""Run-time settings as bundle engine options, in the names the device-side adapters allow-list.

What ``optimize`` varies comes from the engine's adapter (``EngineAdapter.tuning_axes``, found through the
``edgeify_runtime.engines`` entry points): ``threads`` plus each axis's option. An adapter that does not list an
axis's option itself but takes it inside a dict option (``TuningAxis.via``, e.g. a compile-property table) gets it
there; a setting no adapter option carries is passed to the benchmark agent only (``threads``) and recorded in the
manifest's ``optimize.settings``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeify_runtime.engines import adapter_class

from .records import Settings

if TYPE_CHECKING:
    from edgeify_runtime.engines import EngineAdapter, TuningAxis


def adapter_for(runtime: str) -> type[EngineAdapter] | None:
    """The adapter class registered as ``runtime`` on this host (None: no adapter for it here)."""

    try:
        return adapter_class(runtime)
    except Exception:  # an engine this host has no adapter for: threads only
        return None


def adapter_option_keys(runtime: str) -> frozenset[str]:
    cls = adapter_for(runtime)
    return cls.option_keys if cls is not None else frozenset()


def tuning_axes(runtime: str) -> tuple[TuningAxis, ...]:
    cls = adapter_for(runtime)
    return tuple(cls.tuning_axes) if cls is not None else ()


def engine_option_names(runtime: str, option_keys: frozenset[str]) -> set[str]:
    """The settings (option names) an adapter with ``option_keys`` can take, natively or through ``via``."""
    names = {"threads"} & set(option_keys)
    for axis in tuning_axes(runtime):
        if axis.option in option_keys or (axis.via is not None and axis.via[0] in option_keys):
            names.add(axis.option)
    return names


def to_engine_options(runtime: str, settings: Settings, option_keys: frozenset[str] | None = None
                      ) -> tuple[dict[str, Any], int | None]:
    """(engine options for the manifest / agent request, threads the agent must be told separately or None)."""
    keys = adapter_option_keys(runtime) if option_keys is None else option_keys
    via = {a.option: a.via for a in tuning_axes(runtime) if a.via is not None}
    opts: dict[str, Any] = {}
    nested: dict[str, dict[str, str]] = {}
    for k, v in settings.options.items():
        if k in keys:
            opts[k] = v
        elif k in via and via[k][0] in keys:
            table, key = via[k]
            nested.setdefault(table, {})[key] = str(v)
    opts.update(nested)
    threads = settings.threads
    if threads is not None and "threads" in keys:
        opts["threads"] = threads
    return opts, threads
