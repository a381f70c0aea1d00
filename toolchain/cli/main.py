"""The ``edgeify`` command line. Heavy modules are imported inside commands so ``--help`` stays fast."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from .output import console, err_console, print_json

app = typer.Typer(
    name="edgeify",
    help="Take a trained model to edge devices: build (convert, quantize, check) a bundle, benchmark it, "
         "and keep the results. Exit codes: `edgeify exit-codes`.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
targets_app = typer.Typer(help="List and inspect build targets.", invoke_without_command=True)
app.add_typer(targets_app, name="targets")


class Format(str, Enum):
    table = "table"
    json = "json"


class IoDtype(str, Enum):
    float32 = "float32"
    int8 = "int8"


TargetFiles = typer.Option([], "--target-file", help="extra target spec TOML file (repeatable)")
FormatOpt = typer.Option(Format.table, "--format", help="table for people, json for machines")


# -- targets ------------------------------------------------------------------------------------------------
@targets_app.callback()
def targets_list(ctx: typer.Context, fmt: Format = FormatOpt, target_file: list[str] = TargetFiles) -> None:
    """List the known targets (built-in, entry points, user config dir, --target-file)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"target_files": target_file}
        return
    from edgeify.targets import load_registry

    reg = load_registry(target_file)
    rows = [s.summary() for s in reg]
    if fmt == Format.json:
        print_json({"targets": rows, "families": {f.name: f.default for f in reg.families.values()}})
        return
    from rich.table import Table

    table = Table(title="edgeify targets")
    for col in ("name", "family", "arch", "engines", "precisions", "default int8", "status"):
        table.add_column(col, overflow="fold")
    for s in reg:
        table.add_row(s.name, s.family, s.arch, ", ".join(sorted(s.engines)), ", ".join(s.precisions),
                      s.default_engine.get("int8", "-"), s.status)
    console.print(table)
    fams = ", ".join(f"{f.name} → {f.default}" for f in reg.families.values())
    console.print(f"family aliases: {fams}")


@targets_app.command("show")
def targets_show(ctx: typer.Context, name: str = typer.Argument(..., help="target or family name"),
                 fmt: Format = FormatOpt, target_file: list[str] = TargetFiles) -> None:
    """Show a target's full spec and its resolved pipeline for every engine and precision."""
    from edgeify.pipeline import resolve
    from edgeify.targets import load_registry

    files = list(target_file) + list((ctx.obj or {}).get("target_files", []))
    reg = load_registry(files)
    spec, family = reg.resolve(name)
    if family:
        err_console.print(f"[bold]{family}[/] is a family alias; showing its default board [bold]{spec.name}[/]")
    pipelines = {}
    for eng, es in spec.engines.items():
        for prec in es.precisions:
            if prec in spec.precisions:
                pipelines[f"{eng}/{prec}"] = resolve(spec, eng, prec).describe()
    data = {**spec.model_dump(mode="json"), "source": spec.source, "digest": spec.digest,
            "resolved_pipelines": pipelines}
    if fmt == Format.json:
        print_json(data)
        return
    from rich.pretty import Pretty

    console.print(Pretty({k: v for k, v in data.items() if k != "resolved_pipelines"}))
    for key, steps in pipelines.items():
        chain = " → ".join(f"{s['id']} ({s['uses']})" for s in steps)
        console.print(f"[bold]{key}[/]: {chain}")


# -- build --------------------------------------------------------------------------------------------------
class _RichObserver:
    def __init__(self) -> None:
        self._status = None

    def step_started(self, step_id: str, kind: str) -> None:
        self._stop()
        self._status = err_console.status(f"{step_id} ({kind})…")
        self._status.start()

    def step_finished(self, step_id: str, seconds: float, cached: bool) -> None:
        self._stop()
        err_console.print(f"[green]✓[/] {step_id:<10} {seconds:6.2f} s{'  (cached)' if cached else ''}")

    def message(self, text: str) -> None:
        err_console.print(f"  [dim]{text}[/]")

    def close(self) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


