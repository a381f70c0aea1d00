"""``edgeify build-matrix``: build every model of a matrix.toml for every target and precision, on a local
process pool or a Ray cluster."""

from __future__ import annotations

import contextlib
import os
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from edgeify.errors import InterruptedBuild, MatrixCellsFailedError, UsageError
from edgeify.matrix.executors import LocalPool, RayCluster, RayOptions
from edgeify.matrix.progress import RichMatrixProgress
from edgeify.matrix.runner import run_matrix
from edgeify.matrix.spec import load_matrix

from .output import Format, FormatOpt, console, err_console, examples, print_json, stdout_to_stderr


class ExecutorKind(str, Enum):
    local = "local"
    ray = "ray"


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _parity(p: dict[str, Any] | None) -> str:
    if not p:
        return "-"
    by_cosine = str(p.get("limit") or "").startswith("cosine") or p.get("max_abs") is None
    metric = (f"cos {p['min_cosine']:.5f}" if by_cosine and p.get("min_cosine") is not None else
              f"max|Δ| {p['max_abs']:.2g}" if p.get("max_abs") is not None else "")
    return f"{'ok' if p.get('pass') else 'FAIL'} {metric}".strip()


def print_matrix_summary(result: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"build-matrix → {result.out} ({result.executor}, {result.seconds:.1f} s)")
    for col in ("cell", "status", "engine", "node", "time", "size", "parity", "error / reason"):
        t.add_column(col, overflow="fold")
    style = {"built": "green", "failed": "red", "skipped": "yellow", "cancelled": "magenta"}
    for r in result.records:
        node = r.node or {}
        where = node.get("ip") or ("" if node.get("id") in (None, "local") else str(node.get("id"))[:12])
        why = (r.error or {}).get("message") or r.reason or ""
        t.add_row(escape(r.cell), f"[{style[r.status]}]{r.status}[/]", r.engine or "-",
                  escape(f"{node.get('id', '')[:8]} {where}".strip()) if node.get("id") else "-",
                  f"{r.seconds:.1f} s" if r.status in ("built", "failed") else "-", _size(r.size_bytes),
                  _parity(r.parity), escape(why.splitlines()[0][:200]) if why else "")
    console.print(t)
    counts = ", ".join(f"{v} {k}" for k, v in result.counts().items() if v)
    steps = ", ".join(f"{k} {v['ran']} ran/{v['cached']} cached" for k, v in result.step_counts().items())
    console.print(f"{counts}; steps: {steps or '-'}; records in {result.out / '_reports'}")


def build_matrix(
    matrix: Path = typer.Argument(..., help="matrix.toml: targets, precisions (engines) and [[models]]"),
    out: Path = typer.Option(..., "--out", "-o", help="output root: bundles at OUT/<model>/<target>-<precision>"
                                                        "[-<engine>], records at OUT/_reports"),
    executor: ExecutorKind = typer.Option(ExecutorKind.local, "--executor", help="local: a process pool on this "
                                          "machine; ray: one Ray task per cell on a cluster"),
    jobs: int = typer.Option(None, "--jobs", "-j", help="local pool size [default: CPU count, at most 4]"),
    ray_address: str = typer.Option(None, "--ray-address", help="HOST:PORT of the Ray head's GCS "
                                    "[default: start a private local Ray instance]"),
    cpus_per_cell: float = typer.Option(1.0, "--cpus-per-cell", help="Ray: CPUs each cell asks for"),
    memory_per_cell: float = typer.Option(2.0, "--memory-per-cell", help="Ray: memory each cell asks for, GiB"),
    max_retries: int = typer.Option(3, "--max-retries", help="Ray: retries of a cell whose worker or node died "
                                    "(a failing build is never retried)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="do not reuse cached step results"),
    no_latency: bool = typer.Option(False, "--no-latency", help="skip each bundle's quick local latency run"),
    fmt: Format = FormatOpt,
) -> None:
    """Build a matrix of models x targets x precisions; each cell an ordinary build, published atomically."""

    if executor == ExecutorKind.local and ray_address:
        raise UsageError("--ray-address needs --executor ray", hint="add --executor ray")
    if executor == ExecutorKind.ray and jobs is not None:
        raise UsageError("--jobs sizes the local pool; Ray schedules cells by --cpus-per-cell",
                         hint="drop --jobs, or use --executor local")
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs {jobs}: must be at least 1", hint="e.g. --jobs 2")
    spec = load_matrix(matrix)
    guard = stdout_to_stderr() if fmt == Format.json else contextlib.nullcontext()
    with guard:
        if executor == ExecutorKind.ray:
            ex: Any = RayCluster(RayOptions(address=ray_address, cpus_per_cell=cpus_per_cell,
                                            memory_per_cell=int(memory_per_cell * 1024**3), max_retries=max_retries))
        else:
            ex = LocalPool(jobs or max(1, min(os.cpu_count() or 1, 4)))
        progress = RichMatrixProgress(err_console)
        try:
            result = run_matrix(spec, out, ex, use_cache=not no_cache, measure_latency=not no_latency,
                                observer=progress)
        finally:
            progress.close()
            ex.close()
    if fmt == Format.json:
        print_json(result.to_dict())
    else:
        print_matrix_summary(result)
    counts = result.counts()
    if result.interrupted:
        raise InterruptedBuild(f"build-matrix interrupted: {counts['built']} cells built and kept, "
                               f"{counts['cancelled']} cancelled")
    if counts["failed"]:
        failed = [r.cell for r in result.records if r.status == "failed"]
        raise MatrixCellsFailedError(f"{len(failed)} of {len(result.records)} cells failed: "
                                     + ", ".join(failed[:6]) + (" …" if len(failed) > 6 else ""))


def register(app: typer.Typer) -> None:
    app.command("build-matrix", epilog=examples(
        "edgeify build-matrix matrix.toml -o build/zoo",
        "edgeify build-matrix matrix.toml -o build/zoo --jobs 2 --format json",
        "edgeify build-matrix matrix.toml -o build/zoo --executor ray --ray-address 10.0.0.5:6379",
    ))(build_matrix)
