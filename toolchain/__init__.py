"""edgeify: take a trained model to edge devices.

Host-side public API (heavy libraries are imported lazily by the steps that need them)::

    from edgeify import build, load_registry
    result = build("model.onnx", target="x86", precision="int8", calib="calib.npz", out="build/m")
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .build import BuildResult, build
    from .targets import Registry, TargetSpec, load_registry

__all__ = ["BuildResult", "Registry", "TargetSpec", "__version__", "build", "load_registry"]


def __getattr__(name: str) -> Any:  # lazy: keeps `import edgeify` and `edgeify --help` fast
    if name in ("build", "BuildResult"):
        from . import build as _build

        return getattr(_build, name)
    if name in ("load_registry", "Registry", "TargetSpec"):
        from . import targets as _targets

        return getattr(_targets, name)
    raise AttributeError(name)
