"""Terminal output: rich tables for people on stdout, progress and errors on stderr, JSON for machines."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

# Not a terminal (pipes, CI logs): a wide fixed width instead of rich's 80 columns, so tables stay readable.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _f(v: Any, spec: str = ".3f") -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def print_build_summary(s: dict[str, Any]) -> None:
    console.print(f"[bold green]built[/] {s['bundle']}  ({s['target']}, {s['engine']}, {s['precision']}, "
                  f"{s['size_bytes'] / 1e6:.3f} MB, {s['seconds']:.1f} s)")
    if s.get("parity"):
        t = Table(title="parity vs source model")
        for col in ("output", "inputs", "max abs err", "cosine", "top-1 agree", "limit", "gated", "pass"):
            t.add_column(col)
        for r in s["parity"]:
            t.add_row(r["output"], r["inputs"], _f(r.get("max_abs"), ".3g"), _f(r.get("cosine"), ".5f"),
                      _f(r.get("top1_agreement"), ".3f"), r.get("limit", ""), str(r.get("gated")),
                      "[green]yes[/]" if r.get("pass") else "[yellow]no[/]")
        console.print(t)
    acc = s.get("accuracy")
    if acc:
        w = acc["worst_class"]
        console.print(f"accuracy: source {acc['source_accuracy']:.2%} → built {acc['built_accuracy']:.2%} "
                      f"(drop {acc['drop_points']:.2f} pt; worst class {w['class']}: {w['delta_points']:+.2f} pt)")
    lat = (s.get("latency") or {}).get("latency_ms")
    if lat:
        console.print(f"local latency (quick run): p50 {lat['p50']:.3f} ms, p95 {lat['p95']:.3f} ms")


def print_bench(r: dict[str, Any]) -> None:
    lat = r["latency_ms"]
    eng = r.get("engine") or {}
    proto = r.get("protocol") or {}
    t = Table(title=f"{r.get('device')} · {r.get('target')} · {eng.get('name')} {eng.get('version')} · "
                    f"{r.get('precision')} · {proto.get('threads')} threads")
    for col in ("p50", "p90", "p95", "p99", "mean", "std", "min", "max", "cv"):
        t.add_column(col + (" ms" if col != "cv" else ""), justify="right")
    t.add_row(*[_f(lat.get(k), ".4f" if k == "cv" else ".3f") for k in
                ("p50", "p90", "p95", "p99", "mean", "std", "min", "max", "cv")])
    console.print(t)
    console.print(f"throughput {_f(r.get('throughput_ips'), '.1f')}/s · load {_f(r.get('load_ms'), '.1f')} ms · "
                  f"first inference {_f(r.get('first_inference_ms'), '.2f')} ms · peak RSS "
                  f"{_f(r.get('peak_rss_mb'), '.1f')} MB · {proto.get('runs_done')} runs · "
                  f"bundle {str(r.get('bundle_digest'))[:12]}"
                  + (f" · stored as #{r['result_id']}" if r.get("result_id") else ""))


def print_results(rows: list[dict[str, Any]], store: Path) -> None:
    if not rows:
        console.print(f"no results yet in {store}; run `edgeify bench BUNDLE`")
        return
    t = Table(title=f"results ({store})")
    for col in ("id", "when", "device", "target", "engine", "prec", "threads", "p50 ms", "p95 ms", "p99 ms",
                "ips", "bundle"):
        t.add_column(col)
    for r in rows:
        t.add_row(str(r["id"]), r["created_at"][:19], r["device"], str(r["target"]),
                  f"{r['engine']} {r['engine_version'] or ''}", str(r["precision"]), str(r["threads"]),
                  _f(r["p50_ms"]), _f(r["p95_ms"]), _f(r["p99_ms"]), _f(r["throughput_ips"], ".1f"),
                  r["bundle_digest"][:12])
    console.print(t)
