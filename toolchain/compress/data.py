"""Training data for compression: an ``.npz`` (``input`` or one array per input name, optional ``labels``) or a
loader reference ``pkg.mod:factory`` / ``path/to/file.py:factory`` whose factory returns an iterable of batches.

A loader reference IMPORTS AND RUNS that Python code on this machine (trusted code only). The factory is called
once per epoch; each batch is a dict ``{input_name: array, "labels": array}``, a tuple ``(inputs, labels)`` or a
single array (single-input models), numpy arrays or torch tensors. Every batch is checked with the rules
``--calib`` data gets (shapes, dtypes, finite values, label range; ``edgeify.data``): the first batch before any
training starts, the others as they arrive; a bad one is a ``DataError`` (exit 7) naming the batch.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgeify.data import LABELS_KEY, Dataset, load_dataset
from edgeify.errors import DataError
from edgeify_runtime.manifest import TensorSpec

Batch = tuple[list[np.ndarray], np.ndarray | None]


def is_loader_ref(spec: str) -> bool:
    """``pkg.mod:factory`` or ``file.py:factory`` (not an existing file path)."""
    if Path(spec).exists() or ":" not in spec:
        return False
    mod, _, fn = spec.rpartition(":")
    return bool(mod) and fn.isidentifier()


@dataclass
class TrainData:
    """Batches of (inputs in signature order, labels or None), epoch after epoch."""

    origin: str
    signature: list[TensorSpec]
    n_classes: int | None
    batch_size: int
    seed: int
    dataset: Dataset | None = None  # an .npz, fully checked at load
    factory: Any = None  # a loader reference's factory
    labelled: bool = False
    _digest: Any = field(default=None, repr=False)
    _seen: int = 0  # samples of the first epoch (loaders)
    _epochs: int = 0

    @property
    def sha256(self) -> str | None:
        if self.dataset is not None:
            return self.dataset.sha256
        return self._digest.hexdigest() if self._digest is not None and self._epochs else None

    @property
    def count(self) -> int | None:
        return self.dataset.count if self.dataset is not None else (self._seen or None)

    @property
    def batches_per_epoch(self) -> int | None:
        if self.dataset is not None:
            return -(-self.dataset.count // self.batch_size)
        return None

    def epoch(self) -> Iterator[Batch]:
        self._epochs += 1
        if self.dataset is not None:
            rng = np.random.default_rng(self.seed + self._epochs)
            order = rng.permutation(self.dataset.count)
            names = [s.name for s in self.signature]
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                labels = None if self.dataset.labels is None else self.dataset.labels[idx]
                yield [self.dataset.inputs[n][idx] for n in names], labels
            return
        first = self._epochs == 1
        for i, raw in enumerate(_call(self.factory, self.origin)):
            batch = check_batch(raw, self.signature, self.n_classes, f"{self.origin} batch {i}")
            if first:
                self._seen += len(batch[0][0])
                _hash_batch(self._digest, batch)
            yield batch

    def first_batch(self) -> Batch:
        return next(iter(self.epoch_peek()))

    def epoch_peek(self) -> Iterator[Batch]:
        """One pass that does not count as an epoch (the up-front check, gradient importance)."""
        saved = (self._epochs, self._seen, self._digest.copy() if self._digest is not None else None)
        try:
            yield from self.epoch()
        finally:
            self._epochs, self._seen, self._digest = saved


def load_train(spec: str, signature: list[TensorSpec], n_classes: int | None, *, batch_size: int = 32,
               seed: int = 0) -> TrainData:
    """Open and check ``--train`` up front; errors are ``DataError`` (exit 7) naming the file and the fix."""
    if is_loader_ref(spec):
        data = TrainData(spec, signature, n_classes, batch_size, seed, factory=_import(spec),
                         _digest=hashlib.sha256())
        try:
            _x, y = next(iter(data.epoch_peek()))
        except StopIteration:
            raise DataError(f"--train {spec}: the loader yielded no batches") from None
        data.labelled = y is not None
        return data
    p = Path(spec)
    if not p.exists():
        raise DataError(f"training data not found: {p}",
                        hint="--train takes a .npz (`input`, optional `labels`) or a loader pkg.mod:factory")
    if p.suffix != ".npz":
        raise DataError(f"{p}: --train takes a .npz (or a loader reference pkg.mod:factory), not {p.suffix!r}",
                        hint="np.savez('train.npz', input=x, labels=y)")
    ds = load_dataset(p, signature, purpose="training", n_classes=n_classes)  # any single key: single-input
    return TrainData(str(p), signature, n_classes, batch_size, seed, dataset=ds, labelled=ds.labels is not None)


def check_batch(raw: Any, signature: list[TensorSpec], n_classes: int | None, where: str) -> Batch:
    names = [s.name for s in signature]
    labels = None
    if isinstance(raw, dict):
        labels = raw.get(LABELS_KEY)
        arrays = [raw[n] for n in names if n in raw]
        if len(arrays) != len(names):
            arrays = [v for k, v in raw.items() if k != LABELS_KEY] if len(raw) - (labels is not None) == 1 \
                and len(names) == 1 else []
        if len(arrays) != len(names):
            raise DataError(f"{where}: keys {sorted(raw)} do not match the model inputs {names}",
                            hint="yield {input_name: array, 'labels': class_ids}")
    elif isinstance(raw, (tuple, list)) and len(raw) == 2 and len(names) == 1:
        arrays, labels = [raw[0]], raw[1]
    elif isinstance(raw, (tuple, list)) and len(raw) == len(names) + 1:
        arrays, labels = list(raw[:-1]), raw[-1]
    else:
        arrays = [raw]
    arrays = [_np(a, where) for a in arrays]
    out = []
    for spec, a in zip(signature, arrays, strict=True):
        want = list(spec.shape[1:])
        if a.ndim != len(spec.shape) or any(isinstance(w, int) and w != g for w, g in zip(want, a.shape[1:],
                                                                                            strict=False)):
            raise DataError(f"{where}: input {spec.name!r}: expected [N, {', '.join(map(str, want))}], got "
                            f"{list(a.shape)}", hint="check the layout (NCHW vs NHWC) and the sample size")
        dt = np.dtype(spec.dtype)
        if a.dtype != dt and not (np.can_cast(a.dtype, dt, "same_kind") or (a.dtype.kind in "iub" and dt.kind == "f")):
            raise DataError(f"{where}: input {spec.name!r} has dtype {a.dtype}, the model expects {dt}")
        a = a.astype(dt, copy=False)
        if dt.kind == "f" and not np.isfinite(a).all():
            raise DataError(f"{where}: your data has NaN/inf in input {spec.name!r}",
                            hint="drop or fix those samples before training on them")
        out.append(np.ascontiguousarray(a))
    if len({len(a) for a in out}) != 1:
        raise DataError(f"{where}: inputs have different sample counts {[len(a) for a in out]}")
    if labels is not None:
        labels = _np(labels, where)
        if labels.ndim != 1 or len(labels) != len(out[0]) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{where}: labels must be {len(out[0])} integer class ids, got shape {list(labels.shape)} "
                            f"dtype {labels.dtype}", hint="yield class indices, e.g. y.astype(np.int64)")
        if len(labels) and (labels.min() < 0 or (n_classes is not None and labels.max() >= n_classes)):
            raise DataError(f"{where}: labels outside the model's classes 0..{(n_classes or 0) - 1}",
                            hint="labels are class indices of the model's output, counted from 0")
    return out, labels


def _np(a: Any, where: str) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    try:
        return np.asarray(a)
    except Exception as exc:
        raise DataError(f"{where}: not an array ({type(a).__name__}: {exc})") from None


def _hash_batch(h: Any, batch: Batch) -> None:
    for a in [*batch[0], *([] if batch[1] is None else [batch[1]])]:
        h.update(f"{a.dtype}|{a.shape}|".encode())
        h.update(a.tobytes())


def _import(spec: str) -> Any:
    mod_name, _, fn_name = spec.rpartition(":")
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            name = f"_edgeify_train_loader_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
            mspec = importlib.util.spec_from_file_location(name, path)
            if mspec is None or mspec.loader is None or not path.is_file():
                raise FileNotFoundError(str(path))
            module = importlib.util.module_from_spec(mspec)
            sys.modules[name] = module
            mspec.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_name)
    except Exception as exc:
        raise DataError(f"--train {spec}: importing {mod_name} failed ({type(exc).__name__}: {exc})",
                        hint="a loader reference is pkg.mod:factory (importable) or path/to/file.py:factory") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise DataError(f"--train {spec}: {mod_name} has no callable {fn_name!r}")
    return fn


def _call(factory: Any, origin: str) -> Any:
    try:
        batches = factory()
        return iter(batches)
    except Exception as exc:
        raise DataError(f"--train {origin}: the loader raised {type(exc).__name__}: {exc}") from None
