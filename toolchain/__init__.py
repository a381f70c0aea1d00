"""edgeify: take a trained model to edge devices.

Host-side public API (heavy libraries are imported lazily by the steps that need them)::

    from edgeify import build, deploy, load_registry
    result = build("model.onnx", target="x86", precision="int8", calib="calib.npz", out="build/m")
    outcomes = deploy("build/m", "tag:cameras")        # one Outcome per device: .ok, .result, .error, .unwrap()

``edgeify.build`` and ``edgeify.deploy`` are always the functions (also after ``import edgeify.build`` or
``import edgeify.deploy.inventory``: the implementation packages keep their names for ``from edgeify.build import
BuildResult`` and ``from edgeify.deploy.inventory import Device``, but the package attributes are bound to the
functions here, once, at import; the modules bound here are light and import nothing heavy).
"""

from __future__ import annotations

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

# Bound eagerly, on purpose: a lazy ``__getattr__`` cannot win against the import system, which sets the
# package attribute ``build`` to the submodule whenever ``edgeify.build`` is first imported.
from .build import BuildResult, build
from .deploy.fleet import AppSettings, Outcome, deploy  # light: the deployer and SSH load on first call
from .optimize import optimize  # light: the search loads on first call

if TYPE_CHECKING:
    from .targets import Registry, TargetSpec, load_registry

__all__ = ["AppSettings", "BuildResult", "Outcome", "Registry", "TargetSpec", "__version__", "build", "deploy",
           "load_registry", "optimize"]

_LAZY = {"load_registry": "edgeify.targets", "Registry": "edgeify.targets", "TargetSpec": "edgeify.targets"}


def __getattr__(name: str) -> Any:  # lazy: keeps `import edgeify` and `edgeify --help` fast
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeify' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
