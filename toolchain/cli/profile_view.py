"""Renderers for per-operator profiles (``bench --profile``) and ``edgeify inspect``: rich tables on stdout,
the placement warning on stderr. No domain logic: the records come from ``edgeify_runtime.profile`` and
``edgeify.inspect``."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from .output import console, err_console


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.4f}"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.1%}"


def print_profile(profile: dict[str, Any] | None, top: int = 10, device: str = "") -> None:
    """Top-N ops, the placement summary, where the rest of the time goes, and the fallback warning."""
    from edgeify_runtime.profile import Profile

    if not profile:
        err_console.print("[yellow]no profile in the result[/] (the device's agent may be older than --profile)")
        return
    p = Profile.from_dict(profile)
    title = f"top {min(top, len(p.ops))} of {len(p.ops)} ops · {p.engine} · {p.runs} profiled runs"
    table = Table(title=title + (f" · {device}" if device else ""), title_justify="left")
    for col, just in (("op", "left"), ("type", "left"), ("ms/inference", "right"), ("share", "right"),
                      ("placement", "left"), ("precision", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for o in p.ops[:top]:
        name = o.name if len(o.name) <= 60 else o.name[:28] + "…" + o.name[-31:]
        mark = "[red]✗ [/]" if o.fallback else ""
        table.add_row(name, o.type, _ms(o.time_ms), _pct(o.share), mark + o.placement, o.precision or "")
    console.print(table)
    pl = p.placement
    counts = ", ".join(f"{n} on {k}" for k, n in sorted(pl.counts.items(), key=lambda kv: -kv[1]))
    console.print(f"placement: intended {pl.intended}; {counts}")
    console.print(f"fallback: {pl.fallback_count} op(s), {_pct(pl.fallback_share)} of the op time"
                  + (": " + ", ".join(f"{f['name']} ({f['type']})" for f in pl.fallback_ops[:5])
                     if pl.fallback_ops else ""))
    over = p.overhead
    if p.time_ms_missing:
        console.print(f"per-op times: none — {p.time_ms_missing}")
    elif over.get("ops_sum_ms") is not None:
        ratio = over.get("ops_sum_vs_p50")
        console.print(f"per-op sum {_ms(over['ops_sum_ms'])} ms vs p50 {_ms(over.get('latency_p50_ms'))} ms"
                      + (f" ({ratio:.0%})" if ratio is not None else "")
                      + f"; profiled run {_ms(over.get('profiled_run_ms'))} ms")
    if over.get("note"):
        console.print(f"[dim]{over['note']}[/]")
    if p.warning:
        err_console.print(f"[yellow]warning:[/] {p.warning}")


def print_inspect(report: Any) -> None:
    console.print(f"[bold]{report.model}[/] → {report.target} · {report.engine} · {report.precision}")
    steps = Table(title="pipeline", title_justify="left")
    for col in ("step", "uses", "input", "where", "config"):
        steps.add_column(col)
    for s in report.pipeline:
        cfg = ", ".join(f"{k}={v}" for k, v in (s.get("config") or {}).items() if v not in (None, {}, []))
        steps.add_row(s["id"], s["uses"], s.get("input") or "(source)", s["where"], cfg[:80])
    console.print(steps)
    if report.op_histogram:
        hist = ", ".join(f"{k} ×{n}" for k, n in report.op_histogram.items())
        console.print(f"ops ({report.histogram_of}): {hist}")
    er = report.engine_report
    if er.get("skipped"):
        console.print(f"engine report: skipped — {er['skipped']}")
        return
    counts = ", ".join(f"{n} on {k}" for k, n in er.get("counts", {}).items())
    console.print(f"engine report ({er.get('source')}): {er.get('ops')} ops; intended {er.get('intended')}; {counts}")
    bad = er.get("not_accelerated") or []
    if bad:
        err_console.print(f"[yellow]not accelerated ({len(bad)}):[/] "
                          + ", ".join(f"{b['name']} ({b['type']}): {b['reason']}" for b in bad[:10]))
    else:
        console.print("not accelerated: none — every op runs where the target's engine intends")
    if er.get("unsupported_on_cpu"):
        err_console.print(f"[yellow]{report.engine} does not support on this device's CPU:[/] "
                          f"{', '.join(er['unsupported_on_cpu'])}")


__all__ = ["print_inspect", "print_profile"]
