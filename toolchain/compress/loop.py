"""The training loop every compression phase shares: a time/epoch budget, a progress bar on stderr (loss,
elapsed, remaining), and Ctrl-C that stops it cleanly.

Ctrl-C (and SIGTERM, which the build turns into ``KeyboardInterrupt``) is not caught here: it leaves the loop,
the progress bar is closed, and the build removes its staging directory, so nothing half-trained is written.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgeify.errors import ConversionError, DataError
from edgeify.steps.base import fault_point

from .data import Batch, TrainData

#: the interrupt tests pause here (``EDGEIFY_TEST_PAUSE_AT=train``)
FAULT_POINT = "train"


@dataclass
class TrainStats:
    phase: str
    epochs: float  # completed epochs (a partial last epoch counts by its share of batches, when known)
    steps: int
    seconds: float
    first_loss: float | None
    final_loss: float | None  # mean loss over the last epoch's batches
    stopped_by: str  # "time" | "epochs"

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "epochs": round(self.epochs, 3), "steps": self.steps,
                "seconds": round(self.seconds, 2), "first_loss": _r(self.first_loss),
                "final_loss": _r(self.final_loss), "stopped_by": self.stopped_by}


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 6)


def train(phase: str, data: TrainData, step: Callable[[Batch], float], *, seconds: float | None,
          epochs: int | None, progress: Callable[[str], None] = lambda m: None) -> TrainStats:
    """Run ``step`` on batches until the budget ends: ``seconds`` (stops mid-epoch) and/or ``epochs``."""
    t0 = time.monotonic()
    deadline = t0 + seconds if seconds is not None else math.inf
    max_epochs = epochs if epochs is not None else 10**9
    steps, first, last_mean, done_epochs, stopped = 0, None, None, 0.0, "epochs"
    batches_per_epoch = data.batches_per_epoch
    with _Bar(phase, seconds, epochs) as bar:
        epoch = 0
        while epoch < max_epochs:
            losses: list[float] = []
            for batch in data.epoch():
                fault_point(FAULT_POINT)
                loss = step(batch)
                if not math.isfinite(loss):
                    raise ConversionError(f"{phase}: the training loss became {loss} at step {steps}",
                                          hint="lower the learning rate, or check the training data")
                first = loss if first is None else first
                losses.append(loss)
                steps += 1
                bar.update(time.monotonic() - t0, epoch, sum(losses) / len(losses))
                if time.monotonic() >= deadline:
                    break
            else:
                if not losses:
                    raise DataError(f"--train {data.origin}: epoch {epoch + 1} yielded no batches",
                                    hint="a loader factory is called once per epoch and must yield batches each time")
                epoch += 1
                batches_per_epoch = len(losses)
                last_mean = sum(losses) / len(losses) if losses else last_mean
                done_epochs = float(epoch)
                progress(f"{phase}: epoch {epoch} loss {last_mean:.4f} ({time.monotonic() - t0:.0f} s)")
                if time.monotonic() >= deadline:
                    stopped = "time"
                    break
                continue
            stopped = "time"  # the deadline fell inside an epoch
            if losses:
                last_mean = sum(losses) / len(losses)
            done_epochs = epoch + (len(losses) / batches_per_epoch if batches_per_epoch else 0.0)
            break
    return TrainStats(phase, done_epochs, steps, time.monotonic() - t0, first, last_mean, stopped)


class _Bar:
    """A rich progress bar on stderr for a person at a terminal; nothing when stderr is not a terminal."""

    def __init__(self, phase: str, seconds: float | None, epochs: int | None) -> None:
        self.phase, self.seconds, self.epochs = phase, seconds, epochs
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Bar:
        if not sys.stderr.isatty():
            return self
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[loss]}"),
                                  TimeElapsedColumn(), TimeRemainingColumn(),
                                  console=Console(stderr=True), transient=True)
        self._progress.start()
        total = self.seconds if self.seconds is not None else float(self.epochs or 1)
        self._task = self._progress.add_task(self.phase, total=total, loss="")
        return self

    def update(self, elapsed: float, epoch: int, loss: float) -> None:
        if self._progress is None:
            return
        done = min(elapsed, self.seconds) if self.seconds is not None else float(epoch)
        self._progress.update(self._task, completed=done, loss=f"loss {loss:.4f} epoch {epoch + 1}")

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
