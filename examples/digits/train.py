"""Train ``DigitsCNN`` on scikit-learn's 8x8 digits and write edgeify inputs.

Usage::

    python examples/digits/train.py [--out DIR] [--epochs N]

Writes to DIR (default: this script's folder):

- ``model.pt2``  - ``torch.export`` program, input ``x`` float32 (batch, 1, 8, 8), batch 1..1024
- ``calib.npz``  - ``x``: 200 float32 calibration samples (N, 1, 8, 8) drawn from the train split
- ``eval.npz``   - ``x``: float32 held-out inputs, ``labels``: int64 class ids
- ``labels.txt`` - class names "0".."9", one per line

Inputs are the raw digits pixels (0..16) divided by 16, so values lie in [0, 1].
Everything is seeded; the eval split is a stratified 30% hold-out. Exits non-zero when
the held-out accuracy is below 0.97.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn


def _load_sibling_model() -> type[nn.Module]:
    """``DigitsCNN`` from ``model.py`` next to this file, loaded by path (no sys.path changes)."""
    path = Path(__file__).resolve().with_name("model.py")
    spec = importlib.util.spec_from_file_location("edgeify_examples_digits_model", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DigitsCNN


DigitsCNN = _load_sibling_model()

SEED = 0
EVAL_FRACTION = 0.3
CALIB_SIZE = 200
MIN_ACCURACY = 0.97
MAX_BATCH = 1024
CLASS_NAMES = [str(i) for i in range(10)]


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(x_train, y_train, x_eval, y_eval)``: float32 (N, 1, 8, 8) in [0, 1], int64 labels."""
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_eval, y_train, y_eval = train_test_split(
        x, y, test_size=EVAL_FRACTION, stratify=y, random_state=SEED
    )
    return x_train, y_train, x_eval, y_eval


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 256) -> float:
    """Top-1 accuracy of ``model`` (any callable returning logits) on ``x``/``y``."""
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model(torch.from_numpy(x[i : i + batch]))
            correct += int((logits.argmax(1).numpy() == y[i : i + batch]).sum())
    return correct / len(x)


def train(x: np.ndarray, y: np.ndarray, epochs: int, batch: int = 64, lr: float = 3e-3) -> nn.Module:
    """Train a fresh ``DigitsCNN`` (Adam, one-cycle LR, random 1-pixel shifts); return it in eval mode."""
    torch.manual_seed(SEED)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = (len(x) + batch - 1) // batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch):
            idx = perm[i : i + batch]
            xb = xt[idx]
            # Random +-1 pixel shifts (zero padded) make the small net generalise better.
            dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
            xb = torch.roll(nn.functional.pad(xb, (1, 1, 1, 1)), (dy, dx), dims=(2, 3))[:, :, 1:-1, 1:-1]
            opt.zero_grad()
            loss_fn(model(xb), yt[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


def export(model: nn.Module, path: Path) -> None:
    """Save ``model`` as a ``torch.export`` program with input ``x`` and a dynamic batch dimension."""
    # Batch 2, not 1: torch.export specialises size-1 dimensions to the constant 1 and then
    # rejects the dynamic "batch" dim. The program still accepts any batch in 1..MAX_BATCH.
    example = (torch.zeros(2, 1, 8, 8),)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)
    program = torch.export.export(model, example, dynamic_shapes=dynamic)
    torch.export.save(program, str(path))


def main(out_dir: Path | None = None, epochs: int = 30) -> dict:
    """Train, check, and write ``model.pt2``, ``calib.npz``, ``eval.npz`` and ``labels.txt``.

    Returns ``{"accuracy", "seconds", "model", "calib", "eval", "labels"}`` (paths as ``Path``).
    Does not exit on low accuracy; the command line does.
    """
    torch.set_num_threads(2)
    np.random.seed(SEED)
    out = Path(out_dir) if out_dir is not None else Path(__file__).resolve().parent
    out.mkdir(parents=True, exist_ok=True)

    x_train, y_train, x_eval, y_eval = load_data()
    start = time.perf_counter()
    model = train(x_train, y_train, epochs)
    seconds = time.perf_counter() - start
    accuracy = evaluate(model, x_eval, y_eval)

    rng = np.random.default_rng(SEED)
    calib = x_train[np.sort(rng.choice(len(x_train), size=CALIB_SIZE, replace=False))]

    paths = {
        "model": out / "model.pt2",
        "calib": out / "calib.npz",
        "eval": out / "eval.npz",
        "labels": out / "labels.txt",
    }
    export(model, paths["model"])
    np.savez(paths["calib"], x=np.ascontiguousarray(calib, dtype=np.float32))
    np.savez(
        paths["eval"],
        x=np.ascontiguousarray(x_eval, dtype=np.float32),
        labels=y_eval.astype(np.int64),
    )
    paths["labels"].write_text("\n".join(CLASS_NAMES) + "\n")
    return {"accuracy": accuracy, "seconds": seconds, **paths}


def _cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: next to this script)")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    result = main(args.out, args.epochs)
    names = ", ".join(str(result[k]) for k in ("model", "calib", "eval", "labels"))
    print(f"trained in {result['seconds']:.1f}s, eval accuracy {result['accuracy']:.4f}; wrote {names}")
    if result["accuracy"] < MIN_ACCURACY:
        print(f"error: accuracy {result['accuracy']:.4f} < {MIN_ACCURACY}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
