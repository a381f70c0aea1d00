"""The human-readable build report (``report.md`` in every bundle)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .noise import human_size
from .steps.records import quantization_of, validation_of

if TYPE_CHECKING:
    from edgeify_runtime.manifest import Manifest


def _fmt(v: Any, spec: str = ".4g") -> str:
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def render_markdown(m: Manifest, latency: dict[str, Any] | None) -> str:
    raw, eng = m.raw, m.engine
    size = sum(f["size"] for f in m.files.values())
    quant = quantization_of(m)
    q = quant.to_dict()
    q.pop("ladder", None)  # its own section below
    lines = [
        f"# edgeify bundle: {m.source['file']} for {raw['target']['name']} ({m.precision})", "",
        f"- engine: {eng.name} (min version {eng.min_version}), artifact `{eng.artifact}`",
        f"- size: {human_size(size)} in {len(m.files)} file(s)",
        f"- quantization: {', '.join(f'{k}={v}' for k, v in q.items())}",
        f"- source: {m.source['kind']} sha256 {m.source['sha256'][:16]}…",
        f"- bundle digest: {m.bundle_digest[:16]}…",
        f"- target status: {raw['target']['status']}", "",
        "## Signature", "", "| io | name | shape | dtype | layout |", "|---|---|---|---|---|",
    ]
    for io, specs in (("input", m.inputs), ("output", m.outputs)):
        for t in specs:
            lines.append(f"| {io} | {t.name} | {list(t.shape)} | {t.dtype} | {t.layout or ''} |")
    for f in raw.get("fixed_dims") or []:
        lines.append(f"\nfixed at build time: input `{f['input']}` axis {f['axis']} ({f['dim']}) = {f['value']} "
                     f"(by {f['by']}); the bundle only accepts that size there")
    if quant.ladder:  # None: no ladder; (): int8 held, no rung needed
        lines += ["", "## Quantization ladder", "", "| rung | precision | accuracy drop | parity | accepted | why |",
                  "|---|---|---|---|---|---|"]
        for r in quant.ladder:
            lines.append(f"| {r.get('rung')} | {r.get('precision')} | {_fmt(r.get('accuracy_drop'))} | "
                         f"{r.get('parity_passed')} | {r.get('accepted')} | {r.get('reason') or ''} |")
    v = validation_of(m)
    if v is not None:
        lines += ["", f"## Parity (tolerance: {v.tolerance.model_dump()})", "",
                  "| output | inputs | max abs err | cosine | per-sample cosine (low pct / min) | top-1 agreement "
                  "| limit | gated | pass |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in v.outputs:
            per = (f"p{r.sample_cosine_p:g} {r.sample_cosine:.4f} / {r.sample_cosine_min:.4f}"
                   if r.sample_cosine is not None else "-")
            top1 = "-" if r.top1_agreement is None else r.top1_agreement
            lines.append(f"| {r.output} | {r.inputs} | {_fmt(r.max_abs)} | {_fmt(r.cosine, '.6f')} "
                         f"| {per} | {_fmt(top1)} | {r.limit or ''} | {r.gated} | {r.passed} |")
        nm = v.near_miss
        if nm:
            lines += ["", f"Parity missed its limit by {nm.ratio:.2f}x; accepted because accuracy on the labelled "
                          f"data dropped at most {nm.max_accuracy_drop} points (see Accuracy)."]
        acc = v.accuracy
        if acc:
            w = acc.worst_class
            lines += ["", "## Accuracy", "",
                      f"- source {acc.source_accuracy:.2%}, built {acc.built_accuracy:.2%}: drop "
                      f"{acc.drop_points:.2f} points on {acc.samples} samples",
                      f"- worst class {w.label}: {w.source:.2%} -> {w.built:.2%} "
                      f"({w.delta_points:+.2f} points)",
                      "", "| class | n | source | built | Δ points |", "|---|---|---|---|---|"]
            for c in acc.per_class:
                lines.append(f"| {c.label} | {c.count} | {c.source:.2%} | {c.built:.2%} | "
                             f"{c.delta_points:+.2f} |")
    if latency:
        lines += ["", "## Local latency (quick run; use `edgeify bench` for the full protocol)", ""]
        if "error" in latency:
            lines.append(f"- not measured: {latency['error']}")
        else:
            lat = latency["latency_ms"]
            lines.append(f"- p50 {lat['p50']:.3f} ms, p95 {lat['p95']:.3f} ms, throughput "
                         f"{latency['throughput_ips']:.1f}/s, load {latency['load_ms']:.1f} ms, "
                         f"threads {latency['protocol'].get('threads')}")
    facts = raw.get("facts") or {}  # each step's own record, by namespace: shown generically (scalar fields)
    if facts:
        lines += ["", "## Step facts", ""]
        lines += [f"- {ns}: " + ", ".join(f"{k} {v}" for k, v in rec.items() if isinstance(v, (str, int, float, bool)))
                  for ns, rec in facts.items() if isinstance(rec, dict)]
    lines += ["", "## Steps", "", "| step | uses | seconds | cached |", "|---|---|---|---|"]
    for s in raw.get("steps", []):
        lines.append(f"| {s['id']} | {s['uses']} | {s['seconds']} | {s['cached']} |")
    return "\n".join(lines) + "\n"
