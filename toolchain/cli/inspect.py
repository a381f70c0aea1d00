"""``edgeify inspect MODEL --target T``: the resolved pipeline, the op histogram and the ops the target's engine
does not accelerate (from a quick real build); ``edgeify inspect --parity BUNDLE --source MODEL``: the per-op
parity table of a bundle."""

from __future__ import annotations

from pathlib import Path

import typer
from edgeify.errors import UsageError
from edgeify.inspect import inspect_model, inspect_parity

from .output import Format, FormatOpt, TargetFiles, print_json
from .profile_view import print_inspect

EPILOG = ("Examples:  edgeify inspect model.onnx --target rpi5  ·  edgeify inspect model.pt2 --target x86-avx2 "
          "--engine openvino --format json  ·  edgeify inspect --parity build/m --source model.onnx")


def inspect(
    model: str = typer.Argument(..., help="the model file (or, with --parity, the bundle directory)"),
    target: str = typer.Option(None, "--target", "-t", help="target name (`edgeify targets`)"),
    engine: str = typer.Option(None, "--engine", help="[default: the target's engine for the precision]"),
    precision: str = typer.Option("fp32", "--precision", help="precision of the pipeline and the quick build"),
    calib: Path = typer.Option(None, "--calib", help="calibration data for an int8 quick build"),
    no_convert: bool = typer.Option(False, "--no-convert", help="skip the quick build and the engine's report"),
    parity: bool = typer.Option(False, "--parity", help="MODEL is a bundle: show its per-op parity table"),
    source: str = typer.Option(None, "--source", help="(--parity) the bundle's source model file"),
    input_shape: list[str] = typer.Option([], "--input-shape", metavar="NAME:DIMS", help="as for `edgeify build`"),
    target_files: list[str] = TargetFiles,
    fmt: Format = FormatOpt,
) -> None:
    """What a build for a target will do, and which ops its engine will not accelerate."""

    if parity:
        result = inspect_parity(Path(model), source=source, input_shapes=input_shape or None)
        if fmt == Format.json:
            print_json(result.to_dict())
        else:
            typer.echo(result.table(limit=10))
        return
    if not target:
        raise UsageError("inspect needs --target", hint=f"edgeify inspect {model} --target x86-avx2 "
                                                        "(`edgeify targets` lists them)")
    report = inspect_model(model, target=target, engine=engine, precision=precision,
                           calib=str(calib) if calib else None, convert=not no_convert,
                           input_shapes=input_shape or None, target_files=tuple(target_files))
    if fmt == Format.json:
        print_json(report.to_dict())
    else:
        print_inspect(report)


def register(app: typer.Typer) -> None:
    app.command("inspect", epilog=EPILOG)(inspect)


__all__ = ["inspect", "register"]
