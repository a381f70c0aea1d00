"""What a user asks of compression: the typed options ``edgeify build`` and ``edgeify optimize`` pass in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from edgeify.errors import UsageError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, None: 1.0}
DEFAULT_TRAIN_SECONDS = 60.0


def parse_duration(text: str, flag: str = "--train-time") -> float:
    """``"90"``, ``"90s"``, ``"2m"``, ``"1.5h"`` -> seconds (> 0); anything else is a ``UsageError``."""
    m = _DURATION.match(str(text))
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"{flag} {text!r}: not a duration", hint=f"e.g. {flag} 60s, {flag} 5m")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


@dataclass(frozen=True)
class CompressOptions:
    """Compression of a PyTorch source before its build.

    ``prune``: the fraction of channels removed in every prunable layer (0 < r < 1), None: no pruning.
    ``distill``: fine-tune the student against the source model (KL on logits at ``temperature``, plus label
    cross-entropy when the training data has labels). ``qat``: fake-quant fine-tuning before the engine's int8
    quantizer. The training budget is ``train_seconds`` and/or ``epochs`` (whichever ends first), shared by the
    phases that train (distillation, then QAT)."""

    train: str | None = None
    prune: float | None = None
    importance: Literal["magnitude", "gradient"] = "magnitude"
    distill: bool = False
    qat: bool = False
    train_seconds: float | None = None
    epochs: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    temperature: float = 4.0
    label_weight: float = 0.5  # share of the label loss when labels exist (the rest is distillation)
    round_to: int | None = None  # keep pruned widths multiples of this (e.g. 8 or 16 for SIMD), None: exact
    seed: int = 0

    def __post_init__(self) -> None:
        if self.prune is not None and not 0.0 < self.prune < 1.0:
            raise UsageError(f"--prune {self.prune}: the fraction of channels removed, between 0 and 1",
                             hint="e.g. --prune 0.5 removes half the channels of every prunable layer")
        if self.importance not in ("magnitude", "gradient"):
            raise UsageError(f"--prune-importance {self.importance!r}: magnitude or gradient")
        if self.epochs is not None and self.epochs < 1:
            raise UsageError(f"--epochs {self.epochs}: at least 1")
        if self.trains and self.train is None:
            raise UsageError("--distill and --qat fine-tune the model and need training data",
                             hint="pass --train train.npz (inputs, optional `labels`) or --train pkg.mod:factory")
        if self.prune is not None and self.importance == "gradient" and self.train is None:
            raise UsageError("--prune-importance gradient needs --train data to take gradients on")

    @property
    def active(self) -> bool:
        return self.prune is not None or self.distill or self.qat

    @property
    def trains(self) -> bool:
        return self.distill or self.qat

    @property
    def budget_seconds(self) -> float | None:
        if self.train_seconds is None and self.epochs is None:
            return DEFAULT_TRAIN_SECONDS
        return self.train_seconds

    def describe(self) -> dict:
        return {"prune_ratio": self.prune, "importance": self.importance if self.prune else None,
                "distilled": self.distill, "qat": self.qat, "train_seconds": self.budget_seconds,
                "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                "temperature": self.temperature, "label_weight": self.label_weight}
