"""edgeify example app: classify image files or ``.npy`` arrays with a bundle, on the device.

Usage (Python 3.8+; numpy + edgeify-runtime + one engine; Pillow only for image files)::

    python examples/apps/classify.py --bundle build/digits-x86 examples/images/digits
    python examples/apps/classify.py --bundle build/digits-x86 sample.npy --format json --top-k 3

Arguments are files or folders (searched recursively for ``.png .jpg .jpeg .bmp`` images and ``.npy`` files).
Prints one line per sample: path, label, score (``--format json``: one JSON document). When a file's folder
is named after a class (``digits/3/0123.png``), that is its expected class and the last line is the accuracy.

* Images become model inputs the way the build fed them, from the manifest's ``preprocessing`` (written when
  the bundle was built with an image folder; ``--preprocess FILE`` gives or overrides it with a
  ``preprocess.toml``, see ``examples/images/make_pngs.py``): ``convert(mode)``, ``resize((W, H),
  resample)``, ``a = (pixels * scale - mean) / std`` per channel, then ``layout`` (NCHW/NHWC).
* A ``.npy`` holds one sample (the input's shape without the batch axis) or N samples stacked on axis 0;
  it is fed as it is (its own preprocessing is the caller's business). No Pillow needed.
* Labels come from ``--labels FILE`` (one per line), else the manifest's ``labels``, else class indices.
  The score is the output row when it already is a probability distribution, else its softmax.

Exit codes: 0 done; 2 usage error, nothing to classify, or Pillow missing for images; 5 a ``.npy`` that does
not fit the model's input; 7 an unreadable file or invalid preprocessing; 11/12 engine missing / bundle
invalid (edgeify-runtime's codes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import edgeify_runtime as er
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
DEFAULT_BATCH = 32


class AppError(Exception):
    def __init__(self, message: str, code: int, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.hint = hint


# -- preprocessing (the device-side twin of the host's image-folder loader) -----------------------------------

class Preprocessing:
    """The manifest's ``preprocessing`` table, validated; ``__call__(path)`` -> one sample (no batch axis)."""

    def __init__(self, cfg: dict[str, Any], where: str) -> None:
        try:
            h, w = (int(x) for x in cfg["size"])
            self.size = (h, w)
            self.mode = str(cfg.get("mode", "RGB"))
            self.channels = {"RGB": 3, "L": 1}[self.mode]
            self.mean = np.asarray(cfg.get("mean", [0.0] * self.channels), np.float32)
            self.std = np.asarray(cfg.get("std", [1.0] * self.channels), np.float32)
            self.scale = float(cfg.get("scale", 1.0 / 255.0))
            self.resample = str(cfg.get("resample", "bilinear"))
            self.layout = str(cfg.get("layout", "NCHW"))
        except (KeyError, ValueError, TypeError) as exc:
            raise AppError(f"{where}: invalid preprocessing ({type(exc).__name__}: {exc})", 7,
                           "needs size = [H, W]; optional mode (RGB|L), resample, scale, mean, std, layout") from None
        if self.resample not in ("nearest", "box", "bilinear", "bicubic", "lanczos"):
            raise AppError(f"{where}: unknown resample {self.resample!r}", 7,
                           "use nearest, box, bilinear, bicubic or lanczos")
        if self.layout not in ("NCHW", "NHWC") or self.mean.shape != (self.channels,) or \
                self.std.shape != (self.channels,):
            raise AppError(f"{where}: layout must be NCHW or NHWC and mean/std need {self.channels} values", 7)

    @classmethod
    def from_file(cls, path: Path) -> Preprocessing:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            return cls(json.loads(text), str(path))
        try:
            import tomllib as toml  # Python 3.11+
        except ImportError:
            try:
                import tomli as toml  # type: ignore[no-redef]
            except ImportError:
                raise AppError(f"{path}: reading TOML needs Python 3.11+ or tomli", 2,
                               "pip install tomli, or pass the table as a .json file") from None
        try:
            return cls(toml.loads(text), str(path))
        except toml.TOMLDecodeError as exc:
            raise AppError(f"{path}: invalid TOML: {exc}", 7) from None

    def __call__(self, path: Path) -> np.ndarray:
        image_mod = _pillow()
        resampling = getattr(image_mod, "Resampling", image_mod)  # Pillow >= 9.1 has the enum
        h, w = self.size
        try:
            with image_mod.open(path) as im:
                img = im.convert(self.mode).resize((w, h), getattr(resampling, self.resample.upper()))
        except Exception as exc:
            raise AppError(f"{path}: unreadable image ({type(exc).__name__}: {exc})", 7) from None
        a = np.asarray(img, np.float32).reshape(h, w, self.channels) * self.scale
        a = (a - self.mean) / self.std
        return a.transpose(2, 0, 1) if self.layout == "NCHW" else a


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise AppError("reading image files needs Pillow, which is not installed", 2,
                       "pip install pillow (or pass .npy files)") from None
    return Image


