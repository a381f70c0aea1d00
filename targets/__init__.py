"""The target registry (``edgeify.targets``): declarative board specs shipped as TOML package data.

The names below are found on first use (PEP 562): importing ``edgeify.targets.spec`` (the value objects, which the
artifact records use) must not load the registry, which validates pipelines against the steps above it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .registry import Family, Registry, build_registry, load_registry
    from .spec import PRECISIONS, BenchProtocol, EngineSpec, StepRef, TargetSpec, Tolerance

__all__ = ["PRECISIONS", "BenchProtocol", "EngineSpec", "Family", "Registry", "StepRef", "TargetSpec",
           "Tolerance", "build_registry", "load_registry"]

_MODULE = {"Family": "registry", "Registry": "registry", "build_registry": "registry", "load_registry": "registry",
           "PRECISIONS": "spec", "BenchProtocol": "spec", "EngineSpec": "spec", "StepRef": "spec",
           "TargetSpec": "spec", "Tolerance": "spec"}


def __getattr__(name: str) -> Any:
    module = _MODULE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
