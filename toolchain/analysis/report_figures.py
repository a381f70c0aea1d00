"""The report's plotly figures, each returned as an HTML ``<div>`` (plotly.js itself is inlined once by the page).

Distributions are drawn from binned counts (``numpy.histogram``, 60 bins) rather than raw samples, so a result of
100,000 samples costs the page a few KB; trends switch to WebGL markers above 2,000 points.
"""

from __future__ import annotations

from typing import Any

from .report_data import ClassDeltas, Run, trend_groups

_CONFIG = {"displaylogo": False, "responsive": True}
_LAYOUT = {"margin": {"l": 55, "r": 15, "t": 40, "b": 45}, "template": "plotly_white", "height": 320}
_MARKS = (("p50", "#2a9d8f"), ("p95", "#e9c46a"), ("p99", "#e76f51"))
_counter = {"n": 0}


def _div(fig: Any, prefix: str) -> str:
    _counter["n"] += 1
    return fig.to_html(full_html=False, include_plotlyjs=False, config=_CONFIG,
                       div_id=f"{prefix}-{_counter['n']}")


def distribution(result: Any) -> str:
    """Histogram of one result's samples with p50/p95/p99 marked."""
    import numpy as np
    import plotly.graph_objects as go

    samples = np.asarray(result.samples_ms, dtype=float)
    fig = go.Figure()
    if samples.size:
        p50, p99, p999 = (float(x) for x in np.percentile(samples, [50, 99, 99.9]))
        # the body of the distribution: a long tail (a disturbed run) must not squash the bars into one column
        hi = max(min(p999, p99 + 2 * (p99 - p50)), p99 * 1.02, float(samples.min()) + 1e-6)
        counts, edges = np.histogram(samples[samples <= hi], bins=60)
        centers = (edges[:-1] + edges[1:]) / 2
        fig.add_trace(go.Bar(x=centers.round(5).tolist(), y=counts.tolist(), width=float(edges[1] - edges[0]),
                             marker_color="#457b9d", name="samples",
                             hovertemplate="%{x:.4f} ms: %{y} samples<extra></extra>"))
        for k, (key, color) in enumerate(_MARKS):  # labels staggered down so close lines do not overlap
            value = result.latency_ms.get(key)
            if value is None:
                value = float(np.percentile(samples, float(key[1:])))
            fig.add_vline(x=value, line_color=color, line_dash="dash", annotation_text=f"{key} {value:.3f}",
                          annotation_position="top right", annotation_yshift=-16 * k,
                          annotation_font_size=10)
        over = int((samples > hi).sum())
        title = f"#{result.result_id}: {samples.size} samples" + (
            f" ({over} > {hi:.3f} ms not drawn)" if over else "")
    else:
        title = f"#{result.result_id}: no raw samples stored"
    fig.update_layout(**_LAYOUT, title=title, xaxis_title="latency (ms)", yaxis_title="samples", showlegend=False,
                      bargap=0)
    if samples.size:  # the drawn range only: a slow outlier must not squash the bars into one column
        lo = float(samples.min())
        pad = (hi - lo) * 0.03 or max(hi * 0.01, 1e-6)
        fig.update_xaxes(range=[lo - pad, hi + pad])
    return _div(fig, "dist")


def trends(rows: tuple[dict[str, Any], ...]) -> tuple[str, int]:
    """p50 (solid) and p95 (dotted) over time per bundle x device; also how many groups were left out."""
    import plotly.graph_objects as go

    groups, left_out = trend_groups(rows)
    points = sum(len(g) for _, g in groups)
    trace = go.Scattergl if points > 2000 else go.Scatter
    fig = go.Figure()
    for name, group in groups:
        x = [g["created_at"] for g in group]
        ids = [g["id"] for g in group]
        fig.add_trace(trace(x=x, y=[g["p50_ms"] for g in group], mode="lines+markers", name=f"p50 · {name}",
                            customdata=ids, legendgroup=name,
                            hovertemplate="#%{customdata} p50 %{y:.3f} ms<extra></extra>"))
        fig.add_trace(trace(x=x, y=[g["p95_ms"] for g in group], mode="lines", name=f"p95 · {name}",
                            line={"dash": "dot"}, legendgroup=name, customdata=ids,
                            hovertemplate="#%{customdata} p95 %{y:.3f} ms<extra></extra>"))
    fig.update_layout(**{**_LAYOUT, "height": 420}, title="p50 / p95 over time per bundle × device",
                      xaxis_title="stored at (UTC)", yaxis_title="latency (ms)", legend={"font": {"size": 10}})
    return _div(fig, "trend"), left_out


