"""The engine adapter contract and the small helpers every adapter shares.

An adapter wraps one inference engine (ONNX Runtime, OpenVINO, ...). It imports its engine inside ``load``
only, so importing ``edgeify_runtime`` never pulls in an engine. The facade (``edgeify_runtime.session``)
does input validation, casting and layout handling; an adapter receives feeds that already match the
artifact's own signature and returns one array per manifest output name.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from ..errors import BundleError, EngineMissingError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np

    from ..manifest import Manifest


def first_importable(modules: Iterable[str]) -> str | None:
    """The first of ``modules`` that is importable here (``find_spec``: nothing is imported)."""
    for mod in modules:
        try:
            if importlib.util.find_spec(mod) is not None:
                return mod
        except (ImportError, ValueError):  # a broken parent package or a module with __spec__ = None
            continue
    return None


def distribution_version(distributions: Iterable[str]) -> str | None:
    """The version in the first of ``distributions`` with package metadata (no import), else None."""
    from importlib import metadata

    for dist in distributions:
        try:
            return str(metadata.version(dist))
        except Exception:  # PackageNotFoundError, or corrupt metadata: discovery must not fail
            continue
    return None


@dataclass(frozen=True)
class EngineInfo:
    """One registered engine: how to find it without importing it, and how to tell a user to install it.

    ``adapter`` is ``"module.path:ClassName"``; ``modules`` are the engine's importable top-level module names
    (the first one found is used); ``distributions`` are the pip distribution names whose metadata gives the
    version (several builds of one engine exist, e.g. ``onnxruntime-gpu``); ``pip`` is the install command's
    argument that fixes a missing engine; ``distribution`` is the Python distribution that registered the adapter
    (entry-point group ``edgeify_runtime.engines``).
    """

    name: str
    adapter: str
    modules: tuple[str, ...]
    distributions: tuple[str, ...]
    pip: str
    #: how to install the engine when pip is not the way (e.g. TensorRT on a Jetson comes with JetPack)
    hint: str = ""
    distribution: str = ""

    @property
    def install_command(self) -> str:
        return self.hint or f"pip install {self.pip}"


@dataclass(frozen=True)
class Option:
    """One engine option. ``check(value) -> bool`` says which values a bundle's manifest may carry; ``check=None``
    means only a caller of ``load(options=...)`` may pass it (it can name files or libraries to load)."""

    check: Callable[[Any], bool] | None
    doc: str = ""

    @property
    def bundle(self) -> bool:
        return self.check is not None


@dataclass(frozen=True)
class TuningAxis:
    """A run-time option ``edgeify optimize`` varies (besides threads), and the values it tries.

    ``via``: for an adapter that knows ``option`` only inside a dict option, ``(dict option, key)`` (e.g. an older
    OpenVINO adapter: ``("config", "PERFORMANCE_HINT")``).
    """

    option: str
    values: tuple[Any, ...]
    via: tuple[str, str] | None = None


@dataclass(frozen=True)
class ProfileRun:
    """What ``edgeify_runtime.profile`` hands an adapter's ``profile_collect`` after the profiled runs."""

    manifest: Manifest
    feeds: Mapping[str, Any]
    options: Mapping[str, Any]
    runs: int
    workdir: str
    timeout_s: float
    overhead: Mapping[str, Any]