# -- inputs ---------------------------------------------------------------------------------------------------

def collect(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in
                                (*IMAGE_SUFFIXES, ".npy")))
        elif p.is_file():
            files.append(p)
        else:
            raise AppError(f"{p}: no such file or folder", 2)
    return files


def load_samples(files: list[Path], spec: er.TensorSpec, prep: Preprocessing | None) -> tuple[list[str], np.ndarray]:
    """(one name per sample, the samples stacked on axis 0 in the input's dtype)."""
    names: list[str] = []
    samples: list[np.ndarray] = []
    rank = len(spec.shape)
    for f in files:
        if f.suffix.lower() == ".npy":
            try:
                arr = np.load(f, allow_pickle=False)
            except Exception as exc:
                raise AppError(f"{f}: unreadable .npy ({type(exc).__name__}: {exc})", 7) from None
            if arr.ndim == rank - 1:
                arr = arr[None]
            if arr.ndim != rank:
                raise AppError(f"{f}: shape {list(arr.shape)} fits neither one sample nor a stack of samples of "
                               f"input {spec.name!r} {list(spec.shape)}", 5)
            names.extend([str(f)] if len(arr) == 1 else [f"{f}[{i}]" for i in range(len(arr))])
            samples.extend(arr)
        elif f.suffix.lower() in IMAGE_SUFFIXES:
            if prep is None:
                raise AppError(f"{f}: this bundle's manifest has no preprocessing for image files", 2,
                               "pass --preprocess preprocess.toml (size, mode, mean, std, layout), or .npy files")
            names.append(str(f))
            samples.append(prep(f))
        else:
            raise AppError(f"{f}: not an image ({', '.join(IMAGE_SUFFIXES)}) or .npy file", 2)
    for axis, dim in enumerate(spec.shape):
        if axis > 0 and isinstance(dim, int) and any(s.shape[axis - 1] != dim for s in samples):
            bad = next(n for n, s in zip(names, samples) if s.shape[axis - 1] != dim)
            raise AppError(f"{bad}: sample shape does not fit input {spec.name!r} {list(spec.shape)} "
                           f"(axis {axis} must be {dim})", 5, "check the preprocessing size and layout")
    try:
        stacked = np.stack(samples)
    except ValueError as exc:
        raise AppError(f"samples have different shapes: {exc}", 5) from None
    want = np.dtype(spec.dtype)
    if stacked.dtype != want and not np.can_cast(stacked.dtype, want, "same_kind"):
        raise AppError(f"inputs are {stacked.dtype.name}; input {spec.name!r} takes {want.name}", 5)
    return names, stacked.astype(want, copy=False)


# -- inference ------------------------------------------------------------------------------------------------

def run_batched(model: er.Model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """The single output for every sample, in engine calls of ``batch_size`` (a fixed batch dim: padded)."""
    spec = model.inputs[0]
    fixed = spec.shape[0] if isinstance(spec.shape[0], int) else None
    step = fixed or batch_size
    outs = []
    for start in range(0, len(x), step):
        chunk = x[start:start + step]
        real = len(chunk)
        if fixed and real < fixed:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - real, axis=0)])
        outs.append(next(iter(model.run({spec.name: chunk}).values()))[:real])
    return np.concatenate(outs)


def scores_of(row: np.ndarray) -> np.ndarray:
    """Class scores of one output row: the row itself when it already is a distribution, else its softmax."""
    row = row.astype(np.float64, copy=False).reshape(-1)
    if row.size and row.min() >= 0.0 and abs(float(row.sum()) - 1.0) <= 1e-3:
        return row
    e = np.exp(row - row.max())
    return e / e.sum()