def run_front(run: Run) -> str:
    """An optimize run: accuracy drop vs p50 latency per candidate (hollow: screening run only), the Pareto
    front over the two, the chosen one starred; hover shows engine, precision, recipe, settings, compression."""
    import plotly.graph_objects as go

    fig = go.Figure()
    with_acc = [c for c in run.candidates if c.accuracy_drop is not None and c.p50_ms is not None]
    hover = "%{text}<br>p50 %{x:.3f} ms, drop %{y:.2f} pt<br>%{customdata}<extra></extra>"
    if with_acc:
        for name, group, symbol in (("candidates (full protocol)", [c for c in with_acc if c.protocol != "screen"],
                                     "circle"),
                                    ("candidates (screening only)", [c for c in with_acc if c.protocol == "screen"],
                                     "circle-open")):
            if group:
                fig.add_trace(go.Scatter(x=[c.p50_ms for c in group], y=[c.accuracy_drop for c in group],
                                         mode="markers", name=name, text=[c.label for c in group],
                                         customdata=[c.details for c in group], hovertemplate=hover,
                                         marker={"size": 9, "color": "#8d99ae", "symbol": symbol,
                                                 "line": {"width": 1.5, "color": "#6c757d"}}))
        front = sorted((c for c in with_acc if c.result_id in run.pareto), key=lambda c: c.p50_ms or 0)
        fig.add_trace(go.Scatter(x=[c.p50_ms for c in front], y=[c.accuracy_drop for c in front],
                                 mode="lines+markers", name="Pareto front", line={"shape": "hv", "color": "#264653"},
                                 marker={"size": 10, "color": "#264653"}, text=[c.label for c in front],
                                 customdata=[c.details for c in front], hovertemplate=hover))
        ytitle = "accuracy drop (points)"
    else:
        fig.add_trace(go.Bar(x=[c.label for c in run.candidates], y=[c.p50_ms for c in run.candidates],
                             name="p50", marker_color="#8d99ae"))
        ytitle = "p50 (ms) — these results carry no accuracy figures"
    chosen = [c for c in run.candidates if c.chosen]
    if chosen:
        c = chosen[-1]
        fig.add_trace(go.Scatter(x=[c.p50_ms if with_acc else c.label], y=[c.accuracy_drop if with_acc else c.p50_ms],
                                 mode="markers", name=f"chosen: {c.label}", text=[c.label], customdata=[c.details],
                                 hovertemplate=hover if with_acc else None,
                                 marker={"symbol": "star", "size": 18, "color": "#e63946"}))
    fig.update_layout(**{**_LAYOUT, "height": 380}, title=f"optimize run {run.run_id}: {len(run.candidates)} "
                      "measured candidates", xaxis_title="p50 latency (ms)" if with_acc else "candidate",
                      yaxis_title=ytitle, legend={"font": {"size": 10}})
    return _div(fig, "run")


def class_deltas(d: ClassDeltas) -> str:
    import plotly.graph_objects as go

    rows = d.accuracy.per_class
    names = [d.labels[r.label] if d.labels and r.label < len(d.labels) else str(r.label) for r in rows]
    deltas = [r.delta_points for r in rows]
    fig = go.Figure(go.Bar(x=names, y=deltas, marker_color=["#e76f51" if v < 0 else "#2a9d8f" for v in deltas],
                           customdata=[[r.count, r.source, r.built] for r in rows],
                           hovertemplate="class %{x}: %{y:+.2f} pt (n=%{customdata[0]}, source %{customdata[1]:.3f},"
                                         " built %{customdata[2]:.3f})<extra></extra>"))
    fig.update_layout(**_LAYOUT, title=f"per-class accuracy delta: {d.bundle} (drop "
                                       f"{d.accuracy.drop_points:.2f} pt overall)",
                      xaxis_title="class", yaxis_title="built − source (points)")
    return _div(fig, "cls")


def profile_ops(result: Any, top: int = 10) -> str | None:
    import plotly.graph_objects as go

    ops = [o for o in (result.profile or {}).get("ops") or [] if isinstance(o, dict)]
    if not ops:
        return None
    ops = sorted(ops, key=lambda o: -(o.get("time_ms") or 0))[:top][::-1]
    fig = go.Figure(go.Bar(x=[o.get("time_ms") or 0 for o in ops],  # the source module first, when recorded
                           y=[(f"{o['module'] or '(root)'} · " if o.get("module") is not None else "")
                              + f"{o.get('name')} ({o.get('type')})" for o in ops], orientation="h",
                           marker_color=["#e63946" if o.get("fallback") else "#457b9d" for o in ops],
                           text=[f"{(o.get('share') or 0) * 100:.1f}%" for o in ops], textposition="auto"))
    fig.update_layout(**{**_LAYOUT, "height": 60 + 26 * len(ops), "margin": {"l": 220, "r": 15, "t": 40, "b": 40}},
                      title=f"#{result.result_id}: top {len(ops)} ops by time (red: fallback)",
                      xaxis_title="ms per inference")
    return _div(fig, "prof")


def profile_modules(result: Any, top: int = 10) -> str | None:
    """Op time summed per source module (PyTorch sources: ``profile.modules``); None when the profile has none."""
    import plotly.graph_objects as go

    mods = [m for m in (result.profile or {}).get("modules") or [] if isinstance(m, dict)]
    if not mods:
        return None
    mods = sorted(mods, key=lambda m: -(m.get("time_ms") or 0))[:top][::-1]
    fig = go.Figure(go.Bar(x=[m.get("time_ms") or 0 for m in mods], orientation="h", marker_color="#2a9d8f",
                           y=[("(not mapped)" if m.get("module") is None else (m["module"] or "(root)"))
                              + (f" ({m['type']})" if m.get("type") else "") for m in mods],
                           text=[f"{(m.get('share') or 0) * 100:.1f}% · {m.get('ops')} ops" for m in mods],
                           textposition="auto"))
    fig.update_layout(**{**_LAYOUT, "height": 60 + 26 * len(mods), "margin": {"l": 220, "r": 15, "t": 40, "b": 40}},
                      title=f"#{result.result_id}: time by source module", xaxis_title="ms per inference")
    return _div(fig, "prof")


__all__ = ["class_deltas", "distribution", "profile_modules", "profile_ops", "run_front", "trends"]
