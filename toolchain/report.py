"""The human-readable build report (``report.md`` in every bundle)."""

from __future__ import annotations

from typing import Any

from .noise import human_size


def _fmt(v: Any, spec: str = ".4g") -> str:
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def render_markdown(m: dict[str, Any], latency: dict[str, Any] | None) -> str:
    size = sum(f["size"] for f in m["files"].values())
    q = m.get("quantization") or {}
    lines = [
        f"# edgeify bundle: {m['source']['file']} for {m['target']['name']} ({m['precision']})", "",
        f"- engine: {m['engine']['name']} (min version {m['engine'].get('min_version')}), artifact "
        f"`{m['engine']['artifact']}`",
        f"- size: {human_size(size)} in {len(m['files'])} file(s)",
        f"- quantization: {', '.join(f'{k}={v}' for k, v in q.items())}",
        f"- source: {m['source']['kind']} sha256 {m['source']['sha256'][:16]}…",
        f"- bundle digest: {m['bundle_digest'][:16]}…",
        f"- target status: {m['target']['status']}", "",
        "## Signature", "", "| io | name | shape | dtype | layout |", "|---|---|---|---|---|",
    ]
    for io in ("inputs", "outputs"):
        for t in m[io]:
            lines.append(f"| {io[:-1]} | {t['name']} | {t['shape']} | {t['dtype']} | {t.get('layout') or ''} |")
    for f in m.get("fixed_dims") or []:
        lines.append(f"\nfixed at build time: input `{f['input']}` axis {f['axis']} ({f['dim']}) = {f['value']} "
                     f"(by {f['by']}); the bundle only accepts that size there")
    v = m.get("validation") or {}
    if v:
        tol = v.get("tolerance", {})
        lines += ["", f"## Parity (tolerance: {tol})", "",
                  "| output | inputs | max abs err | cosine | per-sample cosine (low pct / min) | top-1 agreement "
                  "| limit | gated | pass |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in v.get("outputs", []):
            per = (f"p{r['sample_cosine_p']:g} {r['sample_cosine']:.4f} / {r['sample_cosine_min']:.4f}"
                   if "sample_cosine" in r else "-")
            lines.append(f"| {r['output']} | {r['inputs']} | {_fmt(r.get('max_abs'))} | {_fmt(r.get('cosine'), '.6f')} "
                         f"| {per} | {_fmt(r.get('top1_agreement', '-'))} | {r.get('limit', '')} | {r.get('gated')} "
                         f"| {r.get('pass')} |")
        nm = v.get("near_miss")
        if nm:
            lines += ["", f"Parity missed its limit by {nm['ratio']:.2f}x; accepted because accuracy on the labelled "
                          f"data dropped at most {nm['max_accuracy_drop']} points (see Accuracy)."]
        acc = v.get("accuracy")
        if acc:
            w = acc["worst_class"]
            lines += ["", "## Accuracy", "",
                      f"- source {acc['source_accuracy']:.2%}, built {acc['built_accuracy']:.2%}: drop "
                      f"{acc['drop_points']:.2f} points on {acc['samples']} samples",
                      f"- worst class {w['class']}: {w['source']:.2%} -> {w['built']:.2%} "
                      f"({w['delta_points']:+.2f} points)",
                      "", "| class | n | source | built | Δ points |", "|---|---|---|---|---|"]
            for c in acc["per_class"]:
                lines.append(f"| {c['class']} | {c['count']} | {c['source']:.2%} | {c['built']:.2%} | "
                             f"{c['delta_points']:+.2f} |")
    if latency:
        lines += ["", "## Local latency (quick run; use `edgeify bench` for the full protocol)", ""]
        if "error" in latency:
            lines.append(f"- not measured: {latency['error']}")
        else:
            lat = latency["latency_ms"]
            lines.append(f"- p50 {lat['p50']:.3f} ms, p95 {lat['p95']:.3f} ms, throughput "
                         f"{latency['throughput_ips']:.1f}/s, load {latency['load_ms']:.1f} ms, "
                         f"threads {latency['protocol'].get('threads')}")
    lines += ["", "## Steps", "", "| step | uses | seconds | cached |", "|---|---|---|---|"]
    for s in m.get("steps", []):
        lines.append(f"| {s['id']} | {s['uses']} | {s['seconds']} | {s['cached']} |")
    return "\n".join(lines) + "\n"
