"""The compression options ``edgeify build`` (and ``optimize``) share: one definition, one parser."""

from __future__ import annotations

from pathlib import Path

import typer
from edgeify.errors import UsageError
from edgeify.request import Budgets, BuildRequest, DataSets

from .options import CompressOptions, parse_duration

TrainOpt = typer.Option(None, "--train", help="training data for --distill/--qat (and --prune-importance "
                        "gradient): .npz with the inputs (and `labels`), or a loader pkg.mod:factory (runs that "
                        "code)")
PruneOpt = typer.Option(None, "--prune", help="structured pruning: the fraction of channels removed in every "
                        "prunable layer (0..1); needs a module.py:factory source")
ImportanceOpt = typer.Option("magnitude", "--prune-importance", help="magnitude | gradient (on --train data)")
DistillOpt = typer.Option(False, "--distill", help="fine-tune against the source model as teacher (needs --train)")
QatOpt = typer.Option(False, "--qat", help="quantization-aware fine-tuning before the int8 build (needs --train, "
                      "--precision int8)")
TrainTimeOpt = typer.Option(None, "--train-time", help="training budget, e.g. 60s, 5m [default: 60s unless "
                            "--epochs]")
EpochsOpt = typer.Option(None, "--epochs", help="training epochs (with --train-time: whichever ends first)")


def options(train: str | Path | None, prune: float | None, importance: str, distill: bool, qat: bool,
            train_time: str | None, epochs: int | None, precision: str | None = None) -> CompressOptions | None:
    """The typed options, or None when no compression was asked for (``--train`` alone is a usage error)."""

    opts = CompressOptions(train=None if train is None else str(train), prune=prune, importance=importance,
                           distill=distill, qat=qat,
                           train_seconds=None if train_time is None else parse_duration(train_time), epochs=epochs)
    if not opts.active:
        if train is not None or train_time is not None or epochs is not None:
            raise UsageError("--train/--train-time/--epochs are for compression",
                             hint="add --distill, --qat or --prune")
        return None
    if qat and precision is not None and precision != "int8":
        raise UsageError(f"--qat fine-tunes for int8; this build is --precision {precision}",
                         hint="add --precision int8 --calib calib.npz")
    return opts


def build(run_build, model: str, compress: CompressOptions | None, *, observer=None, calib=None, eval=None,
          preprocess=None, labels=None, input_shapes=None, max_accuracy_drop=None, target_files=(), **kw):
    """``edgeify.build`` with the CLI's keywords, plus compression: without it the keywords as they are; with it
    one ``BuildRequest`` carrying ``data.train`` and the ``compress`` step's options."""
    if compress is None:
        return run_build(model, observer=observer, calib=calib, eval=eval, preprocess=preprocess, labels=labels,
                         input_shapes=input_shapes, max_accuracy_drop=max_accuracy_drop, target_files=target_files,
                         **kw)

    request = BuildRequest(
        model=str(model), data=DataSets(calibration=calib, evaluation=eval, preprocess=preprocess, labels=labels,
                                        train=compress.train),
        budgets=Budgets(max_accuracy_drop=max_accuracy_drop), input_shapes=tuple(input_shapes or ()),
        target_files=tuple(target_files), options={"compress": step_options(compress)}, **kw)
    return run_build(request, observer=observer)


def step_options(opts: CompressOptions) -> dict:
    """The ``compress`` step's config (``BuildRequest.options["compress"]``) for ``opts``."""
    from dataclasses import asdict

    return {k: v for k, v in asdict(opts).items() if k != "train"}