class EngineAdapter:
    """Base class of engine adapters: the whole contract of one engine on the device.

    Lifetime: construct with no arguments (cheap, no engine import), ``load`` once, ``run`` many times,
    ``close`` once. Subclasses set the class attributes and implement ``_load`` and ``run``; the hooks below
    (placement, profile, intermediate dump, version check) have defaults an engine overrides when it can do more.

    Registration: an entry point in the group ``edgeify_runtime.engines`` (``name = "module:Class"``) of the
    distribution that ships the adapter; the built-ins register the same way (``runtimes/pyproject.toml``).
    """

    #: adapter name, as written in a manifest's ``engine.name``
    name: ClassVar[str] = ""
    #: the engine's importable top-level modules (first found is used), found with ``importlib.util.find_spec``
    modules: ClassVar[tuple[str, ...]] = ()
    #: pip distributions whose metadata gives the engine's version (no import)
    distributions: ClassVar[tuple[str, ...]] = ()
    #: ``pip install <pip>`` fixes a missing engine; ``install_hint`` replaces that command when pip is not the way
    pip: ClassVar[str] = ""
    install_hint: ClassVar[str] = ""
    #: the typed options: ``load(options=...)`` takes these keys, a bundle's manifest only values ``check`` allows
    option_specs: ClassVar[Mapping[str, Option]] = {}
    #: the option keys (derived from ``option_specs``)
    option_keys: ClassVar[frozenset[str]] = frozenset()
    #: what ``edgeify optimize`` varies besides threads
    tuning_axes: ClassVar[tuple[TuningAxis, ...]] = ()
    #: the load options that place the model on an accelerator and their CPU values (None: drop the key);
    #: ``load(..., cpu_fallback=True)`` rewrites exactly these keys. Empty: the engine runs where it runs.
    cpu_placement: ClassVar[Mapping[str, Any]] = {}
    #: where the per-operator profile comes from (None: this engine has no profiler)
    profile_source: ClassVar[str | None] = None
    #: the profiler runs the model itself (e.g. trtexec): ``profile_bundle`` makes no timed runs of its own
    profile_runs_itself: ClassVar[bool] = False
    #: ``dump_intermediates`` is implemented (per-op parity against the source model)
    can_dump: ClassVar[bool] = False
    #: target families this engine serves beyond those whose target files name it (``edgeify targets``)
    target_families: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.option_specs = MappingProxyType(dict(cls.option_specs))  # read-only, like the registry
        cls.cpu_placement = MappingProxyType(dict(cls.cpu_placement))
        cls.option_keys = frozenset(cls.option_specs)

    def __init__(self) -> None:
        self.version: str = ""
        #: the imported engine module's name (``onnxruntime``, ``openvino``), for reports
        self.module: str = ""
        self.threads: int = 0
        self.options: dict[str, Any] = {}
        #: the manifest's ``engine.min_version``, checked again after import when metadata had no version
        self.min_version: str | None = None
        self._loaded = False

    # -- discovery (class level: no engine import) ------------------------------------------------------------
    @classmethod
    def engine_info(cls, distribution: str = "") -> EngineInfo:
        return EngineInfo(cls.name, f"{cls.__module__}:{cls.__qualname__}", tuple(cls.modules),
                          tuple(cls.distributions), cls.pip, cls.install_hint, distribution)

    @classmethod
    def find_module(cls) -> str | None:
        """The first of ``modules`` that is importable here (``find_spec``: nothing is imported)."""
        return first_importable(cls.modules)

    @classmethod
    def installed_version(cls) -> str | None:
        """The engine's version from its distribution metadata (no import), or None when none is found."""
        return distribution_version(cls.distributions)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """(can this engine run here, why / which version), without importing the engine."""
        mod = cls.find_module()
        if mod is None:
            return False, f"not installed: {cls.engine_info().install_command}"
        return True, f"{mod} {cls.installed_version() or 'unknown'}"

    @classmethod
    def check_min_version(cls, installed: str | None, minimum: str | None) -> None:
        """Raise EngineMissingError when ``installed`` is older than ``minimum`` (unknown versions pass)."""
        check_min_version(cls.engine_info(), installed, minimum)

    @classmethod
    def check_bundle_options(cls, options: Mapping[str, Any]) -> None:
        """Refuse manifest engine options not on ``option_specs``' allow-list (BundleError, exit 12)."""
        bad = []
        for key, value in options.items():
            spec = cls.option_specs.get(key)
            if spec is None or spec.check is None:
                bad.append(f"{key!r} (not an option a bundle may set)")
            elif not spec.check(value):
                bad.append(f"{key}={str(value)[:80]!r} (not an allowed value)")
        if bad:
            allowed = sorted(k for k, o in cls.option_specs.items() if o.bundle)
            raise BundleError(f"the bundle's engine options are refused: {'; '.join(bad)}",
                              hint=f"a bundle may set only {', '.join(allowed) or 'no options'} for {cls.name}; "
                                   "rebuild it, or pass other options to load(options=...) yourself")

    @classmethod
    def cpu_options(cls, options: Mapping[str, Any]) -> dict[str, Any] | None:
        """``options`` with the accelerator keys set to the CPU; None when they already ask for the CPU."""
        cpu = cls.cpu_placement
        if not cpu or not any(k in options and options[k] != v for k, v in cpu.items()):
            return None
        out = {k: v for k, v in options.items() if k not in cpu}
        out.update({k: v for k, v in cpu.items() if v is not None})
        return out

    def _import_engine(self) -> ModuleType:
        """Import this adapter's engine, set ``module``/``version``, and enforce ``min_version``."""
        info = self.engine_info()
        errors: list[str] = []
        for mod_name in self.modules:
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
            version = self.installed_version() or str(getattr(module, "__version__", "") or "")
            self.version = version or "unknown"
            self.check_min_version(version or None, self.min_version)
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

    # -- placement (after load) -------------------------------------------------------------------------------
    def placement(self) -> str:
        """Where the loaded engine runs, in its own words (``"CPUExecutionProvider"``, ``"CPU"``, ``"GPU.0"``)."""
        return str(getattr(self, "device", None) or "CPU")

    def unhonoured(self, options: Mapping[str, Any]) -> str | None:
        """Why the loaded engine does not run where ``options`` asked (None: it does)."""
        return None

    def skipped_placements(self) -> list[str]:
        """Accelerators the options named as a fallback order that this engine skipped (reported, not an error)."""
        return []

    # -- per-operator profile (edgeify_runtime.profile) --------------------------------------------------------
    def profile_options(self, options: Mapping[str, Any], workdir: str) -> dict[str, Any]:
        """The load options (and adapter state) that turn the engine's profiler on; called before ``load``."""
        return dict(options)

    def profile_mark(self, recorded: bool) -> None:
        """Called after every profiled-session run (``recorded``: a profiled run, not a warm-up)."""

    def profile_collect(self, run: ProfileRun) -> Any:
        """The common profile record (``profile.record.Profile``) of the runs made since ``load``."""
        raise BundleError(f"edgeify_runtime.profile has no profiler for engine {self.name!r}")

    # -- intermediate tensors (per-op parity) ------------------------------------------------------------------
    def dump_intermediates(self, artifact: Path, feeds: Mapping[str, np.ndarray], names: frozenset[str] = frozenset(),
                           precision: str = "fp32") -> dict[str, np.ndarray]:
        """Every intermediate tensor of ``artifact`` run once on ``feeds`` (manifest input names, the source's
        layout), keyed by the engine's tensor names; ``names`` are the source's tensor names (a hint: an engine
        may return only those). Imports the engine (honouring ``min_version``); no ``load`` needed."""
        raise BundleError(f"engine {self.name!r} cannot dump intermediate tensors",
                          hint="per-op parity is not available for this engine")

    def unsupported_ops(self, artifact: Path) -> list[str] | None:
        """The engine's own statement of which ops of ``artifact`` its CPU device cannot run (``edgeify inspect``);
        None: the engine has no such query."""
        return None

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


# -- validators for option_specs --------------------------------------------------------------------------------
#: What a bundle's manifest (``engine.options``: data from wherever the bundle came from) may ask of an engine is
#: what its ``option_specs`` checks allow. Anything else is refused with BundleError (exit 12): options such as a
#: provider's options or a cache directory can name files or libraries to load. Options a caller passes to
#: ``load(options=...)`` itself are the caller's choice and are not restricted.

def int_range(lo: int, hi: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def one_of(*values: Any) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and v in values


def is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def matches(pattern: str) -> Callable[[Any], bool]:
    rx = re.compile(pattern)
    return lambda v: isinstance(v, str) and bool(rx.match(v))


def scalar_table(allowed: Mapping[str, tuple[str, ...] | None]) -> Callable[[Any], bool]:
    """A dict of string/int values whose keys are in ``allowed``; ``None``: any non-negative integer."""
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


THREADS = Option(int_range(1, 1024), "intra-op threads when the caller of load names none")
