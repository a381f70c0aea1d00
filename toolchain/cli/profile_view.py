"""Renderers for per-operator profiles (``bench --profile``) and ``edgeify inspect``: rich tables on stdout,
the placement warning on stderr. No domain logic: the records come from ``edgeify_runtime.profile`` and
``edgeify.inspect``."""

from __future__ import annotations

from typing import Any

from edgeify_runtime.profile import Profile
from rich.table import Table

from .output import console, err_console


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.4f}"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.1%}"


def print_profile(profile: dict[str, Any] | None, top: int = 10, device: str = "") -> None:
    """Top-N ops, the placement summary, where the rest of the time goes, and the fallback warning."""

    if not profile:
        err_console.print("[yellow]no profile in the result[/] (the device's agent may be older than --profile)")
        return
    p = Profile.from_dict(profile)
    mapped = any(o.module is not None for o in p.ops)
    title = f"top {min(top, len(p.ops))} of {len(p.ops)} ops · {p.engine} · {p.runs} profiled runs"
    table = Table(title=title + (f" · {device}" if device else ""), title_justify="left")
    cols = (("op", "left"), ("source module", "left"), ("type", "left"), ("ms/inference", "right"),
            ("share", "right"), ("placement", "left"), ("precision", "left"))
    for col, just in cols if mapped else cols[:1] + cols[2:]:
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    width = 36 if mapped else 60
    for o in p.ops[:top]:
        mark = "[red]✗ [/]" if o.fallback else ""
        row = [_cut(o.name, width), o.type, _ms(o.time_ms), _pct(o.share), mark + o.placement, o.precision or ""]
        table.add_row(*([*row[:1], _module(o.module, o.module_type), *row[1:]] if mapped else row))
    console.print(table)
    if mapped:
        _print_modules(p, top)
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


def _cut(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n // 2 - 1] + "…" + s[-(n - n // 2):]


def _module(path: str | None, cls: str | None) -> str:
    if path is None:
        return "—"
    return _cut(path or "(root)", 28) + (f" [dim]{cls}[/]" if cls else "")


def _print_modules(p: Any, top: int) -> None:
    """Op time summed per source module (the user's own names)."""
    rows = p.by_module()
    table = Table(title=f"time by source module (top {min(top, len(rows))} of {len(rows)})", title_justify="left")
    for col, just in (("source module", "left"), ("class", "left"), ("ops", "right"), ("ms/inference", "right"),
                      ("share", "right"), ("code", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for g in rows[:top]:
        name = "(not mapped)" if g["module"] is None else _cut(g["module"] or "(root)", 40)
        table.add_row(name, g.get("type") or "", str(g["ops"]), _ms(g["time_ms"]), _pct(g["share"]), g.get("at") or "")
    console.print(table)


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
                          + ", ".join(f"{b['name']} ({b['type']}"
                                      + (f", from {b['module'] or '(root)'}" if b.get("module") is not None else "")
                                      + f"): {b['reason']}" for b in bad[:10]))
    else:
        console.print("not accelerated: none — every op runs where the target's engine intends")
    mods = er.get("source_modules") or []
    if mods:
        table = Table(title=f"engine ops by source module ({len(mods)} modules)", title_justify="left")
        for col in ("source module", "class", "engine ops"):
            table.add_column(col)
        for g in mods[:20]:
            name = "(not mapped)" if g["module"] is None else _cut(g["module"] or "(root)", 40)
            ops = ", ".join(g["ops"][:4]) + (f" +{len(g['ops']) - 4}" if len(g["ops"]) > 4 else "")
            table.add_row(name, g.get("type") or "", ops)
        console.print(table)
    if er.get("unsupported_on_cpu"):
        err_console.print(f"[yellow]{report.engine} does not support on this device's CPU:[/] "
                          f"{', '.join(er['unsupported_on_cpu'])}")


__all__ = ["print_inspect", "print_profile"]
