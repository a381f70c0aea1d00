"""edgeify: take a trained model to edge devices.

Host-side public API (heavy libraries are imported lazily by the steps that need them)::

    from edgeify import build, deploy, load_registry
    result = build("model.onnx", target="x86", precision="int8", calib="calib.npz", out="build/m")
    outcomes = deploy("build/m", "tag:cameras")        # one Outcome per device: .ok, .result, .error, .unwrap()

``import edgeify`` loads nothing but this file: each public name is found on first use (PEP 562 ``__getattr__``,
table ``_PUBLIC``), so ``edgeify --help`` does not pay for the build engine, pydantic or numpy.

``edgeify.build``, ``edgeify.deploy`` and ``edgeify.optimize`` are always the functions, also after ``import
edgeify.build`` or ``import edgeify.deploy.inventory`` (the implementation modules keep their names for ``from
edgeify.build import BuildResult`` and ``from edgeify.deploy.inventory import Device``). The import system sets a
package attribute to the submodule whenever that submodule is first imported, and a module ``__getattr__`` is only
asked for names the module does not have; so these three names are properties of the package's module class, which
the import system's assignment cannot replace.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .build import BuildResult, build
    from .deploy.fleet import AppSettings, Outcome, deploy
    from .optimize import optimize
    from .targets import Registry, TargetSpec, load_registry

__all__ = ["AppSettings", "BuildResult", "Outcome", "Registry", "TargetSpec", "__version__", "build", "deploy",
           "load_registry", "optimize"]

#: public name -> the module that defines it
_PUBLIC = {"build": "edgeify.build", "BuildResult": "edgeify.build", "deploy": "edgeify.deploy.fleet",
           "Outcome": "edgeify.deploy.fleet", "AppSettings": "edgeify.deploy.fleet", "optimize": "edgeify.optimize",
           "load_registry": "edgeify.targets", "Registry": "edgeify.targets", "TargetSpec": "edgeify.targets"}


def __getattr__(name: str) -> Any:  # PEP 562: keeps `import edgeify` and `edgeify --help` fast
    module = _PUBLIC.get(name)
    if module is None:
        return _submodule(name)
    return getattr(importlib.import_module(module), name)


def _submodule(name: str) -> Any:
    """``edgeify.targets`` after a bare ``import edgeify``, as when the package imported it."""
    if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return importlib.import_module(f"{__name__}.{name}")


def _function(name: str) -> property:
    """A package attribute that is always the public function ``name``, never the submodule of that name (a
    value assigned by a caller, e.g. a test's monkeypatch, is kept until deleted)."""
    slot = f"_assigned_{name}"

    def get(pkg: types.ModuleType) -> Any:
        if slot in pkg.__dict__:
            return pkg.__dict__[slot]
        return getattr(importlib.import_module(_PUBLIC[name]), name)

    def set_(pkg: types.ModuleType, value: Any) -> None:
        if not isinstance(value, types.ModuleType):  # the import system binding the submodule is ignored
            pkg.__dict__[slot] = value

    def delete(pkg: types.ModuleType) -> None:
        pkg.__dict__.pop(slot, None)

    return property(get, set_, delete)


class _Package(types.ModuleType):
    build = _function("build")
    deploy = _function("deploy")
    optimize = _function("optimize")


sys.modules[__name__].__class__ = _Package
