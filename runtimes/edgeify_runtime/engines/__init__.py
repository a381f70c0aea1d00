"""Engine adapters and their registry.

The registry maps an adapter name (what a manifest's ``engine.name`` says) to where its adapter class
lives and how to find the engine without importing it. Adding an engine is one ``EngineInfo(...)`` line in
``_ENGINES`` plus its adapter module. Nothing here imports an engine: ``available_engines()`` uses
``importlib.util.find_spec`` and package metadata only; ``create_adapter`` imports the adapter module, and
the adapter imports its engine inside ``load``.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from collections.abc import Mapping
from types import MappingProxyType

from ..errors import EngineMissingError
from .base import EngineAdapter, EngineInfo, check_min_version, version_at_least, version_tuple

try:  # Python 3.8+: importlib.metadata is in the standard library
    from importlib import metadata as _metadata
except ImportError:  # pragma: no cover - Python < 3.8 is not supported, keep the failure readable
    _metadata = None  # type: ignore[assignment]

__all__ = [
    "ENGINES", "EngineAdapter", "EngineInfo", "available_engines", "create_adapter", "engine_info",
    "installed_version", "is_installed", "version_at_least", "version_tuple",
]

_ENGINES = (
    EngineInfo("onnxruntime", "edgeify_runtime.engines.onnxruntime:OnnxRuntimeAdapter", ("onnxruntime",),
               ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml",
                "onnxruntime-qnn", "onnxruntime-silicon"), "onnxruntime"),
    EngineInfo("openvino", "edgeify_runtime.engines.openvino:OpenVINOAdapter", ("openvino",),
               ("openvino",), "openvino"),
    EngineInfo("tensorrt", "edgeify_runtime.engines.tensorrt:TensorRTAdapter", ("tensorrt",),
               ("tensorrt", "tensorrt-cu12", "tensorrt_cu12", "tensorrt-libs"), "tensorrt",
               "on a Jetson: sudo apt-get install nvidia-jetpack (or python3-libnvinfer), "
               "plus pip install cuda-python"),
    # no distributions: ai-edge-litert and tensorflow/tflite-runtime number releases differently; the adapter
    # reports the version of the module it imported and checks min_version itself (see engines/litert.py)
    EngineInfo("litert", "edgeify_runtime.engines.litert:LiteRTAdapter",
               ("ai_edge_litert", "tflite_runtime", "tensorflow"), (), "ai-edge-litert"),
)


def _build_registry(infos: tuple[EngineInfo, ...]) -> Mapping[str, EngineInfo]:
    table: dict[str, EngineInfo] = {}
    for info in infos:
        if info.name in table:
            raise ValueError(f"engine {info.name!r} is registered twice")
        table[info.name] = info
    return MappingProxyType(table)


#: name -> EngineInfo, read-only.
ENGINES: Mapping[str, EngineInfo] = _build_registry(_ENGINES)


def engine_info(name: str) -> EngineInfo:
    """The registry entry for ``name``; EngineMissingError (with a "did you mean") for an unknown name."""
    try:
        return ENGINES[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(ENGINES), n=1)
        suggestion = f" Did you mean {close[0]!r}?" if close else ""
        raise EngineMissingError(
            f"this edgeify-runtime has no adapter for engine {name!r} "
            f"(it knows {', '.join(ENGINES)}).{suggestion}",
            hint="pip install --upgrade edgeify-runtime (the bundle may come from a newer edgeify)") from None


def _find_module(info: EngineInfo) -> str | None:
    for mod in info.modules:
        try:
            if importlib.util.find_spec(mod) is not None:
                return mod
        except (ImportError, ValueError):  # a broken parent package or a module with __spec__ = None
            continue
    return None


def installed_version(info: EngineInfo) -> str | None:
    """The engine's version from its distribution metadata (no import), or None when no metadata is found."""
    if _metadata is None:  # pragma: no cover
        return None
    for dist in info.distributions:
        try:
            return str(_metadata.version(dist))
        except Exception:  # PackageNotFoundError, or corrupt metadata: discovery must not fail
            continue
    return None


def is_installed(name: str) -> bool:
    return _find_module(engine_info(name)) is not None


def available_engines() -> dict[str, str]:
    """Installed engines and their versions, without importing them: ``{"onnxruntime": "1.32.0", ...}``.

    An engine whose module is importable but has no package metadata is reported with version ``"unknown"``.
    """
    found: dict[str, str] = {}
    for name, info in ENGINES.items():
        if _find_module(info) is not None:
            found[name] = installed_version(info) or "unknown"
    return found


def create_adapter(name: str, min_version: str | None = None) -> EngineAdapter:
    """A fresh, unloaded adapter for engine ``name``.

    Raises EngineMissingError naming the pip package when the engine is not installed, and naming the version
    needed when the installed one is older than ``min_version``.
    """
    info = engine_info(name)
    module = _find_module(info)
    if module is None:
        raise EngineMissingError(
            f"engine {name!r} is not installed on this device: {info.install_command}",
            hint=info.install_command)
    check_min_version(info, installed_version(info), min_version)
    mod_name, _, cls_name = info.adapter.partition(":")
    cls = getattr(importlib.import_module(mod_name), cls_name)
    adapter = cls()
    if not isinstance(adapter, EngineAdapter):  # pragma: no cover - a registration mistake
        raise TypeError(f"{info.adapter} is not an EngineAdapter")
    adapter.min_version = min_version
    return adapter
