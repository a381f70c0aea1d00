"""Calibration and evaluation data: ``.npz``, ``.npy`` or a folder of images with a preprocessing TOML.

* ``.npz``: one array per model input keyed by input name (any single key for a single-input model), samples
  stacked on axis 0; ``labels`` holds integer class ids for ``--eval``. Loaded with ``allow_pickle=False``.
* ``.npy``: the samples of a single-input model.
* a folder of images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``) with ``preprocess.toml`` in it (or ``--preprocess``)::

      size = [224, 224]        # H, W after resize
      mode = "RGB"             # Pillow mode: "RGB" or "L"
      resample = "bilinear"    # nearest | box | bilinear | bicubic | lanczos
      scale = 0.00392156862745098    # raw 0..255 pixel * scale (default 1/255)
      mean = [0.485, 0.456, 0.406]   # then (x - mean) / std, per channel
      std = [0.229, 0.224, 0.225]
      layout = "NCHW"          # or "NHWC"
      classes = ["cat", "dog"] # optional; default: sorted sub-folder names. Labels come from the sub-folder.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from edgeify_runtime.manifest import TensorSpec

from .errors import DataError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
LABELS_KEY = "labels"
DYNAMIC_BATCH_CHUNK = 32


@dataclass
class Dataset:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    origin: str
    sha256: str
    batch: int  # the batch size the model is fed with
    preprocessing: dict | None = None
    fixed_batch: bool = False  # the model's batch dim is fixed: only full batches can be fed
    warnings: tuple[str, ...] = ()  # e.g. dtype casts, raw 0-255 pixels fed to a float model

    @property
    def count(self) -> int:
        return len(next(iter(self.inputs.values())))

    def batches(self, max_samples: int | None = None, drop_last: bool = False) -> Iterator[dict[str, np.ndarray]]:
        """Samples in the model's batch size; a dynamic-batch model also gets the last partial batch unless
        ``drop_last`` (calibrators that stack batches want equal sizes)."""
        n = self.count if max_samples is None else min(self.count, max_samples)
        full = drop_last or self.fixed_batch
        b = self.batch if self.fixed_batch else max(1, min(self.batch, n))
        for start in range(0, n if not full else n - b + 1, b):
            yield {k: v[start:start + b] for k, v in self.inputs.items()}

    def head(self, n: int) -> Dataset:
        n = min(n, self.count)
        if self.fixed_batch:
            n = max(self.batch, (n // self.batch) * self.batch)
        return Dataset({k: v[:n] for k, v in self.inputs.items()},
                       None if self.labels is None else self.labels[:n], self.origin, self.sha256, self.batch,
                       self.preprocessing, self.fixed_batch)


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_dataset(path: str | Path, signature: list[TensorSpec], *, purpose: str = "calibration",
                 need_labels: bool = False, preprocess: str | Path | None = None,
                 n_classes: int | None = None) -> Dataset:
    """Load and validate data for the model ``signature``; errors name the file, the input and the fix.

    Every problem is a ``DataError`` (exit 7): shapes (expected vs got), NaN/inf values, labels that are not
    integer class ids in ``[0, n_classes)``. Inputs of another dtype are cast, with a warning in
    ``Dataset.warnings`` (also when raw 0-255 pixels go into a float model)."""
    p = Path(path)
    flag = {"evaluation": "--eval", "training": "--train"}.get(purpose, "--calib")
    if not p.exists():
        raise DataError(f"{purpose} data not found: {p}", hint=f"{flag} takes a .npz, a .npy or an image folder")
    prep = None
    if p.is_dir():
        arrays, labels, prep = _load_images(p, signature, preprocess)
    elif p.suffix == ".npz":
        arrays, labels = _load_npz(p, signature)
    elif p.suffix == ".npy":
        if len(signature) != 1:
            raise DataError(f"{p}: a .npy holds one array; the model has {len(signature)} inputs",
                            hint="use a .npz with one array per input name")
        arrays, labels = {signature[0].name: _np_load(p)}, None
    else:
        raise DataError(f"{p}: unknown data format {p.suffix!r}",
                        hint=f"{flag} takes a .npz, a .npy or an image folder")
    if need_labels and labels is None:
        raise DataError(f"{p}: evaluation data needs integer class ids under the key {LABELS_KEY!r}",
                        hint="np.savez('eval.npz', x=inputs, labels=class_ids)")
    notes: list[str] = []
    arrays = {spec.name: _conform(p, spec, arrays[spec.name], notes) for spec in signature}
    counts = {k: len(v) for k, v in arrays.items()}
    if len(set(counts.values())) != 1:
        raise DataError(f"{p}: inputs have different sample counts {counts}")
    n = next(iter(counts.values()))
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) != n or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{p}: {LABELS_KEY!r} must be {n} integer class ids, got shape {labels.shape} "
                            f"dtype {labels.dtype}",
                            hint="save class indices, e.g. labels=y.astype(np.int64) (one-hot: y.argmax(1))")
        if len(labels) and (labels.min() < 0 or (n_classes is not None and labels.max() >= n_classes)):
            outside = sorted({int(v) for v in labels if v < 0 or (n_classes is not None and v >= n_classes)})
            raise DataError(f"{p}: labels {outside[:10]} are outside the model's classes 0..{(n_classes or 0) - 1} "
                            f"(it has {n_classes} outputs)",
                            hint="labels are class indices of the model's output, counted from 0")
    batch = _model_batch(signature)
    fixed = any(s.shape and isinstance(s.shape[0], int) for s in signature)
    if fixed and n < batch:
        raise DataError(f"{p}: {n} samples, fewer than the model's fixed batch size {batch}")
    if n == 0:
        raise DataError(f"{p}: no samples", hint="stack at least one sample per input on axis 0")
    for name, a in arrays.items():
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            bad = int((~np.isfinite(a.reshape(len(a), -1))).any(axis=1).sum())
            what = "NaN" if np.isnan(a).any() else "inf"
            raise DataError(f"{p}: your data has {what}: input {name!r}, {bad} of {n} samples",
                            hint="drop or fix those samples (np.isfinite(x).all(axis=...)); a model fed NaN/inf "
                                 "cannot be calibrated or checked")
    digest_src = dict(arrays)
    if labels is not None:
        digest_src[LABELS_KEY] = labels
    return Dataset(arrays, labels, str(p), _digest(digest_src), batch, prep, fixed, tuple(notes))


def _model_batch(signature: list[TensorSpec]) -> int:
    dims = {s.shape[0] for s in signature if s.shape}
    fixed = [d for d in dims if isinstance(d, int)]
    return fixed[0] if fixed else DYNAMIC_BATCH_CHUNK


def _np_load(p: Path):
    try:
        with open(p, "rb") as f:  # np.load calls anything that is neither a zip nor an .npy "pickled data"
            magic = f.read(6)
    except OSError as exc:
        raise DataError(f"{p}: unreadable: {type(exc).__name__}: {exc}") from None
    if not (magic.startswith(b"PK") or magic == b"\x93NUMPY" or magic.startswith(b"\x80")):
        raise DataError(f"{p}: not an .npz archive (nor an .npy array): it does not start like one",
                        hint="np.savez('data.npz', x=samples) with one array per model input name")
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{p}: cannot be read without unpickling ({exc})",
                        hint="save plain numeric arrays; edgeify never unpickles data files") from None
    except Exception as exc:
        raise DataError(f"{p}: unreadable: {type(exc).__name__}: {exc}") from None


def _load_npz(p: Path, signature: list[TensorSpec]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    z = _np_load(p)
    if not hasattr(z, "files"):  # np.load read a plain .npy (or pickle-free bytes) under the .npz name
        raise DataError(f"{p}: not an .npz archive", hint="np.savez('data.npz', x=samples)")
    with z:
        data = {}
        for k in z.files:  # each array is read (lazily) here: the same typed errors as np.load
            try:
                data[k] = z[k]
            except ValueError as exc:
                raise DataError(f"{p}: array {k!r} cannot be read without unpickling ({exc})",
                                hint="save plain numeric arrays; edgeify never unpickles data files") from None
            except Exception as exc:
                raise DataError(f"{p}: array {k!r} is unreadable: {type(exc).__name__}: {exc}") from None
    if not data:
        raise DataError(f"{p}: the .npz holds no arrays",
                        hint="np.savez('data.npz', x=samples) with one array per model input name")
    labels = data.pop(LABELS_KEY, None)
    names = [s.name for s in signature]
    if all(n in data for n in names):
        return {n: data[n] for n in names}, labels
    if len(names) == 1 and len(data) == 1:
        return {names[0]: next(iter(data.values()))}, labels
    raise DataError(f"{p}: keys {sorted(data)} do not match the model inputs {names}",
                    hint="key each array by its input name (a single-input model accepts any single key)")


def _conform(p: Path, spec: TensorSpec, a: np.ndarray, notes: list[str]) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != len(spec.shape):
        raise DataError(
            f"{p}: input {spec.name!r}: expected samples of shape {list(spec.shape[1:])} stacked on axis 0 "
            f"(array [N, {', '.join(str(d) for d in spec.shape[1:])}]), got an array of shape {list(a.shape)}",
            hint="stack samples on the batch axis: array shape = [N, *sample_shape]")
    for axis, (want, got) in enumerate(zip(spec.shape, a.shape, strict=True)):
        if axis > 0 and isinstance(want, int) and want != got:
            raise DataError(
                f"{p}: input {spec.name!r}: expected [N, {', '.join(str(d) for d in spec.shape[1:])}], got "
                f"{list(a.shape)} (axis {axis}: {got} != {want})",
                hint="check the layout (NCHW vs NHWC) and the image size")
    want_dtype = np.dtype(spec.dtype)
    if a.dtype != want_dtype:
        if not (np.can_cast(a.dtype, want_dtype, "same_kind") or
                (a.dtype.kind in "iub" and want_dtype.kind == "f")):
            raise DataError(f"{p}: input {spec.name!r} has dtype {a.dtype}, the model expects {want_dtype}",
                            hint=f"save the data as {want_dtype} (x.astype(np.{want_dtype}))")
        notes.append(f"{p.name}: input {spec.name!r} is {a.dtype}, cast to the model's {want_dtype}")
    if want_dtype.kind == "f" and _looks_like_raw_pixels(a):
        notes.append(f"{p.name}: input {spec.name!r} looks like raw 0-255 pixels fed to a float model; most "
                     "models expect normalized values (x / 255, then mean/std)")
    return np.ascontiguousarray(a.astype(want_dtype, copy=False))


def _looks_like_raw_pixels(a: np.ndarray) -> bool:
    if not a.size or a.dtype.kind not in "iuf" or a.min() < 0 or not 2 < a.max() <= 255:
        return False
    return a.dtype.kind in "iu" or bool(np.all(a == np.round(a)))


def _load_images(folder: Path, signature: list[TensorSpec], preprocess: str | Path | None):
    from PIL import Image

    if len(signature) != 1:
        raise DataError(f"{folder}: an image folder feeds single-input models; this one has {len(signature)}")
    cfg_path = Path(preprocess) if preprocess else folder / "preprocess.toml"
    if not cfg_path.is_file():
        raise DataError(f"{folder}: no preprocessing declared ({cfg_path} not found)",
                        hint="add preprocess.toml (size, mode, mean, std, layout) or pass --preprocess FILE")
    try:
        cfg = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
        h, w = (int(x) for x in cfg["size"])
        mode = cfg.get("mode", "RGB")
        layout = cfg.get("layout", "NCHW")
        channels = {"RGB": 3, "L": 1}[mode]
        mean = np.asarray(cfg.get("mean", [0.0] * channels), np.float32)
        std = np.asarray(cfg.get("std", [1.0] * channels), np.float32)
        scale = float(cfg.get("scale", 1.0 / 255.0))
        resample_name = str(cfg.get("resample", "bilinear"))
        resample = {"nearest": Image.NEAREST, "box": Image.BOX, "bilinear": Image.BILINEAR,
                    "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}[resample_name]
    except (KeyError, ValueError, TypeError, tomllib.TOMLDecodeError) as exc:
        raise DataError(f"{cfg_path}: invalid preprocessing ({type(exc).__name__}: {exc})",
                        hint="needs size = [H, W]; optional mode (RGB|L), mean, std, layout (NCHW|NHWC)") from None
    if layout not in ("NCHW", "NHWC") or mean.shape != (channels,) or std.shape != (channels,):
        raise DataError(f"{cfg_path}: layout must be NCHW or NHWC and mean/std need {channels} values")
    files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    subdirs = sorted({f.parent.name for f in files if f.parent != folder})
    classes = list(cfg.get("classes", subdirs))
    samples, labels = [], []
    for f in files:
        try:
            with Image.open(f) as im:
                img = im.convert(mode).resize((w, h), resample)
        except Exception as exc:
            raise DataError(f"{f}: unreadable image ({exc})") from None
        a = np.asarray(img, np.float32).reshape(h, w, channels) * scale
        a = (a - mean) / std
        samples.append(a.transpose(2, 0, 1) if layout == "NCHW" else a)
        if f.parent != folder and f.parent.name in classes:
            labels.append(classes.index(f.parent.name))
    label_arr = np.asarray(labels, np.int64) if classes and len(labels) == len(files) else None
    prep = {"size": [h, w], "mode": mode, "mean": mean.tolist(), "std": std.tolist(), "layout": layout,
            "scale": scale, "resample": resample_name, "classes": classes or None}
    return {signature[0].name: np.stack(samples).astype(np.float32)}, label_arr, prep
