"""The CLI's table of commands (edgeify.cli.main.COMMANDS) says what the command modules register, and
``edgeify --help`` lists them without importing them (issue 22 item 8)."""

from __future__ import annotations

import ast
import subprocess
import sys

import typer
from edgeify.cli.main import COMMAND_MODULES, COMMANDS, register_module
from typer.core import TyperGroup


def test_the_table_lists_exactly_what_each_module_registers_with_its_help() -> None:
    for module in COMMAND_MODULES:
        group = TyperGroup(name="t", rich_markup_mode=None)
        register_module(module, group)
        listed = {name for name, (mod, _) in COMMANDS.items() if mod == module}
        assert set(group.commands) == listed, module
        for name in listed:  # the first sentence of the command's docstring, as --help showed it before
            assert group.commands[name].get_short_help_str(limit=1000) == COMMANDS[name][1], name


def test_help_lists_every_command_and_imports_none_of_their_modules() -> None:
    code = ("import sys\nfrom edgeify.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "loaded = [m for m in sys.modules if m.startswith(('edgeify.cli.', 'edgeify.build', 'edgeify.deploy', "
            "'edgeify.steps', 'edgeify.pipeline', 'edgeify.targets', 'pydantic', 'numpy', 'sqlalchemy'))]\n"
            "print('LOADED', sorted(loaded))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    for name in COMMANDS:
        assert f"\n  {name} " in res.stdout, name
    loaded = set(ast.literal_eval(res.stdout.split("LOADED", 1)[1].strip()))
    # the printers main imports stay light: no command module, no fleet layer, no pydantic, no numpy
    heavy = ("edgeify.cli.", "edgeify.build", "edgeify.deploy.fleet", "edgeify.deploy.deployer", "edgeify.steps",
             "edgeify.pipeline", "edgeify.targets", "pydantic", "numpy", "sqlalchemy")
    assert {"edgeify.cli.main", "edgeify.cli.output"} <= loaded, loaded
    assert not [m for m in loaded - {"edgeify.cli.main", "edgeify.cli.output"} if m.startswith(heavy)], loaded


def test_a_command_runs_after_its_module_is_loaded_on_use() -> None:
    from edgeify.cli.main import app
    from typer.testing import CliRunner

    res = CliRunner().invoke(app, ["exit-codes", "--format", "json"])
    assert res.exit_code == 0 and '"0"' in res.output
    res = CliRunner().invoke(app, ["no-such-command"])
    assert res.exit_code == 2 and "No such command" in res.output
    assert isinstance(typer.main.get_command(app), TyperGroup)
