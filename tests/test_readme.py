"""Every command in the ```bash blocks of the README and of docs/*.md (in that order), read at run time, run from a
fresh temporary working directory with relative paths (issue 17.14), so the docs cannot drift from the code.

How each command is treated (printed per command with `-s`; the table below is the whole policy):

* **skipped, exactly two commands**: `./install.sh [--dev]` (it would reinstall the environment this test runs
  in; `.ci/run` runs it on a fresh machine) and `python -m pytest` (it would run this test inside itself; so would
  the README's test-tier commands, `python -m pytest -m ...`).
* **substituted files** (the README's generic names; the test writes them into the working directory):
  `model.pt2` = the digits CNN from `examples/digits/train.py` (the session's `digits` fixture, which runs that
  script's `main()` once), `model.onnx` = its ONNX export, `calib.npz` / `eval.npz` = its calibration and
  labelled evaluation data. `python examples/digits/train.py` itself is replaced by copying the fixture's
  outputs into `examples/digits/` (same script, trained once per session instead of again).
* **flags checked, not run** (`--help` appended: click rejects an unknown option or command before it prints
  help): commands that need a real device or a cluster at an address the README makes up (`devices add/check`,
  `deploy`, `rollback`, `--device`, `--devices`, `--executor ray`, a `NAME=scheme://...` server address such as
  a team PostgreSQL results store), and `build-matrix matrix.toml` (the user's matrix file;
  tests/test_matrix*.py build real matrices).
* **slow** (`-m slow`, see SLOW_MARKS): the MobileNetV2 commands (224x224 builds), `edgeify optimize`, the
  `--ladder` build and ONNX -> TFLite (onnx2tf) builds run verbatim in `test_readme_slow_commands`, in README
  order in their own working directory (they depend only on the substituted files and each other).
* everything else runs **verbatim** and must exit 0 (or the exit code its README comment names, e.g.
  "exit 13 when over budget").
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from _kit import REPO

SKIP = {"./install.sh": "reinstalls the environment the tests run in (.ci/run does it on a fresh machine)",
        "python -m pytest": "would run the test suite inside itself"}
#: commands that take minutes here (224x224 builds, the optimize search, onnx2tf conversions): `-m slow`
SLOW_MARKS = ("mobilenetv2", "edgeify optimize", "--ladder", "model.onnx --target android", "model.onnx --target rpi")
DEVICE_FLAGS = ("--device", "--devices", "--executor")
DEVICE_COMMANDS = (("devices", "add"), ("devices", "check"), ("deploy",), ("rollback",), ("build-matrix",))


@dataclass(frozen=True)
class Command:
    text: str
    argv: tuple[str, ...]  # without leading NAME=value assignments (those are in env)
    exit_codes: tuple[int, ...]
    block: int
    env: tuple[tuple[str, str], ...] = ()


def _command(part: list[str], codes: tuple[int, ...], block: int) -> Command:
    env = []
    while part and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", part[0]):
        name, value = part.pop(0).split("=", 1)
        env.append((name, value))
    text = shlex.join([f"{k}={v}" for k, v in env] + part)
    return Command(text, tuple(part), (0, *codes), block, tuple(env))


#: the README first (its commands build what the reference pages' commands use), then docs/ by name
DOC_FILES = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))


def readme_commands() -> list[Command]:
    readme = "\n".join(p.read_text() for p in DOC_FILES)
    out = []
    for b, block in enumerate(re.findall(r"```bash\n(.*?)```", readme, re.S)):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            comment = line.split(" #", 1)[1] if " #" in line else ""
            codes = tuple(int(c) for c in re.findall(r"exit (\d+)", comment))
            tokens = shlex.split(line, comments=True)
            part: list[str] = []
            for tok in [*tokens, "&&"]:
                if tok == "&&":
                    if part:
                        out.append(_command(part, codes, b))
                    part = []
                else:
                    part.append(tok)
    return out


def kind(cmd: Command) -> str:
    for prefix in SKIP:
        if cmd.text.startswith(prefix):
            return "skip"
    if cmd.text.startswith("python examples/digits/train.py"):
        return "substitute-train"
    rest = cmd.argv[1:] if cmd.argv[0] == "edgeify" else ()
    if any("://" in v for _, v in cmd.env):  # a server the README makes up (e.g. a team PostgreSQL store)
        return "help"
    if rest and (any(f in rest for f in DEVICE_FLAGS)
                 or any(tuple(rest[:len(c)]) == c for c in DEVICE_COMMANDS)):
        return "help"
    if any(m in cmd.text.lower() for m in SLOW_MARKS):
        return "slow"
    return "run"


@pytest.fixture()
def workdir(tmp_path: Path, digits, digits_onnx, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(REPO / "examples", tmp_path / "examples",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pt2", "*.npz", "labels.txt"))
    for name in ("model.pt2", "calib.npz", "eval.npz"):
        shutil.copyfile(digits[name.split(".")[0]], tmp_path / name)
    shutil.copyfile(digits_onnx, tmp_path / "model.onnx")
    monkeypatch.setenv("EDGEIFY_RESULTS_DB", str(tmp_path / "results.sqlite"))
    return tmp_path


def _run(cmd: Command, cwd: Path, digits: dict) -> subprocess.CompletedProcess[str] | None:
    k = kind(cmd)
    if k == "skip":
        return None
    if k == "substitute-train":
        for name in ("model.pt2", "calib.npz", "eval.npz"):
            shutil.copyfile(digits[name.split(".")[0]], cwd / "examples" / "digits" / name)
        shutil.copyfile(digits["dir"] / "labels.txt", cwd / "examples" / "digits" / "labels.txt")
        return None
    argv = list(cmd.argv)
    argv = ([sys.executable, "-m", "edgeify", *argv[1:]] if argv[0] == "edgeify"
            else [sys.executable, *argv[1:]] if argv[0] in ("python", "python3") else argv)
    if k == "help":
        argv.append("--help")
    env = {k2: v for k2, v in os.environ.items() if k2 != "EDGEIFY_DEBUG"}
    if k != "help":
        env.update(cmd.env)
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _check(cmds: list[Command], cwd: Path, digits: dict) -> dict[str, int]:
    counts = {"run": 0, "help": 0, "skip": 0, "substitute-train": 0, "slow": 0}
    for cmd in cmds:
        counts[kind(cmd)] += 1
        proc = _run(cmd, cwd, digits)
        print(f"[{kind(cmd)}] {cmd.text}")
        if proc is None:
            continue
        ok = (0,) if kind(cmd) == "help" else cmd.exit_codes
        assert proc.returncode in ok, (f"README block {cmd.block}: `{cmd.text}` exited {proc.returncode}\n"
                                       f"{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}")
    return counts


def test_readme_has_commands_and_the_policy_covers_them() -> None:
    cmds = readme_commands()
    assert len(cmds) >= 20
    kinds = [kind(c) for c in cmds]
    skipped = {c.text for c in cmds if kind(c) == "skip"}
    tiers = {c for c in skipped if c.startswith("python -m pytest -m ")}  # README "Tests": the tier commands
    assert skipped - tiers == {"./install.sh", "./install.sh --dev", "python -m pytest"}, skipped  # the two commands
    assert kinds.count("run") >= 15


@pytest.mark.slow  # every README and docs command: builds, benchmarks, reports
def test_readme_commands_run_verbatim(workdir: Path, digits) -> None:
    cmds = [c for c in readme_commands() if kind(c) != "slow"]
    counts = _check(cmds, workdir, digits)
    print(counts)
    assert (workdir / "build" / "digits-x86" / "manifest.json").is_file()


@pytest.mark.slow
def test_readme_slow_commands(workdir: Path, digits) -> None:
    cmds = readme_commands()
    slow = [c for c in cmds if kind(c) == "slow"]
    assert slow, "the README's MobileNetV2 commands"
    _check(slow, workdir, digits)
