"""``edgeify exit-codes`` and ``edgeify version``."""

from __future__ import annotations

import typer
from edgeify import __version__
from edgeify.errors import EXIT_CODES

from .output import Format, FormatOpt, console, examples, print_json


def exit_codes(fmt: Format = FormatOpt) -> None:
    """The documented exit codes."""

    if fmt == Format.json:
        print_json({str(k): v for k, v in EXIT_CODES.items()})
        return
    for code, meaning in EXIT_CODES.items():
        console.print(f"{code:>4}  {meaning}")


def version() -> None:
    """Print edgeify's version."""

    console.print(__version__)


def register(app: typer.Typer) -> None:
    app.command("exit-codes", epilog=examples("edgeify exit-codes", "edgeify exit-codes --format json"))(exit_codes)
    app.command("version", epilog=examples("edgeify version", "edgeify --version"))(version)
