"""MobileNetV2 (Sandler et al., 2018), defined from scratch (no torchvision).

Usable as an edgeify model reference: ``examples/models/mobilenetv2.py:mobilenet_v2``.
The factory returns a randomly initialised network (deterministic for a given seed) in
``eval()`` mode; at 224x224 with ``width_mult=1.0`` it has about 3.5 M parameters and
about 300 M multiply-accumulates. Input: ``x`` float32, shape (N, 3, H, W).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenet_v2"]

# (expansion t, output channels c, repeats n, first stride s), as in the paper's Table 2.
_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never going below 90% of it."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def _conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv2d (no bias) -> BatchNorm2d -> ReLU6, 'same' padding for odd kernels."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> linear project (1x1), with a skip when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = round(cin * expand_ratio)
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(cin, hidden, kernel=1))
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 classifier: stem, 17 inverted residual blocks, 1x1 conv to 1280, pool, linear."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        cin = _make_divisible(32 * width_mult)
        last = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [_conv_bn_relu6(3, cin, stride=2)]
        for t, c, n, s in _SETTINGS:
            cout = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        features.append(_conv_bn_relu6(cin, last, kernel=1))
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        # He init on fan_in (not torchvision's fan_out): the network is used with random
        # weights, and fan_out makes the depthwise convs so small that activations shrink
        # ~10x per stage (logits ~1e-10), which is useless for quantization checks. With
        # fan_in, activations stay O(1) through all blocks of the eval-mode network.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                m.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(self.pool(x), 1)
        return self.classifier(x)


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, seed: int | None = 0) -> nn.Module:
    """Build a randomly initialised MobileNetV2 in ``eval()`` mode.

    Args:
        num_classes: size of the classifier output.
        width_mult: channel multiplier (1.0 = the standard 3.5 M-parameter network).
        seed: seed for ``torch.manual_seed`` before initialisation, so the weights are
            reproducible; ``None`` leaves the global RNG alone. The global RNG state is
            restored afterwards when a seed is given.

    Returns:
        The network, in eval mode (BatchNorm uses its running statistics, dropout is off).
    """
    if seed is None:
        model = MobileNetV2(num_classes=num_classes, width_mult=width_mult)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = MobileNetV2(num_classes=num_classes, width_mult=width_mult)
    return model.eval()


def _cli() -> int:
    """``python examples/models/mobilenetv2.py --calib FILE [--count N]``: random 224x224 calibration inputs."""
    import argparse

    import numpy as np

    parser = argparse.ArgumentParser(description="write stand-in calibration inputs (x: N,3,224,224 in [0, 1])")
    parser.add_argument("--calib", required=True, help="output .npz")
    parser.add_argument("--count", type=int, default=16)
    args = parser.parse_args()
    x = np.random.default_rng(0).random((args.count, 3, 224, 224), dtype=np.float32)
    np.savez(args.calib, x=x)
    print(f"wrote {args.calib}: x {list(x.shape)} (random stand-ins: calibrate on real images for real use)")
    return 0


if __name__ == "__main__":
    raise SystemExit(_cli())
