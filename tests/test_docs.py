"""The README's promises that CI depends on."""

from __future__ import annotations

import re

from _kit import REPO


def _readme_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert block, "README must start with a bash block of commands"
    return [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.startswith("#")]


def test_readme_starts_with_exactly_two_commands_and_ci_runs_the_second() -> None:
    commands = _readme_commands()
    assert len(commands) == 2
    assert "./install.sh" in commands[0] and "edgeify build" in commands[0] and "edgeify bench" in commands[0]
    assert commands[1] in (REPO / ".ci" / "run").read_text()
    assert "pytest" in commands[1]


def test_install_script_handles_dev_and_system_packages() -> None:
    text = (REPO / "install.sh").read_text()
    assert "--dev" in text and "openssh-server" in text and "constraints.txt" in text
