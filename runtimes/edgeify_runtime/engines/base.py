"""The engine adapter contract and the small helpers every adapter shares.

An adapter wraps one inference engine (ONNX Runtime, OpenVINO, ...). It imports its engine inside ``load``
only, so importing ``edgeify_runtime`` never pulls in an engine. The facade (``edgeify_runtime.session``)
does input validation, casting and layout handling; an adapter receives feeds that already match the
artifact's own signature and returns one array per manifest output name.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import BundleError, EngineMissingError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np

    from ..manifest import Manifest


@dataclass(frozen=True)
class EngineInfo:
    """One registered engine: how to find it without importing it, and how to tell a user to install it.

    ``adapter`` is ``"module.path:ClassName"``; ``modules`` are the engine's importable top-level module names
    (the first one found is used); ``distributions`` are the pip distribution names whose metadata gives the
    version (several builds of one engine exist, e.g. ``onnxruntime-gpu``); ``pip`` is the install command's
    argument that fixes a missing engine.
    """

    name: str
    adapter: str
    modules: tuple[str, ...]
    distributions: tuple[str, ...]
    pip: str
    #: how to install the engine when pip is not the way (e.g. TensorRT on a Jetson comes with JetPack)
    hint: str = ""

    @property
    def install_command(self) -> str:
        return self.hint or f"pip install {self.pip}"


class EngineAdapter:
    """Base class of engine adapters.

    Lifetime: construct with no arguments (cheap, no engine import), ``load`` once, ``run`` many times,
    ``close`` once. Subclasses set the class attributes and implement ``_load`` and ``run``.
    """

    #: adapter name, as written in a manifest's ``engine.name``
    name: ClassVar[str] = ""
    #: option keys this adapter understands (from the manifest's ``engine.options`` or ``load(options=...)``)
    option_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        self.version: str = ""
        #: the imported engine module's name (``onnxruntime``, ``openvino``), for reports
        self.module: str = ""
        self.threads: int = 0
        self.options: dict[str, Any] = {}
        #: the manifest's ``engine.min_version``, checked again after import when metadata had no version
        self.min_version: str | None = None
        self._loaded = False

    def _import_engine(self) -> ModuleType:
        """Import this adapter's engine, set ``module``/``version``, and enforce ``min_version``."""
        from . import engine_info, installed_version

        info = engine_info(self.name)
        errors: list[str] = []
        for mod_name in info.modules:
            try:
                module = importlib.import_module(mod_name)
            except ModuleNotFoundError as exc:
                if exc.name == mod_name:
                    continue
                errors.append(f"{mod_name}: {exc}")
                continue
            except Exception as exc:  # a broken native library raises OSError/RuntimeError, not ImportError
                errors.append(f"{mod_name}: {type(exc).__name__}: {exc}")
                continue
            self.module = mod_name
            version = installed_version(info) or str(getattr(module, "__version__", "") or "")
            self.version = version or "unknown"
            check_min_version(info, version or None, self.min_version)
            return module
        if errors:
            raise EngineMissingError(
                f"engine {self.name!r} is installed but cannot be imported ({'; '.join(errors)})",
                hint=f"pip install --force-reinstall {info.pip}")
        raise EngineMissingError(
            f"engine {self.name!r} is not installed on this device: {info.install_command}",
            hint=info.install_command)

    # -- lifecycle -----------------------------------------------------------------------------------------
    def load(self, bundle_dir: str | Path, manifest: Manifest, threads: int,
             options: dict[str, Any] | None = None) -> None:
        """Load the manifest's artifact from ``bundle_dir`` with ``threads`` intra-op threads."""
        opts = dict(options or {})
        unknown = sorted(set(opts) - self.option_keys)
        if unknown:
            raise BundleError(
                f"engine {self.name!r} does not understand the option(s) {', '.join(map(repr, unknown))}; "
                f"it knows {sorted(self.option_keys)}",
                hint="upgrade edgeify-runtime if the bundle was built by a newer edgeify, or fix the options")
        self.threads = int(threads)
        self.options = opts
        artifact = Path(bundle_dir) / manifest.engine.artifact
        if not artifact.is_file():
            raise BundleError(f"bundle {bundle_dir}: engine artifact {manifest.engine.artifact!r} is missing",
                              hint="rebuild or redeploy the bundle")
        self._load(artifact, manifest)
        self._loaded = True

    def _load(self, artifact: Path, manifest: Manifest) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        """Run one inference; ``feeds`` maps manifest input names to arrays in the engine's layout."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the engine's session; idempotent."""
        self._loaded = False

    def __repr__(self) -> str:
        state = "loaded" if self._loaded else "not loaded"
        return f"<{type(self).__name__} {self.name} {self.version or '?'} threads={self.threads} {state}>"


