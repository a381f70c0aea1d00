"""A small CNN for the 8x8 scikit-learn digits (``sklearn.datasets.load_digits``).

Usable as an edgeify model reference: ``examples/digits/model.py:digits_cnn`` (random
weights; ``train.py`` trains it and exports ``model.pt2``). Input: ``x`` float32,
shape (N, 1, 8, 8), pixel values in [0, 1] (the raw 0..16 digits values divided by 16).
Output: (N, 10) logits for the classes "0".."9".
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DigitsCNN", "digits_cnn"]


class DigitsCNN(nn.Module):
    """conv3x3(1->16)-BN-ReLU, conv3x3(16->32)-BN-ReLU, max-pool 2, linear(512->64)-ReLU, linear(64->10)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def digits_cnn(num_classes: int = 10, seed: int | None = 0) -> nn.Module:
    """Build a randomly initialised ``DigitsCNN`` in ``eval()`` mode.

    Args:
        num_classes: size of the output (10 for the digits).
        seed: seed for ``torch.manual_seed`` before initialisation; ``None`` leaves the
            global RNG alone. The global RNG state is restored afterwards when a seed is given.
    """
    if seed is None:
        model = DigitsCNN(num_classes)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DigitsCNN(num_classes)
    return model.eval()
