"""``edgeify targets`` (list) and ``edgeify targets show NAME``."""

from __future__ import annotations

from pathlib import Path

import typer
from edgeify.engines import engines_for_target
from edgeify.pipeline import resolve
from edgeify.targets import load_registry

from .output import Format, FormatOpt, TargetFiles, console, err_console, examples, print_json

targets_app = typer.Typer(help="List and inspect build targets.", invoke_without_command=True,
                          epilog=examples("edgeify targets", "edgeify targets --format json",
                                          "edgeify targets show rpi5",
                                          "edgeify targets --target-file my-targets.toml"))


@targets_app.callback()
def targets_list(ctx: typer.Context, fmt: Format = FormatOpt, target_file: list[str] = TargetFiles) -> None:
    """List the known targets (built-in, entry points, user config dir, --target-file)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"target_files": target_file}
        return

    reg = load_registry(target_file)
    usable = {s.name: engines_for_target(s) for s in reg}  # its own engines + plugins serving its family
    rows = [{**s.summary(), "engines": sorted(usable[s.name]), "engine_runtimes": usable[s.name]} for s in reg]
    if fmt == Format.json:
        print_json({"targets": rows, "families": {f.name: f.default for f in reg.families.values()},
                    "templates": dict(reg.templates)})
        return
    from rich.table import Table

    table = Table(title="edgeify targets")
    for col in ("name", "family", "arch", "engines", "precisions", "default int8", "status"):
        table.add_column(col, overflow="fold")
    for s in reg:
        table.add_row(s.name, s.family, s.arch, ", ".join(sorted(usable[s.name])), ", ".join(s.precisions),
                      s.default_engine.get("int8", "-"), s.status)
    console.print(table)
    fams = ", ".join(f"{f.name} → {f.default}" for f in reg.families.values())
    console.print(f"family aliases: {fams}")
    if reg.templates:
        console.print("templates a target file can extend (extends = \"NAME\"): " + ", ".join(
            f"{name} ({Path(src).name})" for name, src in reg.templates.items()))


@targets_app.command("show", epilog=examples("edgeify targets show x86", "edgeify targets show rpi5 > my-rpi5.toml",
                                              "edgeify targets show x86-strict --target-file my-targets.toml"))
def targets_show(ctx: typer.Context, name: str = typer.Argument(..., help="target or family name"),
                 fmt: Format = FormatOpt, target_file: list[str] = TargetFiles) -> None:
    """Show a target's full spec and its resolved pipeline for every engine and precision."""

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
    import sys

    sys.stdout.write(spec_toml(spec.model_dump(mode="json"), source=spec.source))
    for key, steps in pipelines.items():
        chain = " → ".join(f"{s['id']} ({s['uses']})" for s in steps)
        sys.stdout.write(f"# pipeline {key}: {chain}\n")
    sys.stdout.flush()


def spec_toml(spec: dict, *, source: str = "") -> str:
    """A target spec as a target file one can paste and edit (TOML has no null: unset fields are left out)."""
    import tomlkit

    def strip(v: object) -> object:
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if x is not None}
        if isinstance(v, list):
            return [strip(x) for x in v if x is not None]
        return v

    doc = tomlkit.document()
    doc.add(tomlkit.comment(f"target {spec['name']}" + (f" (from {source})" if source else "")
                            + ": paste into a target file, give it a new name, edit; or write "
                            "`extends = \"TEMPLATE\"` and only what differs (`edgeify targets` lists templates)"))
    doc["targets"] = [strip(spec)]
    return tomlkit.dumps(doc)


def register(app: typer.Typer) -> None:
    app.add_typer(targets_app, name="targets")
