"""A tiny ViT-style classifier (Dosovitskiy et al., 2020), defined from scratch, for the 8x8 digits.

Usable as an edgeify model reference: ``examples/models/vit_tiny.py:vit_tiny`` (random weights, deterministic
for a seed, ``eval()`` mode). Patch embedding (a stride-``patch`` convolution), a learned position embedding,
``depth`` pre-norm encoder layers (LayerNorm -> softmax self-attention -> residual, LayerNorm -> MLP with exact
GELU -> residual), a final LayerNorm, mean pooling over the patches and a linear head. Attention is written
out (``q @ k^T``, softmax, ``@ v``) so every exporter sees the same plain ops. Input: ``x`` float32,
shape (N, 1, 8, 8) by default (pixel values in [0, 1], like ``examples/digits``). Output: (N, classes) logits.

``python examples/models/vit_tiny.py --out DIR`` trains it on scikit-learn's ``load_digits`` for a few seconds
(about 0.95 held-out accuracy) and writes ``vit.pt2``, ``vit.onnx``, ``calib.npz``, ``eval.npz`` and
``labels.txt`` to DIR.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["EncoderLayer", "ViTTiny", "export_onnx", "train_on_digits", "vit_tiny"]


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax((q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim)), dim=-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(n, t, d))
        return x + self.mlp(self.norm2(x))


class ViTTiny(nn.Module):
    def __init__(self, image: int = 8, patch: int = 2, channels: int = 1, dim: int = 32, depth: int = 2,
                 heads: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Conv2d(channels, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, (image // patch) ** 2, dim))
        self.layers = nn.Sequential(*[EncoderLayer(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.pos  # (N, patches, dim)
        return self.head(self.norm(self.layers(tokens)).mean(dim=1))


def vit_tiny(seed: int = 0, **kwargs: int) -> ViTTiny:
    """A randomly initialised ``ViTTiny`` (deterministic for ``seed``) in eval mode."""
    torch.manual_seed(seed)
    model = ViTTiny(**kwargs)
    nn.init.normal_(model.pos, std=0.1)
    return model.eval()


def train_on_digits(epochs: int = 40, seed: int = 0) -> tuple[ViTTiny, dict[str, np.ndarray], float]:
    """Train on load_digits (70/30 stratified split); returns the model, the data splits and eval accuracy."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None]
    y = digits.target.astype(np.int64)
    x_tr, x_ev, y_tr, y_ev = train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)
    model = vit_tiny(seed).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * ((len(x_tr) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x_ev)).argmax(1).numpy() == y_ev).mean())
    calib = x_tr[np.random.default_rng(seed).choice(len(x_tr), 200, replace=False)]
    return model, {"calib": calib, "eval_x": x_ev, "eval_labels": y_ev}, accuracy


def export_onnx(model: nn.Module, path: Path, shape: tuple[int, ...] = (1, 1, 8, 8), opset: int | None = 18) -> Path:
    """ONNX export (torch's dynamo exporter, weights inside the file), input ``x``, output ``logits``. Opset 18
    (what many toolchains still ask for) spells GELU as ``Div -> Erf -> Add -> Mul -> Mul``; opset 20+ has a
    ``Gelu`` op. ``opset=None``: the exporter's default."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(shape),), str(path), dynamo=True, external_data=False,
                          input_names=["x"], output_names=["logits"], verbose=False, opset_version=opset)
    return path


def _cli() -> int:
    parser = argparse.ArgumentParser(description="train the tiny ViT on load_digits and write edgeify inputs")
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    model, data, accuracy = train_on_digits(args.epochs)
    torch.export.save(torch.export.export(model, (torch.zeros(1, 1, 8, 8),)), str(args.out / "vit.pt2"))
    export_onnx(model, args.out / "vit.onnx")
    np.savez(args.out / "calib.npz", x=data["calib"])
    np.savez(args.out / "eval.npz", x=data["eval_x"], labels=data["eval_labels"])
    (args.out / "labels.txt").write_text("".join(f"{i}\n" for i in range(10)))
    print(f"eval accuracy {accuracy:.4f}; wrote vit.pt2, vit.onnx, calib.npz, eval.npz, labels.txt to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
