"""The unified per-operator profile record, shared by every engine's profiler and by the host's printers.

JSON shape (``Profile.to_dict()``, stored in ``BenchResult.profile``)::

    {"engine": "onnxruntime", "source": "onnxruntime session profiling", "runs": 20,
     "ops": [{"name", "type", "time_ms", "share", "placement", "precision", "fallback", "reason", "calls",
              "module", "module_type", "module_at"}, ...],
     "placement": {"intended", "counts", "fallback_ops": [{"name", "type", "placement", "reason", "share",
                                                            "module"}], "fallback_count", "fallback_share"},
     "modules": [{"module", "type", "at", "time_ms", "share", "ops"}, ...],  # only when the bundle maps them
     "time_ms_missing": null | "why the engine gives no per-op times",
     "overhead": {"profiled_run_ms", "ops_sum_ms", "unattributed_ms", "latency_p50_ms", "ops_sum_vs_p50", ...}}

``time_ms`` is the mean per inference over the profiled runs; ``share`` is ``time_ms`` over the sum of every op's
``time_ms``. Ops are one row per operator (never per delegate partition), sorted by time, slowest first (ops
without a time keep execution order, after the timed ones). ``module`` is the source module the op came from
(``features.3`` / ``nn.Conv2d``, from the bundle's ``facts.source_modules``: see ``modules.py``; null when the
bundle records none or no recorded name fits the engine's); ``modules`` sums the op times per source module,
slowest first. Standard library only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

from .modules import SourceMap

#: fallback share above which ``bench --profile`` warns
FALLBACK_WARN_SHARE = 0.2


@dataclass(frozen=True)
class OpProfile:
    """One operator as the engine ran it."""

    name: str
    type: str
    #: mean ms per inference; None when the engine gives no per-op time (the profile says why)
    time_ms: float | None
    placement: str
    share: float | None = None
    #: the precision the engine executed in (OpenVINO ``exec_type``), when it says
    precision: str | None = None
    #: the op did not run where the bundle intended (see ``reason``)
    fallback: bool = False
    reason: str | None = None
    #: kernel invocations per inference (ORT may run a node more than once in a loop)
    calls: float | None = None
    #: the source module the op came from (``features.3``; "" is the model's own forward), its class, its line
    module: str | None = None
    module_type: str | None = None
    module_at: str | None = None


@dataclass(frozen=True)
class Placement:
    intended: str
    counts: dict[str, int] = field(default_factory=dict)
    fallback_ops: tuple[dict[str, Any], ...] = ()
    fallback_count: int = 0
    #: share of the per-op time spent in fallback ops; None when the engine gives no per-op times
    fallback_share: float | None = None


@dataclass(frozen=True)
class Profile:
    engine: str
    source: str
    runs: int
    ops: tuple[OpProfile, ...]
    placement: Placement
    overhead: dict[str, Any] = field(default_factory=dict)
    time_ms_missing: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ops"] = [asdict(o) for o in self.ops]
        out["placement"]["fallback_ops"] = [dict(f) for f in self.placement.fallback_ops]
        if any(o.module is not None for o in self.ops):
            out["modules"] = self.by_module()
        return out

    def by_module(self) -> list[dict[str, Any]]:
        """Op time summed per source module, slowest first (ops no module was found for: ``module`` null)."""
        groups: dict[str | None, dict[str, Any]] = {}
        for o in self.ops:
            g = groups.setdefault(o.module, {"module": o.module, "type": o.module_type, "at": o.module_at,
                                             "time_ms": None, "ops": 0})
            g["ops"] += 1
            if o.time_ms is not None:
                g["time_ms"] = (g["time_ms"] or 0.0) + o.time_ms
        total = sum(g["time_ms"] or 0.0 for g in groups.values())
        for g in groups.values():
            g["share"] = round(g["time_ms"] / total, 6) if total and g["time_ms"] is not None else None
            g["time_ms"] = None if g["time_ms"] is None else round(g["time_ms"], 6)
        return sorted(groups.values(), key=lambda g: (g["time_ms"] is None, -(g["time_ms"] or 0.0), -g["ops"]))

    def with_modules(self, source_map: SourceMap) -> Profile:
        """Each op's source module from the bundle's map, or from the op's own scope name (litert-torch)."""
        ops = []
        for o in self.ops:
            m = source_map.lookup(o.name)
            ops.append(o if m is None else replace(o, module=m.path, module_type=m.type or None,
                                                   module_at=m.at or None))
        if all(o.module is None for o in ops):
            return self
        mods = {o.name: o.module for o in ops}
        fb = tuple({**f, "module": mods.get(str(f.get("name")))} for f in self.placement.fallback_ops)
        return replace(self, ops=tuple(ops), placement=replace(self.placement, fallback_ops=fb))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Profile:
        pl = dict(raw.get("placement") or {})
        placement = Placement(intended=str(pl.get("intended") or ""), counts=dict(pl.get("counts") or {}),
                              fallback_ops=tuple(pl.get("fallback_ops") or ()),
                              fallback_count=int(pl.get("fallback_count") or 0),
                              fallback_share=pl.get("fallback_share"))
        names = set(OpProfile.__dataclass_fields__)
        ops = tuple(OpProfile(**{k: v for k, v in o.items() if k in names}) for o in raw.get("ops") or ())
        return cls(engine=str(raw.get("engine") or ""), source=str(raw.get("source") or ""),
                   runs=int(raw.get("runs") or 0), ops=ops, placement=placement,
                   overhead=dict(raw.get("overhead") or {}), time_ms_missing=raw.get("time_ms_missing"))

    def with_latency(self, p50_ms: float | None) -> Profile:
        """Relate the per-op sum to the end-to-end p50 of the (separate, unprofiled) latency run."""
        if p50_ms is None:
            return self
        over = dict(self.overhead)
        over["latency_p50_ms"] = round(p50_ms, 6)
        ops_sum = over.get("ops_sum_ms")
        over["ops_sum_vs_p50"] = round(ops_sum / p50_ms, 4) if ops_sum is not None and p50_ms > 0 else None
        run = over.get("profiled_run_ms")
        over["profiler_slowdown"] = round(run / p50_ms, 4) if run and p50_ms > 0 else None
        return replace(self, overhead=over)

    @property
    def warning(self) -> str | None:
        """A one-line warning when a large part of the model did not run where the bundle intended."""
        pl = self.placement
        if not pl.fallback_count:
            return None
        names = ", ".join(str(f["name"]) for f in pl.fallback_ops[:3]) + (" ..." if pl.fallback_count > 3 else "")
        if pl.fallback_share is not None and pl.fallback_share < FALLBACK_WARN_SHARE:
            return None
        share = f"{pl.fallback_share:.0%} of the op time" if pl.fallback_share is not None else "time unknown"
        return (f"{pl.fallback_count} of {len(self.ops)} ops did not run where the bundle intended "
                f"({pl.intended}): {share}; {names}")


