"""``edgeify optimize``: the fastest bundle that meets the accuracy and latency budgets, measured on the device."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from edgeify.errors import EdgeifyError, UsageError
from edgeify.noise import log_note
from edgeify.optimize import optimize as run
from edgeify.optimize.compress_rungs import label as compress_label
from edgeify.preflight import DataWarning

from .matrix import ExecutorKind
from .output import Format, FormatOpt, Percentile, TargetFiles, console, err_console, print_json, stdout_to_stderr
from .progress import OptimizeProgress


class Objective(str, Enum):
    latency = "latency"
    size = "size"
    accuracy = "accuracy"


def budget_note(text: str, seconds: float) -> str:
    """What ``--max-time`` means, said before the search starts; a warning when a bare number is so small that
    minutes were likely meant (``--max-time 3`` is 3 seconds)."""
    note = f"search budget: {_human_seconds(seconds)} (--max-time {text.strip()})"
    if re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", text) and seconds < 60:
        note += (f"; warning: a bare number is seconds, so this search stops after {seconds:g} s, about one build; "
                 f"for minutes say --max-time {text.strip()}m")
    return note


def _human_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``20m``, ``1h``, ``1h30m`` -> seconds."""

    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or parts is None or not any(parts.groups()):
        raise UsageError(f"--max-time {text!r} is not a duration", hint="e.g. --max-time 20m, 90s, 1h30m")
    h, m, s = (float(x) if x else 0.0 for x in parts.groups())
    secs = h * 3600 + m * 60 + s
    if secs <= 0:
        raise UsageError(f"--max-time {text!r} must be positive", hint="e.g. --max-time 20m")
    return secs