@app.command()
def build(
    model: str = typer.Argument(..., help="model.onnx | model.pt2 (ExportedProgram) | model.pt (TorchScript) | "
                                          "module.py:factory"),
    target: str = typer.Option(..., "--target", "-t", help="target or family name (`edgeify targets`)"),
    precision: str = typer.Option("fp32", "--precision", "-p", help="fp32 | fp16 | int8 (static, needs --calib) | "
                                                                    "int8-dynamic | int16x8 (TFLite, needs --calib)"),
    out: Path = typer.Option(None, "--out", "-o", help="bundle directory [default: build/<model>-<target>-<prec>]"),
    engine: str = typer.Option(None, "--engine", help="engine other than the target's default for the precision"),
    calib: Path = typer.Option(None, "--calib", help="calibration inputs: .npz | .npy | image folder"),
    eval_data: Path = typer.Option(None, "--eval", help="labelled inputs (.npz with `labels`) for accuracy"),
    preprocess: Path = typer.Option(None, "--preprocess", help="preprocessing TOML for image folders"),
    input_shape: list[str] = typer.Option([], "--input-shape", help="e.g. 1,3,224,224 or x:1,3,224,224 (repeatable)"),
    max_accuracy_drop: float = typer.Option(None, "--max-accuracy-drop", help="fail if accuracy drops more "
                                                                               "(points) than this"),
    io_dtype: IoDtype = typer.Option(IoDtype.float32, "--io-dtype", help="dtype callers feed and receive; int8: "
                                     "int8 I/O for --precision int8 on TFLite targets (scale/zero point in the "
                                     "manifest)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="do not reuse cached step results"),
    no_latency: bool = typer.Option(False, "--no-latency", help="skip the quick local latency run"),
    target_file: list[str] = TargetFiles,
    fmt: Format = FormatOpt,
) -> None:
    """Convert, quantize and check MODEL for a target; write a bundle directory atomically."""
    from edgeify.build import build as run_build
    from edgeify.targets import load_registry

    if out is None:
        spec, _ = load_registry(target_file).resolve(target)
        out = Path("build") / f"{Path(model.split(':')[0]).stem}-{spec.name}-{precision}"
    observer = _RichObserver()
    # with --format json, stdout carries one JSON object: whatever converters print there (NNCF's progress
    # bars, TensorFlow's logs) goes to stderr, at the file-descriptor level, while the build runs
    guard = _stdout_to_stderr() if fmt == Format.json else contextlib.nullcontext()
    with guard:
        try:
            result = run_build(model, target=target, out=out, precision=precision, engine=engine, calib=calib,
                               eval=eval_data, preprocess=preprocess, input_shapes=input_shape or None,
                               target_files=target_file, max_accuracy_drop=max_accuracy_drop,
                               use_cache=not no_cache, measure_latency=not no_latency, observer=observer,
                               io_dtype=io_dtype.value)
        finally:
            observer.close()
    if result.family_alias:
        err_console.print(f"target [bold]{result.family_alias}[/] → board [bold]{result.target}[/] "
                          f"(the family's default; pass --target {result.target} to pin it)")
    summary = build_summary(result)
    if fmt == Format.json:
        print_json(summary)
        return
    from .output import print_build_summary

    print_build_summary(summary)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def build_summary(result: Any) -> dict[str, Any]:
    m = result.manifest
    v = m.get("validation") or {}
    return {"bundle": str(result.out), "target": result.target, "family_alias": result.family_alias,
            "engine": result.engine, "precision": result.precision, "bundle_digest": m["bundle_digest"],
            "size_bytes": sum(f["size"] for f in m["files"].values()), "files": m["files"],
            "quantization": m.get("quantization"), "parity": v.get("outputs"), "accuracy": v.get("accuracy"),
            "latency": result.latency, "seconds": round(result.seconds, 2),
            "steps": [{k: s[k] for k in ("id", "uses", "seconds", "cached")} for s in result.steps]}


# -- bench --------------------------------------------------------------------------------------------------
class Percentile(str, Enum):
    p50 = "p50"
    p90 = "p90"
    p95 = "p95"
    p99 = "p99"


@app.command()
def bench(
    bundle: Path = typer.Argument(..., help="bundle directory written by `edgeify build`"),
    device: str = typer.Option("local", "--device", "-d", help="device to run on (`local`: this machine, or a name "
                                                                 "from `edgeify devices list`)"),
    devices: str = typer.Option(None, "--devices", help="several devices in parallel: tag:TAG, NAME1,NAME2 or all"),
    threads: int = typer.Option(None, "--threads", min=1, help="[default: the device's physical cores]"),
    warmup: int = typer.Option(None, "--warmup", min=0, help="[default: the target's protocol]"),
    runs: int = typer.Option(None, "--runs", min=1, help="[default: the target's protocol]"),
    min_duration: float = typer.Option(None, "--min-duration", min=0, help="seconds [default: target's protocol]"),
    max_latency_ms: float = typer.Option(None, "--max-latency-ms", help="fail (exit 13) when over this budget"),
    percentile: Percentile = typer.Option(Percentile.p95, "--percentile", help="percentile the budget applies to"),
    no_store: bool = typer.Option(False, "--no-store", help="do not record the result in the results store"),
    fmt: Format = FormatOpt,
) -> None:
    """Benchmark a bundle with the device-side agent (in its own process) and record the result."""
    from edgeify.benchmark import benchmark_bundle, check_budget

    if devices:
        from .devices import bench_fleet

        bench_fleet(bundle, devices, threads=threads, warmup=warmup, runs=runs, min_duration_s=min_duration,
                    store=not no_store, fmt=fmt.value, max_latency_ms=max_latency_ms, percentile=percentile.value)
        return

    result = benchmark_bundle(bundle, device=device, threads=threads, warmup=warmup, runs=runs,
                              min_duration_s=min_duration, store=not no_store)
    if fmt == Format.json:
        print_json(result)
    else:
        from .output import print_bench

        print_bench(result)
    check_budget(result, max_latency_ms, percentile.value)


# -- results ------------------------------------------------------------------------------------------------
@app.command()
def results(
    device: str = typer.Option(None, "--device", help="only this device"),
    target: str = typer.Option(None, "--target", help="only this target"),
    bundle_digest: str = typer.Option(None, "--bundle", help="only this bundle digest (prefix)"),
    limit: int = typer.Option(20, "--limit", min=1),
    full: bool = typer.Option(False, "--full", help="with raw samples, protocol and fingerprint (json)"),
    fmt: Format = FormatOpt,
) -> None:
    """Benchmark history from the local results store (newest first)."""
    from edgeify.paths import results_db
    from edgeify.results import ResultsStore

    rows = ResultsStore(results_db()).query(device=device, target=target, bundle_digest=bundle_digest,
                                            limit=limit, full=full)
    if fmt == Format.json or full:
        print_json({"store": str(results_db()), "results": rows})
        return
    from .output import print_results

    print_results(rows, results_db())


@app.command("exit-codes")
def exit_codes(fmt: Format = FormatOpt) -> None:
    """The documented exit codes."""
    from edgeify.errors import EXIT_CODES

    if fmt == Format.json:
        print_json({str(k): v for k, v in EXIT_CODES.items()})
        return
    for code, meaning in EXIT_CODES.items():
        console.print(f"{code:>4}  {meaning}")


@app.command()
def version() -> None:
    """Print edgeify's version."""
    from edgeify import __version__

    console.print(__version__)


from .devices import register as _register_devices  # noqa: E402  (devices, deploy, rollback)

_register_devices(app)


# -- entry point --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """Console-script entry: one place maps every error to a message, a fix and an exit code."""
    from edgeify.errors import EdgeifyError

    debug = os.environ.get("EDGEIFY_DEBUG", "") not in ("", "0")
    try:
        app(args=argv, prog_name="edgeify")  # usage errors: typer prints them and exits 2
    except EdgeifyError as exc:
        if debug:
            err_console.print_exception()
        _print_error(exc)
        if exc.exit_code == 130:
            _exit_now(130)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        _exit_now(130)
    except Exception as exc:  # the last resort: one line, traceback only on request
        if debug:
            err_console.print_exception()
        else:
            err_console.print(f"[bold red]internal error[/]: {type(exc).__name__}: {exc}\n"
                              "rerun with EDGEIFY_DEBUG=1 for the traceback and report it")
        sys.exit(1)


def _print_error(exc: Any) -> None:
    """Plain text, never re-wrapped: messages and fixes must survive copy-paste and log scraping."""
    tty = sys.stderr.isatty()
    red, yellow, reset = ("\033[1;31m", "\033[1;33m", "\033[0m") if tty else ("", "", "")
    sys.stderr.write(f"{red}error{reset} [{exc.exit_code}] {exc.message}\n")
    if exc.hint:
        sys.stderr.write(f"{yellow}fix:{reset} {exc.hint}\n")
    sys.stderr.flush()


def _exit_now(code: int) -> None:
    """After Ctrl-C/SIGTERM the partial output is already gone; skip atexit hooks of half-imported libraries
    (a second KeyboardInterrupt there would turn the documented exit code into a signal death)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


__all__ = ["app", "main"]
