"""The target registry (``edgeify.targets``): declarative board specs shipped as TOML package data."""

from .registry import Family, Registry, build_registry, load_registry
from .spec import PRECISIONS, BenchProtocol, EngineSpec, StepRef, TargetSpec, Tolerance

__all__ = ["PRECISIONS", "BenchProtocol", "EngineSpec", "Family", "Registry", "StepRef", "TargetSpec",
           "Tolerance", "build_registry", "load_registry"]
