"""``edgeify report``: one self-contained HTML file (plotly.js and styles inlined, no network) from the store.

Sections: summary and notes (what was aggregated), trends (p50/p95 over time per bundle x device), optimize runs
(accuracy drop vs latency, Pareto front, chosen), per-class accuracy deltas, the newest results in detail
(distribution beside fingerprint and protocol, profile top ops), and a paginated table of every result shown.
The file is written beside ``-o`` and renamed into place, so an existing report is never left half written.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from . import report_figures as F
from .report_data import ReportData

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1400px;padding:0 18px;
color:#1d3557}
h1{font-size:1.5em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}h3{font-size:1em;margin:.6em 0}
.note{background:#f1faee;border-left:4px solid #a8dadc;padding:6px 10px;margin:4px 0;font-size:.9em}
.result{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:14px;border-top:1px solid #eee;
padding-top:8px}
.facts{font-size:.8em;overflow:auto;max-height:330px}
table{border-collapse:collapse;font-size:.82em}td,th{border:1px solid #ddd;padding:3px 6px;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.pager button{margin:0 3px}
"""

_PAGER_JS = """
(function(){
  var size=50, table=document.getElementById('results-table');
  if(!table){return;}
  var rows=Array.prototype.slice.call(table.tBodies[0].rows), page=0, pages=Math.max(1,Math.ceil(rows.length/size));
  var info=document.getElementById('pager-info');
  function show(){
    rows.forEach(function(r,i){r.style.display=(i>=page*size&&i<(page+1)*size)?'':'none';});
    info.textContent='page '+(page+1)+' of '+pages+' ('+rows.length+' results)';
  }
  document.getElementById('pager-prev').onclick=function(){if(page>0){page--;show();}};
  document.getElementById('pager-next').onclick=function(){if(page<pages-1){page++;show();}};
  show();
})();
"""


def _e(v: Any) -> str:
    return html.escape("-" if v is None else str(v))


def _num(v: Any, spec: str = ".3f") -> str:
    return f'<td class="num">{format(v, spec) if isinstance(v, (int, float)) else "-"}</td>'


