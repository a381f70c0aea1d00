"""The benchmark agent's inputs: the batch and shapes to run, deterministic random feeds, and .npz I/O for
host-vs-device parity runs."""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile

import numpy as np

from .bench_request import RequestError
from .errors import InputSignatureError
from .manifest import TensorSpec


def _batch_axis(spec: TensorSpec) -> int | None:
    if not spec.shape:
        return None
    if spec.layout and "N" in spec.layout.upper() and len(spec.layout) == len(spec.shape):
        return spec.layout.upper().index("N")
    return 0


def resolve_batch(inputs: tuple[TensorSpec, ...], batch: int | None) -> int:
    """The batch to run: the request's, else the bundle's fixed batch dimension, else 1."""
    fixed = {}
    for spec in inputs:
        axis = _batch_axis(spec)
        if axis is not None and isinstance(spec.shape[axis], int):
            fixed[spec.name] = spec.shape[axis]
    if batch is None:
        return next(iter(fixed.values()), 1)
    wrong = {n: b for n, b in fixed.items() if b != batch}
    if wrong:
        raise RequestError(f"batch {batch} requested, but the bundle's batch dimension is fixed: {wrong}",
                           hint="omit batch, or build the bundle with a dynamic batch dimension")
    return batch


def run_batch(inputs: tuple[TensorSpec, ...], shapes: dict[str, list[int]], batch: int) -> int:
    """The batch actually run: the first input's batch axis in the shapes fed (``input_shapes`` may set it)."""
    for spec in inputs:
        axis = _batch_axis(spec)
        if axis is not None and axis < len(shapes[spec.name]):
            return int(shapes[spec.name][axis])
    return batch


def dynamic_axes(inputs: tuple[TensorSpec, ...], shapes: dict[str, list[int]]) -> dict[str, dict[str, int]]:
    """The dynamic dimensions and the size each was run at: ``{input: {axis name: size}}`` (only inputs with a
    dynamic dimension; an unnamed one is called by its index)."""
    out: dict[str, dict[str, int]] = {}
    for spec in inputs:
        dims = {(d if isinstance(d, str) and d else f"dim{i}"): shapes[spec.name][i]
                for i, d in enumerate(spec.shape) if not isinstance(d, int) and i < len(shapes[spec.name])}
        if dims:
            out[spec.name] = dims
    return out


def input_shapes(inputs: tuple[TensorSpec, ...], batch: int,
                 overrides: dict[str, list[int]] | None = None) -> dict[str, list[int]]:
    """The shape fed to each input: overrides win; the batch axis gets ``batch``; other dynamic dims get 1."""
    overrides = overrides or {}
    unknown = sorted(set(overrides) - {s.name for s in inputs})
    if unknown:
        raise RequestError(f"input_shapes names unknown input(s) {unknown}; the inputs are "
                           f"{[s.name for s in inputs]}")
    shapes = {}
    for spec in inputs:
        if spec.name in overrides:
            shapes[spec.name] = list(overrides[spec.name])
            continue
        axis = _batch_axis(spec)
        shapes[spec.name] = [d if isinstance(d, int) else (batch if i == axis else 1)
                             for i, d in enumerate(spec.shape)]
    return shapes


def random_feeds(inputs: tuple[TensorSpec, ...], shapes: dict[str, list[int]],
                 seed: int) -> dict[str, np.ndarray]:
    """Deterministic random inputs: float -> standard normal, int -> small non-negative ints, bool -> coin."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in inputs:
        dtype = np.dtype(spec.dtype)
        shape = tuple(shapes[spec.name])
        if dtype.kind == "f":
            arr = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        elif dtype.kind in "iu":
            arr = rng.integers(0, 10, size=shape).astype(dtype)
        elif dtype.kind == "b":
            arr = rng.integers(0, 2, size=shape).astype(bool)
        elif dtype.kind == "c":
            arr = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
        else:
            raise InputSignatureError(f"input {spec.name!r}: cannot generate random {dtype.name} data",
                                      hint="pass fixed inputs with inputs_npz")
        feeds[spec.name] = arr
    return feeds


def load_npz(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise RequestError(f"inputs_npz {path}: cannot be read: {exc}",
                           hint="pass an .npz written by numpy.savez with plain (non-object) arrays") from exc


def save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an .npz exactly at ``path``, atomically; any key works, unlike np.savez(**kw)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".outputs-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, arr in arrays.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


__all__ = ["dynamic_axes", "input_shapes", "load_npz", "random_feeds", "resolve_batch", "run_batch", "save_npz"]
