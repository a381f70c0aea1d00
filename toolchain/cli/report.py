"""``edgeify compare A B``, ``edgeify gate`` and ``edgeify report``: reading the results store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from .output import Format, FormatOpt, console, err_console, print_json

AlphaOpt = typer.Option(0.01, "--alpha", min=1e-6, max=0.5,
                        help="significance level of the rank test; the CI is at 1 - alpha")


def compare(
    a: str = typer.Argument(..., help="A (the reference): result id, tag, bundle digest or directory (latest)"),
    b: str = typer.Argument(..., help="B (described relative to A): result id, tag, bundle digest or directory"),
    alpha: float = AlphaOpt,
    fmt: Format = FormatOpt,
) -> None:
    """Is B faster or slower than A? p50 ratio with a bootstrap CI, a Mann-Whitney U test, per percentile.

    Example: edgeify compare 41 57 --format json
    """
    from edgeify.analysis.compare import compare as run_compare
    from edgeify.results import open_store
    from edgeify.store.select import select

    with open_store() as store:
        sa, sb = select(store, a), select(store, b)
    c = run_compare(sa, sb, alpha=alpha)
    if fmt == Format.json:
        print_json(c.to_dict())
        return
    print_comparison(c)


def print_comparison(c: Any) -> None:
    from rich.table import Table

    t = Table(title=f"B ({c.b.ref}: #{', #'.join(map(str, c.b.result_ids))}) relative to A ({c.a.ref}: "
                    f"#{', #'.join(map(str, c.a.result_ids))})")
    for col in ("", "A ms", "B ms", "B / A", f"{c.confidence:.0%} CI"):
        t.add_column(col, justify="right")
    for p in c.percentiles:
        t.add_row(p.percentile, f"{p.a_ms:.4f}", f"{p.b_ms:.4f}", f"{p.ratio:.3f}", f"{p.ci[0]:.3f} – {p.ci[1]:.3f}")
    console.print(t)
    color = {"slower": "red", "faster": "green"}.get(c.verdict, "white")
    console.print(f"verdict: [bold {color}]{c.verdict}[/] · ratio_p50 {c.ratio_p50:.3f} "
                  f"[{c.ci[0]:.3f}, {c.ci[1]:.3f}] · Mann-Whitney p = {c.p_value:.3g} (alpha {c.alpha:g}) · "
                  f"{c.a.samples} vs {c.b.samples} samples")
    for w in c.warnings:
        err_console.print(f"[yellow]warning[/]: {w}")


def gate(
    baseline: str = typer.Option(..., "--baseline", help="the baseline: a tag (baseline-main), result id or bundle"),
    candidate: str = typer.Option(..., "--candidate", help="the candidate: result id, tag or bundle"),
    max_regression: str = typer.Option("5%", "--max-regression", help="allowed p50 slowdown: 5% or 0.05"),
    alpha: float = AlphaOpt,
    fmt: Format = FormatOpt,
) -> None:
    """CI gate: exit 14 when the candidate is slower than the baseline by more than --max-regression AND the
    difference is significant; 0 otherwise, with the figures.

    Example: edgeify gate --baseline baseline-main --candidate 57 --max-regression 5%
    """
    from edgeify.analysis.gate import gate as run_gate
    from edgeify.analysis.gate import parse_threshold
    from edgeify.errors import RegressionError
    from edgeify.results import open_store
    from edgeify.store.select import select

    threshold = parse_threshold(max_regression)
    with open_store() as store:
        sa, sb = select(store, baseline), select(store, candidate)
    v = run_gate(sa, sb, max_regression=threshold, alpha=alpha)
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
    from edgeify.analysis.report_data import gather
    from edgeify.analysis.report_html import write
    from edgeify.errors import UsageError
    from edgeify.results import open_store
    from edgeify.store.select import make_filters

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
