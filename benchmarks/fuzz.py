"""The fuzzing properties of ``tests/test_fuzz.py``, run long: examples tried and failures found per parser.

    python benchmarks/fuzz.py [--examples 2000] [--seed N] [--out benchmarks/fuzz]

Runs ``pytest tests/test_fuzz.py`` once with ``EDGEIFY_FUZZ_EXAMPLES=--examples`` (the target spec parser, which
loads the whole registry per example, gets a fifth of them) and random generation (``EDGEIFY_FUZZ_RANDOM=1``:
CI runs a fixed, derandomized 60 per parser), with Hypothesis' statistics; reads per parser the examples tried
(passing, failing, invalid, over every phase) and whether it failed, with the falsifying example. Writes
``<out>.json`` and ``<out>.md`` (a table) and prints the table. The property everywhere: a typed error or a
valid result; a hang is caught by each example's deadline (5 s; 20 s for target files).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
_TEST = re.compile(r"^tests/test_fuzz\.py::(\w+):\s*$")
_COUNTS = re.compile(r"(\d+) passing(?: examples?)?, (\d+) failing(?: examples?)?,(?: and)? (\d+) invalid")


def parse_statistics(text: str) -> dict[str, dict[str, Any]]:
    """Hypothesis' ``--hypothesis-show-statistics`` section -> {test: {examples, passing, failing, invalid}}."""
    out: dict[str, dict[str, Any]] = {}
    current = None
    for line in text.splitlines():
        m = _TEST.match(line.strip())
        if m:
            current = out.setdefault(m.group(1), {"examples": 0, "passing": 0, "failing": 0, "invalid": 0})
            continue
        m = _COUNTS.search(line)
        if m and current is not None:
            p, f, i = (int(x) for x in m.groups())
            current["passing"] += p
            current["failing"] += f
            current["invalid"] += i
            current["examples"] += p + f + i
    return out


def run(examples: int, seed: int | None, timeout: float) -> dict[str, Any]:
    env = {**os.environ, "EDGEIFY_FUZZ_EXAMPLES": str(examples), "EDGEIFY_FUZZ_RANDOM": "1"}
    argv = [sys.executable, "-m", "pytest", "tests/test_fuzz.py", "-q", "-p", "no:cacheprovider",
            "--hypothesis-show-statistics", "-o", "addopts=", "-rf"]
    if seed is not None:
        argv += [f"--hypothesis-seed={seed}"]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    seconds = time.perf_counter() - t0
    log = Path(os.environ.get("TMPDIR", "/tmp")) / "edgeify-fuzz.log"
    log.write_text(proc.stdout + proc.stderr)
    stats = parse_statistics(proc.stdout)
    failed = set(re.findall(r"^FAILED tests/test_fuzz\.py::(\w+)", proc.stdout, re.M))
    falsifying = re.findall(r"Falsifying example: (\w+)\(\n(.*?)\n\)", proc.stdout, re.S)
    parsers = []
    for name, s in sorted(stats.items()):
        example = next((body.strip() for test, body in falsifying if test == name), None)
        parsers.append({"test": name, **s, "failed": name in failed, "falsifying_example": example})
    return {"examples_per_parser": examples, "seed": seed, "seconds": round(seconds, 1),
            "pytest_exit": proc.returncode, "parsers": parsers,
            "total_examples": sum(p["examples"] for p in parsers),
            "failures": sum(1 for p in parsers if p["failed"]),
            "log": str(log),
            "tail": proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else [proc.stderr[-500:]]}


def table(result: dict[str, Any]) -> str:
    rows = ["| parser (test) | examples tried | invalid | failure found |", "|---|---:|---:|---|"]
    for p in result["parsers"]:
        found = "**yes**: " + (p["falsifying_example"] or "see the log")[:120].replace("\n", " ") if p["failed"] \
            else "no"
        rows.append(f"| `{p['test'].removeprefix('test_')}` | {p['examples']} | {p['invalid']} | {found} |")
    rows.append(f"| **total** | **{result['total_examples']}** | | **{result['failures']}** failing |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=2000, help="examples per parser (default 2000)")
    ap.add_argument("--seed", type=int, default=None, help="Hypothesis seed (default: random)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds for the whole run (default 3600)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "fuzz"), help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    result = run(args.examples, args.seed, args.timeout)
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    result.update({"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                   "cores": os.cpu_count(), "load_before_after": load,
                   "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    md = table(result)
    Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
    Path(args.out + ".md").write_text(
        f"# Fuzzing: {result['examples_per_parser']} examples per parser (`python benchmarks/fuzz.py`)\n\n"
        f"{result['when']}, {result['cores']} cores, load {load}, {result['seconds']} s, pytest exit "
        f"{result['pytest_exit']}.\n\n{md}\n")
    print(md)
    print(f"{result['total_examples']} examples in {result['seconds']} s; {result['failures']} parser(s) failed")
    return 0 if result["failures"] == 0 and result["pytest_exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
