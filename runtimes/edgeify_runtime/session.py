"""The facade: load a bundle, read its signature, run named inputs to named outputs, close.

    import edgeify_runtime as er

    with er.load("bundle/") as model:
        print(model.inputs, model.engine_name, model.engine_version, model.labels, model.preprocessing)
        outputs = model.run({"x": x})          # or model.run(x) for a single-input model
        probs = outputs["logits"]

Callers always use the manifest's ``layout`` (e.g. NCHW); when the artifact has another ``engine_layout``
(e.g. an NHWC TFLite model) the transpose happens here, on the way in and out.

Accelerators: ``load(options=...)`` picks one in the engine's words (ONNX Runtime ``{"providers": [...]}``,
OpenVINO ``{"device": "GPU"}``). When it is not available, ``load`` raises EngineMissingError; only with
``cpu_fallback=True`` does it load on the CPU instead, and then it says so: a ``CPUFallbackWarning``, and
``Model.fallback`` holds the reason (None when the requested placement was honoured). ``Model.accelerator``
is where the engine actually runs.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .engines import EngineAdapter, adapter_class, create_adapter
from .errors import BundleError, EngineMissingError, InputSignatureError
from .fingerprint import default_threads
from .manifest import Manifest, TensorSpec

__all__ = ["CPUFallbackWarning", "Model", "load"]


class CPUFallbackWarning(RuntimeWarning):
    """``load(..., cpu_fallback=True)`` could not use the requested accelerator and loaded on the CPU."""


#: dynamic-dimension names that say nothing about which dimensions are equal
_ANONYMOUS_DIMS = frozenset({"", "?", "-1", "dynamic", "None", "none", "unk"})


def _dtype(name: str, where: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError as exc:
        raise BundleError(f"manifest: {where} has an unknown dtype {name!r}") from exc


def layout_permutation(src: str | None, dst: str | None) -> tuple[int, ...] | None:
    """The ``np.transpose`` axes that turn an array in layout ``src`` into layout ``dst`` (None: no change).

    Layouts are strings of distinct axis letters (``"NCHW"``, ``"NHWC"``, ``"NCDHW"``...); both must hold the
    same letters. ``layout_permutation("NCHW", "NHWC") == (0, 2, 3, 1)``.
    """
    if not src or not dst or src == dst:
        return None
    s, d = src.upper(), dst.upper()
    if sorted(s) != sorted(d) or len(set(s)) != len(s):
        raise BundleError(f"manifest: cannot convert layout {src!r} to {dst!r} (different or repeated axes)")
    return tuple(s.index(c) for c in d)


def _fmt_shape(shape: tuple[Any, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


class _Port:
    """A TensorSpec with its resolved dtype, layout permutations and precomputed shape checks."""

    __slots__ = ("dtype", "fixed", "from_engine", "name", "rank", "shape_str", "shared", "spec", "to_engine")

    def __init__(self, spec: TensorSpec, kind: str) -> None:
        self.spec = spec
        self.name = spec.name
        self.rank = len(spec.shape)
        self.shape_str = _fmt_shape(spec.shape)
        self.dtype = _dtype(spec.dtype, f"{kind} {spec.name!r}")
        self.to_engine = layout_permutation(spec.layout, spec.engine_layout)
        self.from_engine = layout_permutation(spec.engine_layout, spec.layout)
        if self.to_engine is not None and len(spec.shape) != len(self.to_engine):
            raise BundleError(f"manifest: {kind} {spec.name!r} has shape {self.shape_str} but layout "
                              f"{spec.layout!r}")
        #: (axis, size) of every fixed dimension
        self.fixed = tuple((i, d) for i, d in enumerate(spec.shape) if isinstance(d, int) and d >= 0)
        #: (axis, symbol) of dynamic dimensions whose name other inputs share (set by Model)
        self.shared: tuple[tuple[int, str], ...] = ()


class Model:
    """A loaded bundle. Create it with ``edgeify_runtime.load``; close it (or use ``with``) when done.

    Not thread-safe: use one Model per thread.
    """

    def __init__(self, bundle_dir: Path, manifest: Manifest, adapter: EngineAdapter, threads: int,
                 fallback: str | None = None) -> None:
        self.bundle_dir = bundle_dir
        self.manifest = manifest
        self.threads = threads
        #: why ``load(..., cpu_fallback=True)`` fell back to the CPU; None when it did not
        self.fallback = fallback
        self._accelerator = adapter.placement()
        self._adapter: EngineAdapter | None = adapter
        self._engine_name = adapter.name
        self._engine_version = adapter.version
        self._engine_module = adapter.module
        self._in = [_Port(t, "input") for t in manifest.inputs]
        self._out = [_Port(t, "output") for t in manifest.outputs]
        self._in_names = [p.name for p in self._in]
        # a dynamic dimension name used by several inputs ("batch") must have one value across them
        users: dict[str, set[str]] = {}
        for port in self._in:
            for d in port.spec.shape:
                if isinstance(d, str) and d not in _ANONYMOUS_DIMS:
                    users.setdefault(d, set()).add(port.name)
        for port in self._in:
            port.shared = tuple((i, d) for i, d in enumerate(port.spec.shape)
                                if isinstance(d, str) and len(users.get(d, ())) > 1)

    # -- signature -----------------------------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.manifest.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.manifest.outputs

    @property
    def engine_name(self) -> str:
        return self._engine_name

    @property
    def engine_version(self) -> str:
        return self._engine_version

    @property
    def engine_module(self) -> str:
        """The imported engine module (``onnxruntime``, ``openvino``)."""
        return self._engine_module

    @property
    def precision(self) -> str:
        return self.manifest.precision

    @property
    def labels(self) -> list[str] | None:
        """Class names from the manifest (index i names output column i), or None when the build had none."""
        return self.manifest.labels

    @property
    def preprocessing(self) -> dict[str, Any] | None:
        """How the build turned raw inputs (images) into model inputs, from the manifest, or None.

        For an image folder: ``size`` [H, W], ``mode`` (Pillow ``"L"``/``"RGB"``), ``resample``, ``scale``,
        ``mean``, ``std`` (per channel), ``layout`` and ``classes``: ``a = (pixels * scale - mean) / std``
        after ``convert(mode)`` and ``resize((W, H), resample)``.
        """
        return self.manifest.preprocessing

    @property
    def accelerator(self) -> str:
        """Where the engine runs, in its own words (``"CPUExecutionProvider"``, ``"CPU"``, ``"GPU.0"``...)."""
        return self._accelerator

    @property
    def closed(self) -> bool:
        return self._adapter is None

    # -- inference -----------------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, Any] | np.ndarray | Any) -> dict[str, np.ndarray]:
        """Run one inference.

        ``feeds`` maps every input name to an array (array-likes are converted), or is a single array when
        the model has exactly one input. Arrays are cast to the signature's dtype when
        ``np.can_cast(..., 'same_kind')`` allows it. Returns ``{output name: array}`` in the manifest's output
        order and layouts. Raises InputSignatureError naming the input for a wrong name, rank, fixed dimension
        or dtype.
        """
        adapter = self._adapter
        if adapter is None:
            raise ValueError("run() on a closed Model")
        prepared = self._prepare(feeds)
        raw = adapter.run(prepared)
        out: dict[str, np.ndarray] = {}
        for port in self._out:
            name = port.name
            if name not in raw:  # pragma: no cover - adapters return every manifest output
                raise BundleError(f"engine {self._engine_name} returned no output {name!r}")
            arr = raw[name]
            if not isinstance(arr, np.ndarray):
                arr = np.asarray(arr)
            if port.from_engine is not None and arr.ndim == len(port.from_engine):
                arr = np.ascontiguousarray(arr.transpose(port.from_engine))
            out[name] = arr
        return out

    __call__ = run

    def _prepare(self, feeds: Mapping[str, Any] | np.ndarray | Any) -> dict[str, np.ndarray]:
        if not isinstance(feeds, Mapping):
            if len(self._in) != 1:
                raise InputSignatureError(
                    f"this model has {len(self._in)} inputs ({', '.join(self._in_names)}); pass a dict "
                    "{name: array}, not a single array")
            feeds = {self._in_names[0]: feeds}
        names = self._in_names
        if len(feeds) != len(names) or any(n not in feeds for n in names):
            unknown = [str(k) for k in feeds if k not in names]
            missing = [n for n in names if n not in feeds]
            parts = []
            if unknown:
                parts.append(f"unknown input name(s) {', '.join(map(repr, unknown))}")
            if missing:
                parts.append(f"missing input(s) {', '.join(map(repr, missing))}")
            raise InputSignatureError("; ".join(parts) + f". The model's inputs: {self._describe_inputs()}")
        symbols: dict[str, tuple[int, str]] = {}
        prepared: dict[str, np.ndarray] = {}
        for port in self._in:
            name = port.name
            arr = feeds[name]
            if not isinstance(arr, np.ndarray):
                try:
                    arr = np.asarray(arr)
                except Exception as exc:
                    raise InputSignatureError(
                        f"input {name!r}: cannot be converted to an array: {exc}") from exc
            shape = arr.shape
            if len(shape) != port.rank:
                raise InputSignatureError(
                    f"input {name!r}: expected rank {port.rank} (shape {port.shape_str}), got shape "
                    f"{list(shape)} (rank {len(shape)})")
            for axis, dim in port.fixed:
                if shape[axis] != dim:
                    raise InputSignatureError(
                        f"input {name!r}: dimension {axis} must be {dim} (shape {port.shape_str}), got shape "
                        f"{list(shape)}")
            for axis, sym in port.shared:
                seen = symbols.setdefault(sym, (shape[axis], name))
                if seen[0] != shape[axis] and seen[1] != name:
                    raise InputSignatureError(
                        f"input {name!r}: dynamic dimension {sym!r} (axis {axis}) is {shape[axis]}, but it "
                        f"is {seen[0]} in input {seen[1]!r}; inputs sharing a dimension name must agree")
            if arr.dtype != port.dtype:
                if not np.can_cast(arr.dtype, port.dtype, casting="same_kind"):
                    raise InputSignatureError(
                        f"input {name!r}: expected dtype {port.dtype.name}, got {arr.dtype.name}, which "
                        "cannot be cast safely (same kind); convert it explicitly, e.g. "
                        f"x.astype({port.dtype.name!r})")
                arr = arr.astype(port.dtype)
            if port.to_engine is not None:
                arr = arr.transpose(port.to_engine)
            if not arr.flags.c_contiguous:
                arr = np.ascontiguousarray(arr)
            prepared[name] = arr
        return prepared

    def _describe_inputs(self) -> str:
        return ", ".join(f"{p.spec.name} {_fmt_shape(p.spec.shape)} {p.dtype.name}" for p in self._in)

    # -- lifetime ------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the engine session; idempotent. ``run`` after ``close`` raises ValueError."""
        adapter, self._adapter = self._adapter, None
        if adapter is not None:
            adapter.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; close() is the contract
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"threads={self.threads} on {self._accelerator}"
        return (f"<edgeify_runtime.Model {self.bundle_dir.name!r} {self._engine_name} {self._engine_version} "
                f"{self.manifest.precision} inputs=[{self._describe_inputs()}] {state}>")


