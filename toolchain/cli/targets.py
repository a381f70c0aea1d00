"""``edgeify targets`` (list) and ``edgeify targets show NAME``."""

from __future__ import annotations

import typer

from .output import Format, FormatOpt, TargetFiles, console, err_console, print_json

targets_app = typer.Typer(help="List and inspect build targets.", invoke_without_command=True)


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


def register(app: typer.Typer) -> None:
    app.add_typer(targets_app, name="targets")