# -- helpers shared by adapters ------------------------------------------------------------------------------

def version_tuple(version: str) -> tuple[int, ...]:
    """The leading numeric release components of a version string: ``"2024.4.1-16618"`` -> ``(2024, 4, 1)``.

    Parsing stops at the first component that does not start with a digit (``"1.18.0rc1"`` -> ``(1, 18, 0)``,
    ``"1.19.dev2"`` -> ``(1, 19)``); pre-release tags therefore compare equal to their release, which is the
    lenient choice for a minimum-version check. Trailing zeros are dropped so ``"1.17"`` == ``"1.17.0"``.
    """
    parts: list[int] = []
    release = re.split(r"[-+ ]", str(version).strip().lstrip("vV"), maxsplit=1)[0]
    for comp in release.split("."):
        m = re.match(r"\d+", comp)
        if not m:
            break
        parts.append(int(m.group()))
        if m.end() != len(comp):  # "0rc1": keep 0, stop after it
            break
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def version_at_least(installed: str, minimum: str) -> bool:
    """``installed >= minimum`` on the numeric release components (see ``version_tuple``)."""
    return version_tuple(installed) >= version_tuple(minimum)


def check_min_version(info: EngineInfo, installed: str | None, minimum: str | None) -> None:
    """Raise EngineMissingError when ``installed`` is older than ``minimum``; unknown versions pass."""
    if not minimum or not installed:
        return
    if not version_tuple(minimum):
        raise BundleError(f"manifest: engine.min_version {minimum!r} is not a version number")
    if not version_at_least(installed, minimum):
        raise EngineMissingError(
            f"the bundle needs {info.name} >= {minimum}, but {installed} is installed",
            hint=f"pip install --upgrade '{info.pip}>={minimum}'")


def names_to_positions(wanted: list[str] | tuple[str, ...], have: list[list[str]], what: str,
                       engine: str) -> list[int]:
    """Map manifest tensor names to engine port positions.

    ``have[i]`` holds every name of the engine's ``i``-th port. A name found among them wins; when no
    manifest name matches any port name at all, the manifest order is used (converters sometimes rename
    tensors), as long as the counts agree. A partial match is an error: guessing would silently swap tensors.
    """
    if len(wanted) != len(have):
        raise BundleError(f"{engine}: the artifact has {len(have)} {what}(s) but the manifest lists "
                          f"{len(wanted)}", hint="rebuild the bundle")
    lookup: dict[str, int] = {}
    for i, names in enumerate(have):
        for n in names:
            lookup.setdefault(n, i)
    found = [lookup.get(n) for n in wanted]
    if all(i is not None for i in found) and len(set(found)) == len(found):
        return [int(i) for i in found]  # type: ignore[arg-type]
    if all(i is None for i in found):
        return list(range(len(wanted)))
    missing = [n for n, i in zip(wanted, found) if i is None]
    if not missing:
        raise BundleError(f"{engine}: several manifest {what}s name the same artifact tensor: {list(wanted)}",
                          hint="rebuild the bundle")
    raise BundleError(f"{engine}: the artifact has no {what}(s) named {missing}; it has "
                      f"{[names[0] if names else '?' for names in have]}", hint="rebuild the bundle")


