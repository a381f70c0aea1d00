"""``edgeify engines``: the registered engines, who registered them, and whether each can run here."""

from __future__ import annotations

import typer
from edgeify.engines import host_engines

from .output import Format, FormatOpt, console, examples, print_json


def engines(fmt: Format = FormatOpt,
            verbose: bool = typer.Option(False, "--verbose", "-v",
                                         help="also each engine's declared contract: options, tuning axes, CPU "
                                              "placement, profile and dump hooks, target families")) -> None:
    """List the engines edgeify builds for (entry points `edgeify.engines`) and whether each can run on this
    machine (found without importing the engine)."""

    rows = [e.describe() if verbose else e.status() for e in host_engines().values()]
    if fmt == Format.json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title="edgeify engines")
    for col in ("name", "distribution", "available", "reason") + (("options", "tuning axes") if verbose else ()):
        table.add_column(col, overflow="fold")
    for r in rows:
        extra = (", ".join(r["options"]), ", ".join(f"{k}={'/'.join(map(str, v))}"
                                                   for k, v in r["tuning_axes"].items()) or "-") if verbose else ()
        table.add_row(r["name"], r["distribution"], "yes" if r["available"] else "no", r["reason"], *extra)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("engines", epilog=examples("edgeify engines", "edgeify engines --format json",
                                           "edgeify engines --verbose"))(engines)