def build_profile(engine: str, source: str, runs: int, ops: Sequence[OpProfile], intended: str,
                  overhead: dict[str, Any] | None = None, time_ms_missing: str | None = None) -> Profile:
    """Shares, sorting, the placement summary and ``ops_sum_ms`` from raw per-op rows (in execution order)."""
    timed = [o.time_ms for o in ops if o.time_ms is not None]
    total = sum(timed) if timed else None
    rows: list[OpProfile] = [replace(o, share=round(o.time_ms / total, 6) if total and o.time_ms is not None
                                     else None) for o in ops]
    order = {id(o): i for i, o in enumerate(rows)}
    rows.sort(key=lambda o: (o.time_ms is None, -(o.time_ms or 0.0), order[id(o)]))
    counts: dict[str, int] = {}
    for o in rows:
        counts[o.placement] = counts.get(o.placement, 0) + 1
    fb = [o for o in rows if o.fallback]
    fb_share = None
    if total:
        fb_share = round(sum(o.time_ms or 0.0 for o in fb) / total, 6)
    elif not fb and timed:
        fb_share = 0.0
    placement = Placement(
        intended=intended, counts=counts, fallback_count=len(fb), fallback_share=fb_share,
        fallback_ops=tuple({"name": o.name, "type": o.type, "placement": o.placement, "reason": o.reason,
                            "share": o.share} for o in fb))
    over = dict(overhead or {})
    over["ops_sum_ms"] = round(total, 6) if total is not None else None
    run = over.get("profiled_run_ms")
    if run is not None and total is not None:
        over["unattributed_ms"] = round(run - total, 6)
    return Profile(engine=engine, source=source, runs=runs, ops=tuple(rows), placement=placement, overhead=over,
                   time_ms_missing=time_ms_missing)


__all__ = ["FALLBACK_WARN_SHARE", "OpProfile", "Placement", "Profile", "build_profile"]