# -- engine options a bundle may carry ---------------------------------------------------------------------------
#: what a bundle's manifest (``engine.options``: data from wherever the bundle came from) may ask of an engine.
#: Anything else is refused with BundleError (exit 12): options such as ONNX Runtime ``provider_options`` or
#: ``session_config`` and OpenVINO ``CACHE_DIR`` can name files or libraries to load. Options a caller passes to
#: ``load(options=...)`` itself are the caller's choice and are not restricted here.
_PROVIDER = re.compile(r"^[A-Za-z][A-Za-z0-9]*ExecutionProvider$")
_OV_DEVICE = re.compile(r"^[A-Z][A-Z0-9_.:,]*$")
_OV_CONFIG = {"INFERENCE_PRECISION_HINT": ("f32", "bf16", "f16"),
              "PERFORMANCE_HINT": ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"),
              "EXECUTION_MODE_HINT": ("PERFORMANCE", "ACCURACY"), "NUM_STREAMS": None, "INFERENCE_NUM_THREADS": None,
              "ENABLE_CPU_PINNING": ("YES", "NO", "True", "False"),
              "ENABLE_HYPER_THREADING": ("YES", "NO", "True", "False")}
_ORT_SESSION_CONFIG = {"session.x64quantprecision": ("0", "1"), "session.intra_op.allow_spinning": ("0", "1"),
                       "session.inter_op.allow_spinning": ("0", "1")}


def _int(lo: int, hi: int) -> Any:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _one_of(*values: Any) -> Any:
    return lambda v: isinstance(v, str) and v in values


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _providers(v: Any) -> bool:
    return isinstance(v, list) and 0 < len(v) <= 8 and all(isinstance(p, str) and _PROVIDER.match(p) for p in v)


def _scalar_table(allowed: dict[str, Any]) -> Any:
    def check(v: Any) -> bool:
        if not isinstance(v, dict):
            return False
        for key, value in v.items():
            if key not in allowed or not isinstance(value, (str, int)) or isinstance(value, bool):
                return False
            values = allowed[key]
            if values is None and not str(value).isdigit():
                return False
            if values is not None and str(value) not in values:
                return False
        return True
    return check


BUNDLE_OPTIONS: dict[str, dict[str, Any]] = {
    "onnxruntime": {"threads": _int(1, 1024),
                    "graph_optimization_level": _one_of("disable", "basic", "extended", "all"),
                    "execution_mode": _one_of("sequential", "parallel"), "providers": _providers,
                    "provider_fallback": _is_bool, "session_config": _scalar_table(_ORT_SESSION_CONFIG)},
    "openvino": {"threads": _int(1, 1024), "device": lambda v: isinstance(v, str) and bool(_OV_DEVICE.match(v)),
                 "inference_precision": _one_of(*_OV_CONFIG["INFERENCE_PRECISION_HINT"]),
                 "performance_hint": _one_of(*_OV_CONFIG["PERFORMANCE_HINT"]), "config": _scalar_table(_OV_CONFIG)},
    "litert": {"threads": _int(1, 1024), "xnnpack": _is_bool},
    "tensorrt": {"dla_core": lambda v: v is None or _int(0, 15)(v), "gpu_fallback": _is_bool,
                 "builder": _one_of("auto", "trtexec", "python"), "workspace_mib": _int(1, 1 << 20),
                 "builder_optimization_level": _int(0, 5), "min_batch": _int(1, 1 << 16),
                 "opt_batch": _int(1, 1 << 16), "max_batch": _int(1, 1 << 16)},
}


def check_bundle_options(engine: str, options: Mapping[str, Any]) -> None:
    """Refuse engine options in a bundle's manifest that are not on the allow-list (BundleError, exit 12)."""
    allowed = BUNDLE_OPTIONS.get(engine, {})
    bad = []
    for key, value in options.items():
        check = allowed.get(key)
        if check is None:
            bad.append(f"{key!r} (not an option a bundle may set)")
        elif not check(value):
            bad.append(f"{key}={str(value)[:80]!r} (not an allowed value)")
    if bad:
        raise BundleError(f"the bundle's engine options are refused: {'; '.join(bad)}",
                          hint=f"a bundle may set only {', '.join(sorted(allowed)) or 'no options'} for {engine}; "
                               "rebuild it, or pass other options to load(options=...) yourself")
