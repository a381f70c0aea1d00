"""The ``edgeify`` command line: the app, the table of its commands, and the entry point that maps every error to
a message, a fix and an exit code.

A command group lives in its own module ``edgeify.cli.<name>`` with a ``register(app: typer.Typer) -> None``.
``COMMANDS`` lists every command with the module that registers it and the one line ``edgeify --help`` shows: the
app imports a command's module when that command runs (or its own ``--help`` is asked for), not to print the list.
That is a table of contents, not hidden layering: each command module imports what it uses at module level, and
``tests/test_cli_commands.py`` checks that the table says exactly what the modules register. Adding a command is one
module and one line here.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click
import typer
from typer.core import TyperGroup

from .. import noise
from ..errors import EdgeifyError
from ..version import __version__
from . import output
from .output import console, err_console

#: every command, in ``--help`` order: name -> (the module under edgeify.cli that registers it, its one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "targets": ("targets", "List and inspect build targets."),
    "engines": ("engines", "List the engines edgeify builds for (entry points `edgeify.engines`) and whether each "
                           "can run on this machine (found without importing the engine)."),
    "build": ("build", "Convert, quantize and check MODEL for a target; write a bundle directory atomically."),
    "build-matrix": ("matrix", "Build a matrix of models x targets x precisions; each cell an ordinary build, "
                               "published atomically."),
    "optimize": ("optimize", "Search engines x precisions x quantization recipes x run-time settings for the "
                             "fastest bundle that meets the budgets, measured on the device; write it to -o."),
    "bench": ("bench", "Benchmark a bundle with the device-side agent (in its own process, on this machine or on "
                       "devices) and record the result."),
    "inspect": ("inspect", "What a build for a target will do, and which ops its engine will not accelerate."),
    "results": ("results", "Benchmark history from the results store (newest first); `results show ID`, "
                           "`results tag ID NAME`."),
    "compare": ("report", "Is B faster or slower than A? Ratio with its interval and a verdict: faster, slower, "
                          "same (within ±threshold) or inconclusive (with the runs that would settle it)."),
    "gate": ("report", "CI gate: exit 14 when the candidate is slower than the baseline by more than "
                       "--max-regression AND the difference is significant; 0 otherwise, with the figures."),
    "report": ("report", "One self-contained HTML report (works offline): trends, optimize runs, per-class "
                         "accuracy, latency distributions with fingerprint and protocol, a table of the results."),
    "devices": ("devices", "The devices edgeify deploys to (a TOML file in edgeify's config dir)."),
    "deploy": ("deploy", "Upload a bundle and the runtime agent, verify sha256 on the device, install atomically "
                         "(keeps the previous version for `edgeify rollback`)."),
    "rollback": ("deploy", "Make the previous deployed version of a bundle current again (the current one becomes "
                           "previous)."),
    "rollout": ("rollout", "Roll a bundle out to a fleet in waves: a canary first, then growing waves."),
    "apps": ("apps", "Apps started on devices by `edgeify deploy BUNDLE --app serve`."),
    "exit-codes": ("meta", "The documented exit codes."),
    "version": ("meta", "Print edgeify's version."),
}

#: the command modules, in ``--help`` order; each has ``register(app)``
COMMAND_MODULES: tuple[str, ...] = tuple(dict.fromkeys(module for module, _ in COMMANDS.values()))


class _Listed(click.Command):
    """A command as ``edgeify --help`` lists it, before its module is imported."""

    def __init__(self, name: str, module: str, help: str) -> None:
        super().__init__(name, help=help)
        self.module = module


def register_module(module: str, group: TyperGroup) -> None:
    """Import ``edgeify.cli.<module>`` and add the commands its ``register`` defines to ``group``."""
    sub = typer.Typer(rich_markup_mode=None)
    importlib.import_module(f"{__package__}.{module}").register(sub)
    group.commands.update(typer.main.get_group(sub).commands)


class _Commands(TyperGroup):
    """The app's command group: lists ``COMMANDS`` from the table, imports a command's module when it is used."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for name, (module, help_) in COMMANDS.items():
            self.commands.setdefault(name, _Listed(name, module, help_))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = self.commands.get(cmd_name)
        if isinstance(cmd, _Listed):
            register_module(cmd.module, self)
            cmd = self.commands.get(cmd_name)
        return None if isinstance(cmd, _Listed) else cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, cmd) for name, cmd in self.commands.items() if not cmd.hidden]
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in rows])


app = typer.Typer(
    name="edgeify",
    help="Take a trained model to edge devices: build (convert, quantize, check) a bundle, benchmark it, "
         "and keep the results. Exit codes: `edgeify exit-codes`.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    # plain help text: flags show no `<bool>`, "[default: ...]" stays visible (no rich markup in help strings)
    rich_markup_mode=None, cls=_Commands,
    epilog="Examples:\n\n\b\n  edgeify build model.onnx --target x86 -o build/model-x86\n"
           "  edgeify bench build/model-x86\n  edgeify results\n  edgeify COMMAND --help",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        console.print(__version__)
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="print edgeify's version and exit")) -> None:
    pass  # the app's help text is Typer(help=...) above


# -- entry point --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """Console-script entry: one place maps every error to a message, a fix and an exit code."""
    debug = os.environ.get("EDGEIFY_DEBUG", "") not in ("", "0")
    noise.begin_log()  # library messages kept off the terminal go to this run's log (named if the run fails)
    try:
        app(args=argv, prog_name="edgeify")  # usage errors: typer prints them and exits 2
    except EdgeifyError as exc:
        if debug:
            err_console.print_exception()
        _print_error(exc)
        if _wants_json(sys.argv[1:] if argv is None else argv) and not output.json_printed:
            log = noise.log_with_content()  # the run's library messages, when any were kept off the terminal
            output.print_json({"ok": False, "error": exc.to_dict(), **({"log": str(log)} if log else {})})
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
                              "rerun with EDGEIFY_DEBUG=1 for the traceback and report it", highlight=False)
            _print_log_line()
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
    _print_log_line()


def _print_log_line() -> None:
    """Name this run's log of library messages (warnings, converter output kept off the terminal), if any."""
    note = noise.log_note()
    if note is not None:
        sys.stderr.write(note + "\n")
    sys.stderr.flush()


def _exit_now(code: int) -> None:
    """After Ctrl-C/SIGTERM the partial output is already gone; skip atexit hooks of half-imported libraries
    (a second KeyboardInterrupt there would turn the documented exit code into a signal death)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


__all__ = ["COMMANDS", "COMMAND_MODULES", "app", "main", "register_module"]
