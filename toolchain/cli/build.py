"""``edgeify build``: convert, quantize and check a model for a target into a bundle directory."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import typer
from edgeify.build import build as run_build
from edgeify.build import default_out
from edgeify.compress import cli as compress_cli
from edgeify.errors import EdgeifyError, TargetError, UsageError
from edgeify.optimize.ladder_build import build_with_ladder
from edgeify.optimize.space import BF16_FLAGS
from edgeify.pipeline import resolve
from edgeify.preflight import DataWarning
from edgeify.targets import load_registry
from edgeify_runtime.engines import check_bundle_options
from edgeify_runtime.errors import BundleError
from edgeify_runtime.identity import manifest_identity

from .output import (
    Format,
    FormatOpt,
    TargetFiles,
    err_console,
    examples,
    print_build_summary,
    print_json,
    stdout_to_stderr,
)

#: ``--precision``: every precision a target can list (``edgeify targets`` shows which each target has)
PRECISION_HELP = ("fp32 | fp16 | bf16 (fp32 weights, bfloat16 arithmetic: x86-avx512 on a CPU with avx512_bf16 or "
                  "amx_bf16) | int8 (static, needs --calib) | int8-mixed (int8, the most sensitive layers kept in "
                  "float; with --ladder) | int8-dynamic (int8 weights, activations quantized at run time) | int16x8 "
                  "(int16 activations, int8 weights; needs --calib; targets that list it)")


class IoDtype(str, Enum):
    float32 = "float32"
    int8 = "int8"


class _RichObserver:
    def __init__(self) -> None:
        self._status = None

    def step_started(self, step_id: str, kind: str) -> None:
        self._stop()
        self._status = err_console.status(f"{step_id} ({kind})…")
        self._status.start()

    def step_finished(self, step_id: str, seconds: float, cached: bool) -> None:
        self._stop()
        err_console.print(f"[green]✓[/] {step_id:<10} {'cached' if cached else f'{seconds:.2f} s':>9}")

    def message(self, text: str) -> None:
        err_console.print(f"  [dim]{text}[/]")

    def close(self) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def build(
    model: str = typer.Argument(..., help="model.onnx | model.pt2 (ExportedProgram) | model.pt (TorchScript) | "
                                          "module.py:factory"),
    target: str = typer.Option(..., "--target", "-t", help="target or family name (`edgeify targets`)"),
    precision: str = typer.Option("fp32", "--precision", "-p", help=PRECISION_HELP),
    out: Path = typer.Option(None, "--out", "-o", help="bundle directory [default: build/<model>-<target>-<prec>]"),
    engine: str = typer.Option(None, "--engine", help="engine other than the target's default for the precision"),
    engine_option: list[str] = typer.Option([], "--engine-option", metavar="KEY=VALUE",
                                            help="an engine option written to the manifest (the engine's allow-list "
                                                 "applies; VALUE is JSON or text), e.g. graph_optimization_level="
                                                 "basic (repeatable); part of the bundle's identity"),
    calib: Path = typer.Option(None, "--calib", help="calibration inputs: .npz | .npy | image folder"),
    eval_data: Path = typer.Option(None, "--eval", help="labelled inputs (.npz with `labels`) for accuracy"),
    preprocess: Path = typer.Option(None, "--preprocess", help="preprocessing TOML for image folders"),
    labels: Path = typer.Option(None, "--labels", help="class names, one per line, for the manifest's `labels` "
                                "[default: labels.txt next to the model, if there is one]"),
    input_shape: list[str] = typer.Option([], "--input-shape", help="e.g. 1,3,224,224 or x:1,3,224,224 (repeatable)"),
    max_accuracy_drop: float = typer.Option(None, "--max-accuracy-drop", help="fail if accuracy drops more "
                                                                               "(points) than this"),
    io_dtype: IoDtype = typer.Option(IoDtype.float32, "--io-dtype", help="dtype callers feed and receive; int8: "
                                     "int8 I/O for --precision int8 on TFLite targets (scale/zero point in the "
                                     "manifest)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="do not reuse cached step results"),
    no_latency: bool = typer.Option(False, "--no-latency", help="skip the quick local latency run"),
    ladder: bool = typer.Option(False, "--ladder", help="with --precision int8: when int8 misses "
                                "--max-accuracy-drop or its parity gate, go down the quantization ladder (other "
                                "recipes, int8-mixed, bf16/fp16, fp32) and keep the first rung that holds"),
    trust_source: bool = typer.Option(False, "--trust-source", help="allow a .pt2 that needs full unpickling "
                                      "(it can run code: only for files you trust)"),
    train: str = compress_cli.TrainOpt, prune: float = compress_cli.PruneOpt,
    prune_importance: str = compress_cli.ImportanceOpt, distill: bool = compress_cli.DistillOpt,
    qat: bool = compress_cli.QatOpt, train_time: str = compress_cli.TrainTimeOpt, epochs: int = compress_cli.EpochsOpt,
    target_file: list[str] = TargetFiles,
    fmt: Format = FormatOpt,
) -> None:
    """Convert, quantize and check MODEL for a target; write a bundle directory atomically."""
    # said at once: loading the converters takes seconds before the first step starts
    err_console.print(f"[dim]building {model} for {target} ({precision}): loading the toolchain…[/]")

    if isinstance(target, str):
        refuse_missing_precision(target, precision, target_file)
    if out is None:
        out = default_out(model, target=target, precision=precision, target_files=target_file)
    if engine_option:
        target = with_engine_options(target, engine, precision, engine_option, target_file)  # type: ignore[assignment]
    compress = compress_cli.options(train, prune, prune_importance, distill, qat, train_time, epochs, precision)
    observer = _RichObserver()
    import warnings

    warnings.simplefilter("ignore", DataWarning)  # the observer prints each data warning once, as "warning: ..."
    # with --format json, stdout carries one JSON object: whatever converters print there (NNCF's progress
    # bars, TensorFlow's logs) goes to stderr, at the file-descriptor level, while the build runs
    guard = stdout_to_stderr()  # stdout holds only the table or the JSON: library prints go to stderr
    with guard:
        try:
            if ladder and compress is not None:
                raise UsageError("--ladder does not combine with --prune/--distill/--qat yet",
                                 hint="build the compressed model without --ladder")
            if ladder:
                if precision != "int8":
                    raise UsageError("--ladder starts from --precision int8", hint="add --precision int8")
                result = build_with_ladder(model, target=target, out=out, engine=engine, calib=calib,
                                           eval=eval_data, preprocess=preprocess, input_shapes=input_shape or None,
                                           max_accuracy_drop=max_accuracy_drop, target_files=target_file,
                                           use_cache=not no_cache, measure_latency=not no_latency,
                                           trust_source=trust_source, progress=observer.message)
            else:
                result = compress_cli.build(run_build, model, compress, target=target, out=out, precision=precision,
                                            engine=engine, calib=calib,
                                   eval=eval_data, preprocess=preprocess, input_shapes=input_shape or None,
                                   target_files=target_file, max_accuracy_drop=max_accuracy_drop,
                                   use_cache=not no_cache, measure_latency=not no_latency, observer=observer,
                                   io_dtype=io_dtype.value, trust_source=trust_source, labels=labels)
        finally:
            observer.close()
    if result.family_alias:
        err_console.print(f"target [bold]{result.family_alias}[/] → board [bold]{result.target}[/] "
                          f"(the family's default; pass --target {result.target} to pin it)")
    summary = build_summary(result)
    if fmt == Format.json:
        print_json(summary)
        return

    print_build_summary(summary)


def with_engine_options(target: str, engine: str | None, precision: str, pairs: list[str],
                        target_files: list[str]) -> Any:
    """The target's spec with ``--engine-option KEY=VALUE`` merged into the chosen engine's options, checked
    against that engine's allow-list (the device-side adapter's own check)."""
    import json

    spec, _ = load_registry(target_files).resolve(target)
    name = resolve(spec, engine, precision).engine
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--engine-option {pair}: give KEY=VALUE", hint="e.g. --engine-option threads=1")
        try:
            options[key.strip()] = json.loads(text)
        except ValueError:
            options[key.strip()] = text
    eng = spec.engines[name]
    try:
        check_bundle_options(eng.runtime, options)
    except BundleError as exc:
        raise UsageError(f"--engine-option: {exc.message}", hint=str(exc.hint).split(";")[0]) from exc
    engines = {**spec.engines, name: eng.model_copy(update={"options": {**eng.options, **options}})}
    return spec.model_copy(update={"engines": engines})


def refuse_missing_precision(target: str, precision: str, target_files: list[str]) -> None:
    """A precision the target does not list: refused before anything loads, naming the targets of the same
    architecture that have it (bf16: and the CPU flag it needs)."""

    try:
        reg = load_registry(tuple(target_files))
        spec = reg.resolve(target)[0]
    except EdgeifyError:
        return  # the build itself says what is wrong with the target
    if precision not in spec.precisions:
        others = [t.name for t in reg if t.arch == spec.arch and precision in t.precisions]
        where = f"; {precision} is on {', '.join(others)}" if others else ""
        if precision == "bf16" and others:
            where += f" (on a CPU with {' or '.join(BF16_FLAGS)}: `lscpu | grep bf16`)"
        raise TargetError(f"target {spec.name!r} does not support precision {precision!r}",
                          hint=f"choose one of: {', '.join(spec.precisions)}{where}")


def build_summary(result: Any) -> dict[str, Any]:
    m, v = result.manifest, result.validation
    return {"bundle": str(result.out), "target": result.target, "family_alias": result.family_alias,
            "engine": result.engine, "precision": result.precision, "bundle_digest": m.bundle_digest,
            "bundle_id": _identity(m),
            "size_bytes": sum(f["size"] for f in m.files.values()), "files": m.files,
            "quantization": result.quantization.to_dict(), "parity": [r.to_dict() for r in v.outputs],
            "accuracy": None if v.accuracy is None else v.accuracy.to_dict(),
            "latency": result.latency, "seconds": round(result.seconds, 2),
            "compression": (m.raw.get("facts") or {}).get("compression"),
            "steps": [{k: s[k] for k in ("id", "uses", "seconds", "cached")} for s in result.steps]}


def _identity(m: Any) -> str:
    return manifest_identity(m)


def register(app: typer.Typer) -> None:
    app.command("build", epilog=examples(
        "edgeify build model.onnx --target x86 -o build/model-x86",
        "edgeify build model.pt2 --target rpi5 --precision int8 --calib calib.npz -o build/model-rpi5-int8",
        "edgeify build examples/digits/model.py:digits_cnn --target x86 --input-shape 1,1,8,8 --format json",
    ))(build)
