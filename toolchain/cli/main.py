"""The ``edgeify`` command line: the app, the command modules it is assembled from, and the entry point that
maps every error to a message, a fix and an exit code.

A command group lives in its own module ``edgeify.cli.<name>`` with a ``register(app: typer.Typer) -> None``;
adding one is one line in ``COMMAND_MODULES``. Command modules import only typer and ``.output`` at module level
(heavy modules inside the commands), so ``edgeify --help`` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import typer

from .output import console, err_console

#: the command modules, in ``--help`` order; each has ``register(app)``
COMMAND_MODULES: tuple[str, ...] = (
    "targets",
    "engines",  # the registered engines and whether each can run here
    "build",
    "matrix",  # build-matrix
    "optimize",
    "bench",
    "inspect",  # per-op: pipeline, op histogram, engine placement, parity
    "results",
    "report",  # compare, gate, report
    "devices",
    "deploy",
    "rollout",
    "apps",
    "meta",  # exit-codes, version
)

app = typer.Typer(
    name="edgeify",
    help="Take a trained model to edge devices: build (convert, quantize, check) a bundle, benchmark it, "
         "and keep the results. Exit codes: `edgeify exit-codes`.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    # plain help text: flags show no `<bool>`, "[default: ...]" stays visible (no rich markup in help strings)
    rich_markup_mode=None,
    epilog="Examples:\n\n\b\n  edgeify build model.onnx --target x86 -o build/model-x86\n"
           "  edgeify bench build/model-x86\n  edgeify results\n  edgeify COMMAND --help",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from edgeify import __version__

        console.print(__version__)
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="print edgeify's version and exit")) -> None:
    pass  # the app's help text is Typer(help=...) above


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__package__}.{_name}").register(app)


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
        from . import output

        if _wants_json(sys.argv[1:] if argv is None else argv) and not output.json_printed:
            output.print_json({"ok": False, "error": exc.to_dict()})  # scripts read stdout: one JSON object
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


def _wants_json(argv: list[str]) -> bool:
    return any(a == "--format=json" or (a == "--format" and nxt == "json")
               for a, nxt in zip(argv, [*argv[1:], ""], strict=True))


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


__all__ = ["COMMAND_MODULES", "app", "main"]