def load(bundle: str | os.PathLike[str], *, engine: str | None = None, threads: int | None = None,
         verify: bool = True, options: Mapping[str, Any] | None = None, cpu_fallback: bool = False) -> Model:
    """Load an edgeify bundle directory and return a ready Model.

    ``engine``: must be the engine the bundle was built for (None: the manifest's); a bundle has one artifact.
    ``threads``: intra-op threads (None: the physical core count this process may use).
    ``verify``: check every file's sha256 first (BundleError naming the bad files when one differs).
    ``options``: engine load options, merged over the manifest's ``engine.options``; they choose the
    accelerator (ONNX Runtime ``providers``, OpenVINO ``device``; see ``edgeify_runtime.engines``). The
    manifest's own options must pass the adapter's ``option_specs`` (``edgeify engines`` lists each engine's;
    thread counts, optimization levels, precision hints, provider names; never a path): anything else is a
    BundleError.
    ``cpu_fallback``: when the accelerator the options ask for is missing or does not start, load on the CPU
    instead, warn (``CPUFallbackWarning``) and record why in ``Model.fallback``. Without it (the default)
    that is an EngineMissingError: edgeify never moves a model to another device silently.

    Raises BundleError (malformed/unsafe/tampered bundle, or an engine the bundle was not built for),
    EngineMissingError (engine not installed or older than the manifest's ``engine.min_version``; an
    accelerator that is not there, unless ``cpu_fallback``).
    """
    bundle_dir = Path(bundle)
    manifest = Manifest.read(bundle_dir)
    want = manifest.engine.name
    cls = adapter_class(want)
    cls.check_bundle_options(manifest.engine.options)  # a manifest is data: only allow-listed options
    if engine is not None and engine != want:
        raise BundleError(
            f"bundle {bundle_dir} was built for engine {want!r}; it has no artifact for engine {engine!r}",
            hint=f"omit engine= to use {want}, or build a bundle for {engine}")
    merged = dict(manifest.engine.options)
    merged.update(dict(options or {}))
    bundle_threads = merged.pop("threads", None)
    if threads is None:
        threads = bundle_threads if isinstance(bundle_threads, int) and bundle_threads > 0 else default_threads()
    elif isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, not {threads!r}")
    if verify:
        manifest.verify_files(bundle_dir)
    adapter = create_adapter(want, manifest.engine.min_version)
    try:
        adapter.load(bundle_dir, manifest, threads, merged)
        reason = adapter.unhonoured(merged)
    except EngineMissingError as exc:
        adapter.close()
        if not cpu_fallback or cls.cpu_options(merged) is None:
            raise
        reason = str(exc)
    skipped = adapter.skipped_placements()  # e.g. a provider fallback order the options asked for
    fallback = f"{want} skipped the execution provider(s) {skipped} (provider_fallback)" if skipped else None
    if reason is not None:
        adapter.close()
        cpu = cls.cpu_options(merged)
        if not cpu_fallback or cpu is None:
            raise EngineMissingError(reason, hint="install the engine build and drivers for that accelerator, "
                                                  "or pass cpu_fallback=True to accept the CPU")
        adapter = create_adapter(want, manifest.engine.min_version)
        adapter.load(bundle_dir, manifest, threads, cpu)
        fallback = f"{reason}; loaded on the CPU instead (cpu_fallback=True)"
        warnings.warn(f"edgeify_runtime: {bundle_dir}: {fallback}", CPUFallbackWarning, stacklevel=2)
    try:
        return Model(bundle_dir, manifest, adapter, threads, fallback)
    except BaseException:
        adapter.close()
        raise
