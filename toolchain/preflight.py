"""What a build checks before its first step: the source's signature, ``--input-shape`` against it, and the
calibration/evaluation data against both (shapes, NaN/inf, label range, dtype casts). A mistake found here costs
a second, not a conversion. After the steps: which dynamic dims the build fixed (the bundle only takes those)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data import load_dataset
from .errors import UsageError

if TYPE_CHECKING:
    from edgeify_runtime.manifest import TensorSpec

    from .sources import SourceModel


class DataWarning(UserWarning):
    """Data edgeify accepted but changed or finds suspicious (a dtype cast, raw 0-255 pixels)."""


@dataclass(frozen=True)
class Preflight:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec] | None
    input_fixes: list[dict[str, Any]] = field(default_factory=list)


def n_classes(outputs: list[TensorSpec] | None) -> int | None:
    """Classes of a classifier-like first output ``[batch, C]`` with a fixed ``C`` > 1, else None."""
    if not outputs or len(outputs[0].shape) != 2:
        return None
    c = outputs[0].shape[1]
    return c if isinstance(c, int) and c > 1 else None


def preflight(source: SourceModel, calib: str | Path | None, eval: str | Path | None,
              preprocess: str | Path | None, message: Callable[[str], None]) -> Preflight:
    inputs, outputs = source.pre_signature()
    fixes = source.input_shape_fixes(inputs)
    applied = {(f["input"], f["axis"]): f["value"] for f in fixes}
    sig = [_with_dims(t, applied) for t in inputs]
    check_input_memory({t.name: (list(t.shape), t.dtype) for t in sig if all(isinstance(d, int) for d in t.shape)})
    classes = n_classes(outputs)
    for path, purpose in ((calib, "calibration"), (eval, "evaluation")):
        if path is None:
            continue
        ds = load_dataset(path, sig, purpose=purpose, need_labels=purpose == "evaluation", preprocess=preprocess,
                          n_classes=classes)
        for note in ds.warnings:
            message(f"warning: {note}")
            warnings.warn(note, DataWarning, stacklevel=3)
    return Preflight(sig, outputs, fixes)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation on this machine (None when unknown)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None


def check_input_memory(tensors: dict[str, tuple[list[int], str]]) -> None:
    """Refuse (UsageError, exit 2) input shapes ({name: (shape, dtype)}) whose tensors alone need more memory than
    this machine has available, naming both numbers, before anything allocates them (--input-shape
    100000000,1,8,8 used to end in a MemoryError after trying 47.7 GiB, or in an engine's allocation failure)."""
    import math

    import numpy as np

    need = {n: math.prod(shape) * np.dtype(dtype).itemsize for n, (shape, dtype) in tensors.items()}
    have = available_memory()
    if not need or have is None or sum(need.values()) <= have:
        return
    name = max(need, key=lambda n: need[n])
    shape, dtype = tensors[name]
    raise UsageError(f"--input-shape: input {name!r} of shape {list(shape)} ({dtype}) needs {need[name]} bytes "
                     f"({_human(need[name])}); this machine has {_human(have)} of memory available",
                     hint="give smaller dimensions (the batch is the first one): --input-shape NAME:DIMS")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _with_dims(t: TensorSpec, applied: dict[tuple[str, int], int]) -> TensorSpec:
    from dataclasses import replace

    shape = tuple(applied.get((t.name, i), d) for i, d in enumerate(t.shape))
    return replace(t, shape=shape)


def fixed_dims(pre: Preflight, final_inputs: list[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    """Dynamic dims of the source that are fixed in the bundle: by ``--input-shape`` or by the conversion (e.g.
    TFLite freezing a ``seq`` axis to 1); each entry names the input, axis, dim name and value."""
    out = list(pre.input_fixes)
    seen = {(f["input"], f["axis"]) for f in out}
    before = {t.name: t for t in pre.inputs}
    for t in final_inputs:
        src = before.get(t["name"])
        if src is None or len(src.shape) != len(t["shape"]):
            continue
        for axis, (was, now) in enumerate(zip(src.shape, t["shape"], strict=True)):
            if not isinstance(was, int) and isinstance(now, int) and (t["name"], axis) not in seen:
                out.append({"input": t["name"], "axis": axis, "dim": was, "value": now,
                            "by": f"the conversion for {target}"})
    return out


def describe_fixed(f: dict[str, Any]) -> str:
    return (f"input {f['input']!r} axis {f['axis']} ({f['dim']}) is fixed to {f['value']} by {f['by']}: the bundle "
            "only accepts that size there")
