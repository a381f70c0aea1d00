"""Python versions (issue 17.17): edgeify claims exactly what constraints.txt was resolved and tested for
(CPython 3.11). install.sh refuses every other interpreter before it touches anything (exit 2 with a fix line);
the running interpreter resolves the whole pinned install with the CPU-only torch build (`pip --dry-run`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from _kit import REPO
from packaging.specifiers import SpecifierSet

PYENV_VERSIONS = ("3.10.13", "3.11.7", "3.12.1", "3.13.0")


def _requires() -> SpecifierSet:
    return SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])


def _interpreters() -> list[Path]:
    """pyenv's interpreters present on this machine (none on most machines: then only the running one counts)."""
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return []
    found = [Path(root) / "versions" / v / "bin" / "python" for v in PYENV_VERSIONS]
    return [p for p in found if p.is_file()]


def test_the_claim_is_the_running_version_and_the_readme_says_so() -> None:
    spec = _requires()
    assert f"{sys.version_info.major}.{sys.version_info.minor}.0" in spec
    assert "3.10.0" not in spec and "3.12.0" not in spec  # only what the pins were resolved for
    readme = (REPO / "README.md").read_text()
    assert "Python 3.11" in readme and "≥ 3.10" not in readme and ">= 3.10" not in readme
    assert "torch==2.13.0+cpu" in (REPO / "install.sh").read_text()


def test_install_sh_refuses_other_pythons_before_doing_anything(tmp_path: Path) -> None:
    others = [p for p in _interpreters() if not p.parent.parent.name.startswith("3.11")]
    fake = tmp_path / "python3.12"  # always at least one: a stand-in that reports another version
    fake.write_text("#!/bin/sh\necho 3.12\n")
    fake.chmod(0o755)
    for py in [*others, fake]:
        proc = subprocess.run([str(REPO / "install.sh")], env={**os.environ, "PYTHON": str(py)},
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (py, proc.stdout, proc.stderr)
        assert "needs Python 3.11" in proc.stderr and "fix:" in proc.stderr
        assert "==>" not in proc.stdout  # nothing installed, no apt, no pip


@pytest.mark.slow
def test_running_interpreter_resolves_the_pinned_install_with_cpu_torch() -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", "-", "-c", "constraints.txt",
           "torch==2.13.0+cpu", "-e", "./runtimes", "-e", ".[all,dev]"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    installs = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(proc.stdout)["install"]}
    assert not [n for n in installs if n.startswith("nvidia-")], installs  # the CPU build: no CUDA runtime
    if "torch" in installs:  # not already installed: it must be the CPU build
        assert installs["torch"] == "2.13.0+cpu", installs["torch"]
