"""``edgeify optimize``: search engines x precisions x quantization recipes x run-time settings of a target for
the fastest bundle meeting accuracy and latency budgets, measured on the device, with a quantization ladder.

    import edgeify
    result = edgeify.optimize("model.onnx", target="x86", calib="calib.npz", eval="eval.npz",
                              max_accuracy_drop=0.3, out="build/best")
    result.chosen.engine, result.chosen.latency_ms["p50"], result.to_json()["pareto"]

This module stays light (``import edgeify`` binds :func:`optimize` from here); the search loads on first call.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .records import Budgets, Candidate, Chosen, Objective, OptimizeResult, Rung

__all__ = ["Budgets", "Candidate", "Chosen", "OptimizeResult", "Rung", "optimize"]


def optimize(model: str | Path, *, target: str = "auto", out: str | Path, device: str = "local",
             calib: str | Path | None = None, eval: str | Path | None = None, preprocess: str | Path | None = None,
             input_shapes: list[str] | None = None, max_accuracy_drop: float | None = None,
             max_latency_ms: float | None = None, percentile: str = "p50", objective: Objective = "latency",
             max_time_s: float = 1800.0, engines: list[str] | None = None, precisions: list[str] | None = None,
             target_files: list[str] | tuple[str, ...] = (), use_cache: bool = True,
             trust_source: bool = False, executor: str = "local", ray_address: str | None = None,
             progress: Callable[[str], None] | None = None, compress: str | None = None,
             train: str | Path | None = None, train_time: str | None = None,
             epochs: int | None = None, train_lr: float | None = None,
             confirm_rounds: int | None = None) -> OptimizeResult:
    """The fastest bundle of ``model`` for ``target`` (``"auto"``: from the local fingerprint) that meets the
    budgets, measured on ``device``, written to ``out``. Accuracy drops are percentage points.

    Returns an ``OptimizeResult`` (``.to_json()`` is ``edgeify optimize --format json``). Raises
    ``AccuracyGateError`` (exit 10) / ``LatencyBudgetError`` (exit 13) with ``.result`` when no candidate meets
    the accuracy / latency budget; ``InterruptedBuild`` (exit 130) with ``.result`` after Ctrl-C / SIGTERM (the
    best so far, if one met the budgets, written to ``out``). ``progress`` receives one line per step (default:
    stderr). ``executor="ray"`` builds the candidates as Ray tasks on the cluster at ``ray_address`` (None: a
    private local instance); they are still measured on ``device``. ``compress="prune,distill,qat"`` (with
    ``train`` data; ``train_time`` / ``epochs`` / ``train_lr`` per compressed candidate) adds compressed
    candidates: a QAT rung first in each ladder, prune+distill at ratios 0.25/0.5/0.75, each kept only on the
    Pareto front. ``confirm_rounds`` (default 3, 0: off): the finalists re-measured in that many interleaved rounds
    before choosing; candidates within run-level noise are tied and the simplest wins."""
    from .api import run_optimize

    return run_optimize(model, target=target, out=out, device=device, calib=calib, eval=eval, preprocess=preprocess,
                        input_shapes=input_shapes, max_accuracy_drop=max_accuracy_drop,
                        max_latency_ms=max_latency_ms, percentile=percentile, objective=objective,
                        max_time_s=max_time_s, engines=engines, precisions=precisions, target_files=target_files,
                        use_cache=use_cache, trust_source=trust_source, executor=executor,
                        ray_address=ray_address, progress=progress, compress=compress, train=train,
                        train_time=train_time, epochs=epochs, train_lr=train_lr, confirm_rounds=confirm_rounds)


def __getattr__(name: str) -> Any:  # lazy: the pydantic records load on first use
    if name in ("Budgets", "Candidate", "Chosen", "OptimizeResult", "Rung"):
        from . import records

        return getattr(records, name)
    raise AttributeError(name)