def _kv_table(d: dict[str, Any]) -> str:
    rows = []
    for k, v in d.items():
        if v in (None, "", [], {}):
            continue
        text = json.dumps(v, default=str) if isinstance(v, (dict, list, tuple)) else str(v)
        if len(text) > 300:
            text = text[:300] + " …"
        rows.append(f"<tr><th>{_e(k)}</th><td>{_e(text)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _fingerprint_view(fp: dict[str, Any]) -> dict[str, Any]:
    cpu = fp.get("cpu") if isinstance(fp.get("cpu"), dict) else {}
    out = {"arch": fp.get("arch"), "cpu": cpu.get("model"), "isa": cpu.get("isa"),
           "cores": f"{cpu.get('physical_cores')} physical / {cpu.get('usable_cores')} usable" if cpu else None,
           "os": (fp.get("os") or {}).get("distro") if isinstance(fp.get("os"), dict) else fp.get("os"),
           "python": (fp.get("python") or {}).get("version") if isinstance(fp.get("python"), dict) else None,
           "governor": fp.get("governor"), "memory MB": fp.get("memory_total_mb"), "engines": fp.get("engines")}
    known = {"arch", "cpu", "os", "python", "governor", "memory_total_mb", "engines", "cpu_freq_mhz",
             "temperatures_c", "fingerprint_version"}
    out.update({k: v for k, v in fp.items() if k not in known})
    return out


def _state_view(state: dict[str, Any]) -> dict[str, Any]:
    """The device state as rows: clocks, governor, throttling, temperature, load, steal, pressure, energy."""
    keys = ("cpu_freq_mhz", "governor", "throttling", "temperature_c", "load_avg", "cpu", "pressure", "energy")
    out: dict[str, Any] = {k: state.get(k) if state.get(k) is not None else "not readable here" for k in keys}
    if state.get("disturbed"):
        out["disturbed"] = "; ".join(state.get("disturbed_because") or ())
    out["rule"] = state.get("rule")
    return out


def _result_block(r: Any) -> str:
    lat = r.latency_ms
    head = (f"<h3>#{r.result_id} · {_e(r.device)} · {_e(r.target)} · {_e(r.engine.name)} {_e(r.engine.version)} · "
            f"{_e(r.precision)} · bundle {_e(r.identity[:12])} · {_e(r.extra.get('stored_at'))}"
            + (" · <b style='color:#b5651d'>disturbed</b>" if r.disturbed else "") + "</h3>")
    stats = {"p50 / p95 / p99 ms": " / ".join(f"{v:.3f}" if v is not None else "-" for v in (lat.p50, lat.p95,
                                                                                              lat.p99)),
             "mean ± std ms": f"{lat.mean:.3f} ± {lat.std:.3f}" if lat.mean is not None and lat.std is not None
             else None, "throughput /s": r.throughput_ips, "bundle": r.bundle, "run": r.run_id,
             "budget": None if r.budget is None else
             f"{r.budget.percentile} ≤ {r.budget.max_ms} ms: {'met' if r.budget.met else 'over'}",
             "fallback": None if not (r.fallback and r.fallback.used) else r.fallback.reason,
             "warnings": list(r.warnings) or None, "series": None if not r.series else
             f"{r.series.get('id')} run {int(r.series.get('index', 0)) + 1}/{r.series.get('count')}"}
    proto = {k: v for k, v in r.to_dict()["protocol"].items()}
    facts = (f"<h3>result</h3>{_kv_table(stats)}<h3>protocol</h3>{_kv_table(proto)}"
             f"<h3>fingerprint</h3>{_kv_table(_fingerprint_view(r.fingerprint))}"
             + (f"<h3>device state during the run</h3>{_kv_table(_state_view(r.device_state))}" if r.device_state
                else ""))
    prof = (F.profile_ops(r) or "") + (F.profile_modules(r) or "")  # per op, then per source module
    return (f'<div class="result" id="result-{r.result_id}"><div>{head}{F.distribution(r)}{prof or ""}</div>'
            f'<div class="facts">{facts}</div></div>')


def _rows_table(cols: tuple[str, ...], rows: list[list[Any]]) -> str:
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table><thead><tr>{"".join(f"<th>{c}</th>" for c in cols)}</tr></thead><tbody>{body}</tbody></table>'


def _fmt(v: Any, spec: str) -> Any:
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _decision(run: Any) -> str:
    """Under an optimize run's plot: why the chosen one won, the ladder's rungs, the candidates that failed parity
    or the budgets (with their reasons), as the run recorded them."""
    d = run.decision
    if not d:
        return ""
    budgets = d.get("budgets") or {}
    lat = budgets.get("max_latency_ms")
    drop = budgets.get("max_accuracy_drop")
    head = (f"{d.get('objective')} objective on {d.get('target')} ({d.get('device')}); accuracy measure "
            f"{d.get('accuracy_measure')}; budgets: " + ", ".join(
                ([f"accuracy drop ≤ {drop} pt"] if drop is not None else [])
                + ([f"{budgets.get('percentile', 'p50')} ≤ {lat} ms"] if lat is not None else [])) or "none")
    parts = [f'<div class="note">{_e(head)}</div>']
    if d.get("chosen"):
        parts.append(f"<p><b>chosen</b>: {_e(d['chosen'])}<br><b>why</b>: {_e(d.get('why'))}</p>")
    else:
        parts.append(f"<p><b>nothing chosen</b>: no candidate met the {_e(d.get('failure'))} budget</p>")
    if d.get("stopped"):
        parts.append(f'<div class="note">stopped early: {_e(d["stopped"])}</div>')
    ladder = d.get("ladder") or []
    if ladder:
        parts.append("<h3>quantization ladder</h3>" + _rows_table(
            ("rung", "engine", "precision", "recipe", "drop pt", "parity", "cosine", "p50 ms", "int8 ops",
             "accepted", "reason"),
            [[r.get("rung"), r.get("engine"), r.get("precision"), (r.get("recipe") or {}).get("name"),
              _fmt(r.get("accuracy_drop"), ".2f"), "passed" if r.get("parity_passed") else "failed",
              _fmt(r.get("cosine"), ".5f"), _fmt(r.get("latency_p50_ms"), ".3f"),
              f"{r.get('quantized_ops')}/{r.get('total_ops')}" if r.get("total_ops") else None,
              "yes" if r.get("accepted") else ("skipped" if r.get("skipped") else "no"), r.get("reason")]
             for r in ladder]))
    failed = d.get("failed") or []
    if failed:
        parts.append(f"<h3>candidates that failed parity or the budgets ({len(failed)})</h3>" + _rows_table(
            ("candidate", "status", "drop pt", "p50 ms", "reason"),
            [[f.get("label"), f.get("status"), _fmt(f.get("accuracy_drop"), ".2f"), _fmt(f.get("p50_ms"), ".3f"),
              f.get("reason") or "over a budget"] for f in failed]))
    return "".join(parts)


def _table(rows: tuple[dict[str, Any], ...]) -> str:
    cols = ("id", "stored at", "device", "target", "model", "engine", "precision", "threads", "p50 ms", "p95 ms",
            "p99 ms", "bundle", "run")
    body = []
    for r in rows:
        body.append("<tr>" + f"<td>{r['id']}</td><td>{_e(str(r['created_at'])[:19])}</td><td>{_e(r['device'])}</td>"
                    f"<td>{_e(r['target'])}</td><td>{_e(r['model'])}</td><td>{_e(r['engine'])}</td>"
                    f"<td>{_e(r['precision'])}</td><td>{_e(r['threads'])}</td>" + _num(r["p50_ms"]) +
                    _num(r["p95_ms"]) + _num(r["p99_ms"]) +
                    f"<td>{_e((r.get('bundle_id') or r['bundle_digest'])[:12])}</td>"
                    f"<td>{_e(r['run_id'])}</td></tr>")
    return ('<div class="pager"><button id="pager-prev">‹ newer</button><span id="pager-info"></span>'
            '<button id="pager-next">older ›</button></div>'
            f'<table id="results-table"><thead><tr>{"".join(f"<th>{c}</th>" for c in cols)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def render(data: ReportData) -> str:
    from plotly.offline import get_plotlyjs

    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    notes = "".join(f'<div class="note">{_e(n)}</div>' for n in data.notes)
    parts = [f"<h1>{_e(data.title)}</h1>",
             f"<p>{data.total} result(s) in {_e(data.store)} · filters: {_e(data.filters)} · made {now}</p>", notes]
    if not data.rows:
        parts.append('<div class="note">no results match: run `edgeify bench BUNDLE`, or loosen the filters</div>')
    else:
        trend, left_out = F.trends(data.rows)
        parts += ["<h2>Trends</h2>", trend]
        if left_out:
            parts.append(f'<div class="note">{left_out} smaller bundle × device group(s) are not drawn</div>')
        if data.runs:
            parts.append("<h2>Optimize runs</h2>")
            for run in data.runs:
                parts += [F.run_front(run), _decision(run)]
        if data.class_deltas:
            parts.append("<h2>Per-class accuracy (built vs source)</h2>")
            parts += [F.class_deltas(d) for d in data.class_deltas]
        parts.append(f"<h2>Newest results in detail ({len(data.details)})</h2>")
        parts += [_result_block(r) for r in data.details]
        parts += [f"<h2>All results shown ({len(data.rows)})</h2>", _table(data.rows)]
    body = "\n".join(parts)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(data.title)}</title>'
            f'<link rel="icon" href="data:,"><style>{_CSS}</style>'
            f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
            f'<body>{body}<script>{_PAGER_JS}</script></body></html>')


def write(data: ReportData, out: Path) -> int:
    """Write the page atomically; its size in bytes."""
    text = render(data)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is an ordinary file
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out.stat().st_size


__all__ = ["render", "write"]