def optimize(
    model: str = typer.Argument(..., help="model.onnx | model.pt2 | model.pt | module.py:factory"),
    target: str = typer.Option("auto", "--target", "-t", help="target or family name; auto: the board matching "
                                                              "this machine's CPU"),
    out: Path = typer.Option(..., "--out", "-o", help="where the chosen bundle is written"),
    device: str = typer.Option(None, "--device", "-d", help="measure on this device (`edgeify devices list`) "
                                                            "instead of this machine"),
    calib: Path = typer.Option(None, "--calib", help="calibration inputs (needed for static int8)"),
    eval_data: Path = typer.Option(None, "--eval", help="evaluation inputs; with `labels`: accuracy in points, "
                                                        "without: agreement with the source model"),
    preprocess: Path = typer.Option(None, "--preprocess", help="preprocessing TOML for image folders"),
    input_shape: list[str] = typer.Option([], "--input-shape", help="e.g. 1,3,224,224 (repeatable)"),
    max_accuracy_drop: float = typer.Option(None, "--max-accuracy-drop", help="budget, percentage points"),
    max_latency_ms: float = typer.Option(None, "--max-latency-ms", help="latency budget at --percentile"),
    percentile: Percentile = typer.Option(Percentile.p50, "--percentile", help="percentile the budget applies to"),
    objective: Objective = typer.Option(Objective.latency, "--objective", help="what to minimise; the others "
                                                                               "are constraints"),
    max_time: str = typer.Option("30m", "--max-time", help="stop the search after this long (e.g. 20m, 90s)"),
    engine: list[str] = typer.Option([], "--engine", help="only these engines (repeatable)"),
    precision: list[str] = typer.Option([], "--precision", "-p", help="only these precisions (repeatable)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="do not reuse cached step results"),
    executor: ExecutorKind = typer.Option(ExecutorKind.local, "--executor", help="where candidates are built: "
                                          "local: in this process; ray: one Ray task per candidate on a "
                                          "cluster (measured on the device either way)"),
    ray_address: str = typer.Option(None, "--ray-address", help="HOST:PORT of the Ray head's GCS "
                                    "[default: start a private local Ray instance]"),
    trust_source: bool = typer.Option(False, "--trust-source", help="allow a .pt2 that needs full "
                                      "unpickling (it can run code: only for files you trust)"),
    compress: str = typer.Option(None, "--compress", help="also try compressed models (training: minutes): "
                                 "prune,distill (channels pruned at 0.25/0.5/0.75, fine-tuned against this "
                                 "model) and/or qat (quantization-aware int8, first rung of the ladder); kept "
                                 "only on the Pareto front; needs --train and labelled --eval"),
    train: str = typer.Option(None, "--train", help="training data for --compress: .npz with the inputs (and "
                              "`labels`), or a loader pkg.mod:factory (runs that code)"),
    train_time: str = typer.Option(None, "--train-time", help="training budget per compressed candidate, e.g. "
                                   "60s [default: up to 60 s, a share of --max-time]"),
    epochs: int = typer.Option(None, "--epochs", help="training epochs per compressed candidate (with "
                               "--train-time: whichever ends first)"),
    train_lr: float = typer.Option(None, "--train-lr", help="Adam learning rate of the compression training "
                                   "[default: 0.001]"),
    confirm_rounds: int = typer.Option(3, "--confirm-rounds", min=0, help="before choosing, re-measure the "
                                       "finalists (within 15% of the best, at most 3) in this many interleaved "
                                       "rounds; within run-level noise they are tied and the simplest wins "
                                       "(0: off; stops at --max-time)"),
    target_file: list[str] = TargetFiles,
    wide: bool = typer.Option(False, "--wide", help="every column of the candidates table (settings, int8 ops, "
                              "p95, full reasons); the default fits 100 columns"),
    fmt: Format = FormatOpt,
) -> None:
    """Search engines x precisions x quantization recipes x run-time settings for the fastest bundle that meets
    the budgets, measured on the device; write it to -o. Exit 10 / 13 when no candidate meets the accuracy /
    latency budget. Ctrl-C stops the search: the best so far is reported and written to -o, exit 130."""
    import warnings


    warnings.simplefilter("once", DataWarning)  # every candidate build loads the same data: say it once

    seconds = parse_duration(max_time)
    guard = stdout_to_stderr()  # stdout holds only the table or the JSON: library prints go to stderr
    failure: EdgeifyError | None = None
    crash: Exception | None = None
    progress = OptimizeProgress(err_console)
    progress.say(budget_note(max_time, seconds))
    with guard:
        try:
            result = run(model, target=target, out=out, device=device or "local", calib=calib, eval=eval_data,
                         preprocess=preprocess, input_shapes=input_shape or None,
                         max_accuracy_drop=max_accuracy_drop, max_latency_ms=max_latency_ms,
                         percentile=percentile.value, objective=objective.value, max_time_s=seconds,
                         engines=engine or None, precisions=precision or None, target_files=target_file,
                         use_cache=not no_cache, trust_source=trust_source, executor=executor.value,
                         ray_address=ray_address, progress=progress.say, compress=compress, train=train,
                         train_time=train_time, epochs=epochs, train_lr=train_lr, confirm_rounds=confirm_rounds)
        except EdgeifyError as exc:
            if getattr(exc, "result", None) is None:
                raise
            failure, result = exc, exc.result  # type: ignore[attr-defined]
        except Exception as exc:  # not edgeify's: still one "ok": false object on stdout with --format json
            crash = exc
        finally:
            progress.close()
    if crash is not None:
        if fmt == Format.json:  # after the guard: stdout is stdout again
            partial = getattr(crash, "result", None)
            print_json({"ok": False, "error": {"exit_code": 1, "type": "InternalError",
                                               "message": f"{type(crash).__name__}: {crash}"},
                        **(partial.to_json() if partial is not None else {})})
        raise crash
    if fmt == Format.json:
        data = result.to_json()
        if failure is not None:
            data = {"ok": False, "error": failure.to_dict(), **data}
        print_json(data)
    else:
        print_table(result, wide=wide)
    if result.stopped:
        err_console.print(f"[yellow]stopped early[/]: {result.stopped}")
    if failure is not None and failure.exit_code == 130:
        raise failure  # Ctrl-C / SIGTERM: the one error line and exit 130 from the entry point, like build
    if failure is not None:
        err_console.print(f"error [{failure.exit_code}] {failure.message}")
        if failure.hint:
            err_console.print(f"fix: {failure.hint}")
        if (note := log_note()) is not None:
            err_console.print(note, highlight=False, soft_wrap=True)
        raise typer.Exit(failure.exit_code)


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def print_table(result: Any, wide: bool = False) -> None:
    """The candidates (and the ladder) as tables: 100 columns by default, every detail with ``wide``."""
    from rich.console import Console
    from rich.table import Table

    out = console if wide else Console(highlight=False, width=min(100, console.width or 100),
                                       file=console.file, force_terminal=console.is_terminal)
    front = set(result.pareto)
    chosen = result.chosen.index if result.chosen else None
    from rich import box

    table = Table(title=f"optimize {result.run_id}: {result.target} on {result.device}, objective "
                        f"{result.objective}, accuracy by {result.accuracy_measure}",
                  box=box.HEAVY_HEAD if wide else box.SIMPLE_HEAD, pad_edge=wide, collapse_padding=not wide)
    cols = (("#", "engine", "precision", "recipe", "settings", "size KB", "int8 ops", "acc drop pt", "p50 ms",
             "p95 ms", "meets", "status") if wide else
            ("#", "engine", "prec", "recipe", "KB", "drop pt", "p50 ms", "meets", "status"))
    for col in cols:
        table.add_column(col, overflow="fold" if wide else "ellipsis", no_wrap=not wide,
                         width=None if wide else _NARROW.get(col))
    for i, c in enumerate(result.candidates):
        lat = c.latency_ms or c.screen_latency_ms or {}
        mark = ("★ " if i == chosen else "") + ("◆" if i in front else "")
        ops = f"{c.quantized_ops}/{c.total_ops}" if c.total_ops is not None else "-"
        recipe = c.recipe.name + (f" float: {', '.join(c.recipe.float_layers)}" if c.recipe.float_layers else "")
        recipe = (f"{compress_label(c)}: " if c.compression else "") + recipe  # e.g. "prune 0.5+kd: default"
        size = "-" if c.size_bytes is None else f"{c.size_bytes / 1024:.0f}"
        drop = "-" if c.accuracy_drop is None else f"{c.accuracy_drop:.2f}"
        status = c.status + (f": {c.reason}" if c.reason else "")
        if wide:
            table.add_row(f"{mark}{i}", c.engine, c.precision, recipe, c.settings.label(), size, ops, drop,
                          _ms(lat.get("p50")), _ms(lat.get("p95")), "yes" if c.meets_budget else "no", status)
        else:
            table.add_row(f"{mark}{i}", _cut(c.engine, 11), c.precision, _cut(recipe, 16), size, drop,
                          _ms(lat.get("p50")), "yes" if c.meets_budget else "no", _cut(status, 22))
    out.print(table)
    out.print("★ chosen  ◆ Pareto front (latency, accuracy drop, size); screened rows ran the short protocol"
              + ("" if wide else "; --wide or --format json: settings, int8 ops, p95 and full reasons"))
    if result.ladder:
        lt = Table(title="quantization ladder", box=box.HEAVY_HEAD if wide else box.SIMPLE_HEAD, pad_edge=wide,
                   collapse_padding=not wide)
        lcols = (("rung", "engine", "precision", "acc drop pt", "cosine", "p50 ms", "int8 ops", "met budget", "why")
                 if wide else ("rung", "prec", "drop pt", "cosine", "p50 ms", "met", "why"))
        for col in lcols:
            lt.add_column(col, overflow="fold" if wide else "ellipsis", no_wrap=not wide,
                          width=None if wide else _NARROW.get(col))
        for r in result.ladder:
            drop = "-" if r.accuracy_drop is None else f"{r.accuracy_drop:.2f}"
            cos = "-" if r.cosine is None else f"{r.cosine:.4f}"
            met = "yes" if r.accepted else "no"
            if wide:
                lt.add_row(r.rung, r.engine, r.precision, drop, cos, _ms(r.latency_p50_ms),
                           f"{r.quantized_ops}/{r.total_ops}" if r.total_ops is not None else "-", met, r.reason)
            else:
                lt.add_row(_cut(f"{r.engine} {r.rung}", 30), r.precision, drop, cos, _ms(r.latency_p50_ms), met,
                           _cut(r.reason, 20))
        out.print(lt)
        named = [r for r in result.ladder if r.float_modules]
        for r in [x for x in named if x.accepted] or named[-1:]:  # the layers kept in float, by source module
            out.print(f"kept in float ({r.engine} {r.rung.split(' float:')[0]}): " + "; ".join(
                f"{layer} = {mod}" for layer, mod in r.float_modules.items()), soft_wrap=wide, highlight=False)
    if result.chosen:
        ch = result.chosen
        comp = f"{compress_label(result.candidates[ch.index])}, " if ch.compression else ""
        out.print(f"[bold]chosen[/]: {ch.engine} {ch.precision} ({comp}{ch.recipe.name}) → {ch.bundle}\n"
                  f"why: {ch.why}\ntarget: {result.target_reason}; search took {result.wall_s:.0f} s")


#: column widths of the 100-column tables (the cells are cut with "…" to fit)
_NARROW = {"#": 4, "engine": 11, "prec": 12, "recipe": 16, "KB": 5, "drop pt": 7, "p50 ms": 7, "meets": 5,
           "status": 22, "rung": 30, "cosine": 6, "met": 3, "why": 20}


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def register(app: typer.Typer) -> None:
    app.command("optimize")(optimize)
