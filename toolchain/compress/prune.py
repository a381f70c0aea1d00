"""Structured pruning with torch-pruning's dependency graph: whole channels (and attention heads) are removed,
so every exported graph is smaller, not masked.

torch-pruning traces the eager ``nn.Module`` and groups every layer whose shapes depend on each other (a conv
and its BatchNorm and the next layer's input channels, both branches of a residual add, a depthwise conv and its
producer, the heads of ``nn.MultiheadAttention``): a group is pruned together, so the model still runs. The
layers that produce the model's outputs are never pruned (the output shape is the model's contract).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeify.errors import ConversionError


@dataclass
class PruneReport:
    ratio: float
    importance: str
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    widths: dict[str, list[int]]  # layer -> [before, after] output channels/features, pruned layers only

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "importance": self.importance, "macs_before": self.macs_before,
                "macs_after": self.macs_after, "params_before": self.params_before,
                "params_after": self.params_after, "widths": self.widths}


def count(model: Any, example: tuple[Any, ...]) -> tuple[int, int]:
    """(MACs, parameters) of ``model`` on ``example`` (torch-pruning's counter)."""
    import torch
    import torch_pruning as tp

    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example)
    return int(macs), int(params)


def _widths(model: Any) -> dict[str, int]:
    import torch

    out = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.modules.conv._ConvNd):
            out[name] = m.out_channels
        elif isinstance(m, torch.nn.Linear):
            out[name] = m.out_features
    return out


def _output_layers(model: Any, example: tuple[Any, ...]) -> list[Any]:
    """The Linear/Conv layers whose output width equals an output's last dimension and that come last in
    module order: the classifier heads, which keep their width."""
    import torch

    with torch.no_grad():
        outs = model(*example)
    outs = outs if isinstance(outs, (tuple, list)) else [outs]
    dims = {int(o.shape[1]) for o in outs if hasattr(o, "shape") and o.ndim >= 2}
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))]
    keep = []
    for m in reversed(layers):
        width = m.out_features if isinstance(m, torch.nn.Linear) else m.out_channels
        if width in dims:
            keep.append(m)
            dims.discard(width)
        if not dims:
            break
    return keep


def prune(model: Any, example: tuple[Any, ...], ratio: float, *, importance: str = "magnitude",
          gradient_batches: Any = None, round_to: int | None = None) -> PruneReport:
    """Remove ``ratio`` of the channels of every prunable layer of ``model`` (in place).

    ``importance``: ``magnitude`` (L2 norm of each channel's weights) or ``gradient`` (first-order Taylor:
    |weight x gradient|, gradients accumulated by calling ``gradient_batches()``, which runs backward passes)."""
    import torch
    import torch_pruning as tp

    macs0, params0 = count(model, example)
    before = _widths(model)
    imp = tp.importance.TaylorImportance() if importance == "gradient" else tp.importance.MagnitudeImportance(p=2)
    heads = {m: m.num_heads for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)}
    try:
        pruner = tp.pruner.BasePruner(model, example, importance=imp, pruning_ratio=ratio,
                                      ignored_layers=_output_layers(model, example), global_pruning=False,
                                      num_heads=heads or {}, round_to=round_to)
        if importance == "gradient":
            model.zero_grad()
            gradient_batches()
        pruner.step()
        model.zero_grad(set_to_none=True)
    except ConversionError:
        raise
    except Exception as exc:
        raise ConversionError(f"structured pruning failed: {type(exc).__name__}: {exc}",
                              hint="torch-pruning traces the model's nn.Module layers; custom autograd functions "
                                   "or in-place reshapes of channel dims can stop it") from None
    macs1, params1 = count(model, example)
    after = _widths(model)
    widths = {n: [before[n], after[n]] for n in before if n in after and after[n] != before[n]}
    if not widths:
        raise ConversionError(f"--prune {ratio}: no channel could be removed (no prunable Conv/Linear layer, or "
                              "every group is too small)", hint="try a larger ratio, or a model with wider layers")
    return PruneReport(ratio, importance, macs0, macs1, params0, params1, widths)
