"""Run-time settings as bundle engine options, in the names the device-side adapters allow-list.

Settings use the bundle engine option names: ``threads``; ONNX Runtime ``graph_optimization_level`` and
``execution_mode``; OpenVINO ``inference_precision`` and ``performance_hint``. An installed adapter that does
not list one of them yet gets the equivalent it understands (OpenVINO ``config`` properties), or the setting is
passed to the benchmark agent only (``threads``) and recorded in the manifest's ``optimize.settings``.
"""

from __future__ import annotations

from typing import Any

from .records import Settings

#: canonical setting -> OpenVINO compile property, for adapters that only take a ``config`` dict
_OPENVINO_PROPERTIES = {"performance_hint": "PERFORMANCE_HINT", "inference_precision": "INFERENCE_PRECISION_HINT"}


def adapter_option_keys(runtime: str) -> frozenset[str]:
    from edgeify_runtime.engines import create_adapter

    try:
        return create_adapter(runtime, None).option_keys
    except Exception:
        return frozenset()


def engine_option_names(runtime: str, option_keys: frozenset[str]) -> set[str]:
    """The settings (canonical names) this adapter can take, natively or through an equivalent."""
    names = {k for k in ("threads", "graph_optimization_level", "execution_mode", "inference_precision",
                         "performance_hint") if k in option_keys}
    if runtime == "openvino" and "config" in option_keys:
        names |= set(_OPENVINO_PROPERTIES)
    return names


def to_engine_options(runtime: str, settings: Settings, option_keys: frozenset[str] | None = None
                      ) -> tuple[dict[str, Any], int | None]:
    """(engine options for the manifest / agent request, threads the agent must be told separately or None)."""
    keys = adapter_option_keys(runtime) if option_keys is None else option_keys
    opts: dict[str, Any] = {}
    config: dict[str, str] = {}
    for k, v in settings.options.items():
        if k in keys:
            opts[k] = v
        elif runtime == "openvino" and k in _OPENVINO_PROPERTIES and "config" in keys:
            config[_OPENVINO_PROPERTIES[k]] = str(v)
    if config:
        opts["config"] = config
    threads = settings.threads
    if threads is not None and "threads" in keys:
        opts["threads"] = threads
        return opts, threads
    return opts, threads
