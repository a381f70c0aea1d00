"""Write a small folder of digit PNGs plus the ``preprocess.toml`` that turns them into model inputs.

Usage::

    python examples/images/make_pngs.py [--out DIR] [--count N]

Writes ``DIR/<class>/<dataset index>.png`` (default DIR: ``examples/images/digits``): N
(default 12) images from scikit-learn's 8x8 digits, taken from the same stratified 30% eval
split that ``examples/digits/train.py`` holds out, round-robin over the classes (so 12
covers all ten), upscaled 2x (nearest) to 16x16 8-bit grayscale (Pillow mode "L") with
pixel = round(value * 255 / 16) for the raw 0..16 values.
``DIR/preprocess.toml`` describes how to turn a PNG into a ``DigitsCNN`` input; applied to
these files it gives float32 (1, 1, 8, 8) arrays in [0, 1] that match ``calib.npz`` /
``eval.npz`` to within 0.5/255 (8-bit rounding).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0  # must match examples/digits/train.py (same split)
EVAL_FRACTION = 0.3
UPSCALE = 2

PREPROCESS_TOML = """\
# How to turn one image file into one model input (edgeify preprocessing spec).
# Applied in this order:
#   1. img = PIL.Image.open(path).convert(mode)
#   2. img = img.resize((size[1], size[0]), resample)      # size is [H, W]; Pillow takes (W, H)
#   3. a = numpy.asarray(img, dtype=float32)                 # raw 0..255, shape (H, W) or (H, W, C)
#   4. a = (a * scale - mean[c]) / std[c]                    # per channel c; len(mean) == len(std) == C
#   5. a -> layout ("NCHW": (1, C, H, W); "NHWC": (1, H, W, C)), cast to dtype
# Here: scale = 1/255 and mean 0, std 1, so inputs are pixel/255 in [0, 1], the same
# distribution as calib.npz / eval.npz (raw digits 0..16 / 16) up to 8-bit rounding.
size = [8, 8]                  # [H, W] of the model input
mode = "L"                     # Pillow mode: "L" = 1 channel (grayscale), "RGB" = 3 channels
resample = "box"               # step 2 filter: "nearest" | "box" | "bilinear" | "bicubic" | "lanczos"
scale = 0.00392156862745098    # 1/255: multiplies the raw 0..255 pixel values
mean = [0.0]                   # per channel, subtracted after scaling
std = [1.0]                    # per channel, divides after subtracting the mean
layout = "NCHW"
dtype = "float32"
"""


def eval_indices() -> np.ndarray:
    """Dataset indices of the held-out eval split used by ``examples/digits/train.py``."""
    y = load_digits().target
    _, idx_eval = train_test_split(np.arange(len(y)), test_size=EVAL_FRACTION, stratify=y, random_state=SEED)
    return idx_eval


def pick(indices: np.ndarray, labels: np.ndarray, count: int) -> list[int]:
    """Up to ``count`` of ``indices``, round-robin over the classes (0, 1, ..., 9, 0, 1, ...)."""
    by_class = [[int(i) for i in indices if labels[i] == c] for c in range(int(labels.max()) + 1)]
    chosen: list[int] = []
    for rank in range(max(len(b) for b in by_class)):
        for members in by_class:
            if len(chosen) < count and rank < len(members):
                chosen.append(members[rank])
    return chosen


def main(out_dir: Path, count: int = 12) -> Path:
    """Write ``count`` PNGs in class subfolders and ``preprocess.toml`` under ``out_dir``; return it."""
    out = Path(out_dir)
    digits = load_digits()
    for i in pick(eval_indices(), digits.target, count):
        label = int(digits.target[i])
        pixels = np.rint(digits.images[i] * (255.0 / 16.0)).astype(np.uint8)
        img = Image.fromarray(pixels)  # 2-D uint8 -> mode "L"
        img = img.resize((8 * UPSCALE, 8 * UPSCALE), Image.Resampling.NEAREST)
        (out / str(label)).mkdir(parents=True, exist_ok=True)
        img.save(out / str(label) / f"{i:04d}.png")
    (out / "preprocess.toml").write_text(PREPROCESS_TOML)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "digits")
    parser.add_argument("--count", type=int, default=12)
    args = parser.parse_args()
    folder = main(args.out, args.count)
    n = len(list(folder.glob("*/*.png")))
    print(f"wrote {n} PNGs and {folder / 'preprocess.toml'}")