def classify(bundle: str, paths: list[str], *, top_k: int = 1, batch_size: int = DEFAULT_BATCH,
             preprocess: str | None = None, labels_file: str | None = None, threads: int | None = None,
             verify: bool = True) -> dict[str, Any]:
    """Classify every sample under ``paths``; the JSON document that ``--format json`` prints."""
    files = collect(paths)
    if not files:
        raise AppError(f"no image or .npy files under {', '.join(paths)}", 2)
    with er.load(bundle, threads=threads, verify=verify) as model:
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise AppError(f"this app classifies with single-input, single-output models; {bundle} has "
                           f"{len(model.inputs)} inputs and {len(model.outputs)} outputs", 2)
        prep = Preprocessing.from_file(Path(preprocess)) if preprocess else \
            (Preprocessing(model.preprocessing, f"{bundle}/manifest.json preprocessing")
             if model.preprocessing else None)
        labels = [ln.strip() for ln in Path(labels_file).read_text(encoding="utf-8").splitlines()
                  if ln.strip()] if labels_file else model.labels
        names, x = load_samples(files, model.inputs[0], prep)
        out = run_batched(model, x, batch_size)
        info = {"bundle": str(bundle), "bundle_digest": model.manifest.bundle_digest, "engine": model.engine_name,
                "engine_version": model.engine_version, "accelerator": model.accelerator}
    def label_of(i: int) -> str:
        return labels[i] if labels and i < len(labels) else str(i)

    results = []
    correct = counted = 0
    for name, row in zip(names, out):
        s = scores_of(row)
        order = np.argsort(-s, kind="stable")[:max(1, top_k)]
        rec: dict[str, Any] = {"file": name, "label": label_of(int(order[0])), "index": int(order[0]),
                               "score": round(float(s[order[0]]), 6)}
        if top_k > 1:
            rec["top_k"] = [{"label": label_of(int(i)), "index": int(i), "score": round(float(s[i]), 6)}
                            for i in order]
        folder = Path(name.split("[", 1)[0]).parent.name
        names_known = labels or [str(i) for i in range(s.size)]
        if folder in names_known:
            rec["expected"] = folder
            counted += 1
            correct += rec["label"] == folder
        results.append(rec)
    summary: dict[str, Any] = {"files": len(files), "samples": len(results)}
    if counted:
        summary.update(labelled=counted, correct=correct, accuracy=round(correct / counted, 6))
    return dict(info, results=results, summary=summary)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="classify", description="Classify image files or .npy arrays with an "
                                "edgeify bundle.")
    p.add_argument("paths", nargs="+", help="image/.npy files or folders (searched recursively)")
    p.add_argument("--bundle", required=True, help="bundle directory (edgeify build -o DIR)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--top-k", type=int, default=1, help="classes to report per sample (default 1)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="samples per engine call (default 32; "
                                                                         "a fixed-batch bundle uses its own)")
    p.add_argument("--preprocess", help="preprocess.toml (or .json) for image files; default: the manifest's")
    p.add_argument("--labels", help="class names, one per line; default: the manifest's labels")
    p.add_argument("--threads", type=int, default=None, help="engine threads (default: physical cores)")
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the bundle files")
    args = p.parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1:
        p.error("--top-k and --batch-size must be >= 1")
    try:
        doc = classify(args.bundle, args.paths, top_k=args.top_k, batch_size=args.batch_size,
                       preprocess=args.preprocess, labels_file=args.labels, threads=args.threads,
                       verify=not args.no_verify)
    except AppError as err:
        print(f"classify: error: {err}", file=sys.stderr)
        if err.hint:
            print(f"fix: {err.hint}", file=sys.stderr)
        return err.code
    except er.EdgeifyRuntimeError as err:
        print(f"classify: error: {err.message}", file=sys.stderr)
        if err.hint:
            print(f"fix: {err.hint}", file=sys.stderr)
        return err.exit_code
    except OSError as exc:
        print(f"classify: error: {exc}", file=sys.stderr)
        return 7
    if args.format == "json":
        print(json.dumps(doc, indent=2))
        return 0
    width = max(len(r["file"]) for r in doc["results"])
    for r in doc["results"]:
        extra = "" if args.top_k == 1 else "  " + " ".join(f"{t['label']}:{t['score']:.4f}" for t in r["top_k"][1:])
        print(f"{r['file']:<{width}}  {r['label']}  {r['score']:.4f}{extra}")
    s = doc["summary"]
    if "accuracy" in s:
        print(f"accuracy: {s['correct']}/{s['labelled']} ({100 * s['accuracy']:.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
