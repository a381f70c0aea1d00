"""``edgeify compare A B``, ``edgeify gate`` and ``edgeify report``: reading the results store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from edgeify.analysis.compare import compare as run_compare
from edgeify.analysis.gate import gate as run_gate
from edgeify.analysis.gate import parse_threshold
from edgeify.analysis.report_data import gather
from edgeify.analysis.report_html import write
from edgeify.bench import bench_series, settings_for
from edgeify.errors import RegressionError, UsageError
from edgeify.results import open_store
from edgeify.store.select import Selection, make_filters, select

from .output import Format, FormatOpt, console, err_console, print_json

AlphaOpt = typer.Option(None, "--alpha", min=1e-6, max=0.5,
                        help="1 - confidence of the interval  [default: 0.05 at the run level, 0.01 with one run "
                             "per side (also the rank test's significance level)]")
RunsOpt = typer.Option(None, "--runs", min=2, help="infer at the run level over N runs per side: two bundle "
                       "directories are run now, N interleaved rounds, each run its own process (on this machine or "
                       "--device); other references take their N newest stored results")
DeviceOpt = typer.Option(None, "--device", "-d", help="with --runs and two bundle directories: run them on this "
                         "device  [default: this machine]")
ThreadsOpt = typer.Option(None, "--threads", min=1, help="with --runs on bundle directories: engine threads")
MinDurationOpt = typer.Option(None, "--min-duration", min=0, help="with --runs on bundle directories: seconds of "
                              "timed runs in each run  [default: the target's protocol]")


def _selections(a: str, b: str, runs: int | None, device: str | None, threads: int | None,
                min_duration: float | None) -> tuple[Any, Any, bool | None]:
    """Two selections: fresh interleaved runs of two bundle directories (``--runs``), else from the store
    (``--runs``: each reference's N newest results). The third value: run-level or not (None: decide by count)."""

    dirs = runs is not None and all((Path(x) / "manifest.json").is_file() for x in (a, b))
    if dirs:
        assert runs is not None
        sets = [settings_for(x, threads=threads, min_duration_s=min_duration) for x in (a, b)]
        s = bench_series([a, b], device or "local", repeat=runs, settings=sets,
                         progress=lambda m: err_console.print(f"[dim]{m}[/]"))
        return Selection(a, "bundle", s.runs[0]), Selection(b, "bundle", s.runs[1]), True
    with open_store() as store:
        sa, sb = select(store, a, runs=runs), select(store, b, runs=runs)
    return sa, sb, (True if runs is not None else None)


def compare(
    a: str = typer.Argument(..., help="A (the reference): result id, tag, bundle digest or directory (latest)"),
    b: str = typer.Argument(..., help="B (described relative to A): result id, tag, bundle digest or directory"),
    runs: int = RunsOpt,
    threshold: str = typer.Option("5%", "--threshold", help="what counts as the same: `same` when the interval "
                                  "lies within ±threshold"),
    device: str = DeviceOpt,
    threads: int = ThreadsOpt,
    min_duration: float = MinDurationOpt,
    alpha: float = AlphaOpt,
    fmt: Format = FormatOpt,
) -> None:
    """Is B faster or slower than A? Ratio with its interval and a verdict: faster, slower, same (within
    ±threshold) or inconclusive (with the runs that would settle it). Several runs per side: run-level
    hierarchical bootstrap; one run per side: sample-level bootstrap and a Mann-Whitney U test.

    Example: edgeify compare build/a build/b --runs 5 --format json
    """

    limit = parse_threshold(threshold)
    sa, sb, level = _selections(a, b, runs, device, threads, min_duration)
    c = run_compare(sa, sb, alpha=alpha, threshold=limit, run_level=level)
    if fmt == Format.json:
        print_json(c.to_dict())
        return
    print_comparison(c)


def print_comparison(c: Any) -> None:
    from rich.table import Table

    t = Table(title=f"B ({c.b.ref}: #{', #'.join(map(str, c.b.result_ids))}) relative to A ({c.a.ref}: "
                    f"#{', #'.join(map(str, c.a.result_ids))})")
    rl = c.run_level
    for col in ("", "A ms", "B ms", "B / A", *(() if rl else (f"{c.confidence:.0%} CI",))):
        t.add_column(col, justify="right")
    for p in c.percentiles:
        t.add_row(p.percentile, f"{p.a_ms:.4f}", f"{p.b_ms:.4f}", f"{p.ratio:.3f}",
                  *(() if rl else (f"{p.ci[0]:.3f} – {p.ci[1]:.3f}",)))
    console.print(t)
    if rl:
        for side, key in (("A", "run_medians_a"), ("B", "run_medians_b")):
            cv = rl[f"drift_cv_{side.lower()}"]
            console.print(f"{side} run medians (ms): " + " ".join(f"{x:.4f}" for x in rl[key])
                          + (f" · run-to-run CV {cv:.1%}" if cv is not None else ""))
    color = {"slower": "red", "faster": "green", "inconclusive": "yellow"}.get(c.verdict, "white")
    evidence = (f"Mann-Whitney p = {c.p_value:.3g} (alpha {c.alpha:g}) · {c.a.samples} vs {c.b.samples} samples"
                if c.p_value is not None else f"{c.runs_a} vs {c.runs_b} runs · {c.method}")
    console.print(f"verdict: [bold {color}]{c.verdict}[/] (±{c.threshold:.0%}) · ratio {c.ratio_p50:.3f} "
                  f"[{c.ci[0]:.3f}, {c.ci[1]:.3f}] ({c.confidence:.0%}) · {evidence}")
    for w in c.warnings:
        err_console.print(f"[yellow]warning[/]: {w}")


def gate(
    baseline: str = typer.Option(..., "--baseline", help="the baseline: a tag (baseline-main), result id or bundle"),
    candidate: str = typer.Option(..., "--candidate", help="the candidate: result id, tag or bundle"),
    max_regression: str = typer.Option("5%", "--max-regression", help="allowed p50 slowdown: 5% or 0.05"),
    runs: int = RunsOpt,
    device: str = DeviceOpt,
    threads: int = ThreadsOpt,
    min_duration: float = MinDurationOpt,
    alpha: float = AlphaOpt,
    fmt: Format = FormatOpt,
) -> None:
    """CI gate: exit 14 when the candidate is slower than the baseline by more than --max-regression AND the
    difference is significant; 0 otherwise, with the figures.

    Example: edgeify gate --baseline baseline-main --candidate 57 --max-regression 5%
    """

    threshold = parse_threshold(max_regression)
    sa, sb, level = _selections(baseline, candidate, runs, device, threads, min_duration)
    v = run_gate(sa, sb, max_regression=threshold, alpha=alpha, run_level=level)
    if fmt == Format.json:
        print_json(v.to_dict())
    else:
        print_comparison(v.comparison)
        console.print(("[bold red]REGRESSION[/]: " if v.regressed else "[bold green]pass[/]: ") + v.reason)
    if v.regressed:
        raise RegressionError(f"candidate {candidate} is slower than baseline {baseline}: {v.reason}")


def report(
    output: Path = typer.Option(Path("report.html"), "-o", "--output", help="the HTML file to write"),
    device: str = typer.Option(None, "--device", help="only this device"),
    target: str = typer.Option(None, "--target", help="only this target; a family alias means all its boards"),
    bundle: str = typer.Option(None, "--bundle", help="only this bundle: its directory or digest prefix"),
    run_id: str = typer.Option(None, "--run", help="only the results of this optimize run id"),
    since: str = typer.Option(None, "--since", help="only results stored since: 3d, 12h, 30m or an ISO date"),
    detail: int = typer.Option(12, "--detail", min=0, max=500,
                               help="draw the latency distribution, fingerprint and protocol of this many newest "
                                    "results"),
    max_rows: int = typer.Option(5000, "--max-rows", min=1, help="at most this many results in the table and "
                                                                 "trends (newest first)"),
    title: str = typer.Option("edgeify results", "--title", help="the page title"),
    fmt: Format = FormatOpt,
) -> None:
    """One self-contained HTML report (works offline): trends, optimize runs, per-class accuracy, latency
    distributions with fingerprint and protocol, a table of the results.

    Example: edgeify report --bundle build/digits-x86 --since 7d -o digits.html
    """

    if output.is_dir() or not output.name:
        raise UsageError(f"-o {output}: a directory", hint="give a file name, e.g. -o report.html")
    f = make_filters(device=device, target=target, bundle=bundle, run_id=run_id, since=since)
    with open_store() as store:
        data = gather(store, f, detail=detail, max_rows=max_rows, title=title)
    size = write(data, output)
    if fmt == Format.json:
        print_json({"report": str(output.resolve()), "bytes": size, "results": data.total, "rows": len(data.rows),
                    "detailed": len(data.details), "runs": len(data.runs), "notes": list(data.notes)})
        return
    console.print(f"wrote {output} ({size / 1e6:.2f} MB): {data.total} result(s), {len(data.details)} in detail, "
                  f"{len(data.runs)} optimize run(s)")
    for n in data.notes:
        err_console.print(f"note: {n}")


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
    app.command("gate")(gate)
    app.command("report")(report)
