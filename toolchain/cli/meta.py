"""``edgeify exit-codes`` and ``edgeify version``."""

from __future__ import annotations

import typer

from .output import Format, FormatOpt, console, print_json


def exit_codes(fmt: Format = FormatOpt) -> None:
    """The documented exit codes."""
    from edgeify.errors import EXIT_CODES

    if fmt == Format.json:
        print_json({str(k): v for k, v in EXIT_CODES.items()})
        return
    for code, meaning in EXIT_CODES.items():
        console.print(f"{code:>4}  {meaning}")


def version() -> None:
    """Print edgeify's version."""
    from edgeify import __version__

    console.print(__version__)


def register(app: typer.Typer) -> None:
    app.command("exit-codes")(exit_codes)
    app.command("version")(version)
