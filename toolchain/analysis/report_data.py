"""What ``edgeify report`` shows, read from the store once: typed records, no plotting here.

Scale: the results table and the trend plots use summary columns only (no samples, no JSON decoding), for up to
``max_rows`` results; the per-result latency distributions, fingerprints, protocols and profiles are drawn for the
newest ``detail`` results only (their samples are loaded); optimize runs: the newest ``max_runs``. What was left
out is counted in :attr:`ReportData.notes`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgeify_runtime.errors import BundleError
from edgeify_runtime.manifest import Manifest

from ..steps.records import validation_of

if TYPE_CHECKING:
    from edgeify_runtime.manifest import Manifest

    from ..steps.records import AccuracyReport

DEFAULT_DETAIL = 12
DEFAULT_MAX_ROWS = 5000
DEFAULT_MAX_RUNS = 5
MAX_TREND_SERIES = 12


@dataclass(frozen=True)
class Candidate:
    result_id: int
    label: str
    p50_ms: float | None
    accuracy_drop: float | None
    chosen: bool
    #: hover text: engine, precision, recipe, settings, compression, protocol, result ids
    details: str = ""
    #: "screen" | "full" | "" (a result not recorded by an optimize run)
    protocol: str = ""


@dataclass(frozen=True)
class Run:
    run_id: str
    candidates: tuple[Candidate, ...]
    pareto: tuple[int, ...]  # result ids on the front (lower latency and lower accuracy drop)
    #: the run's decision as optimize recorded it (``optimize.stored.run_record``): why, ladder, failed
    decision: dict[str, Any] | None = None


@dataclass(frozen=True)
class ClassDeltas:
    bundle: str
    digest: str
    accuracy: AccuracyReport
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportData:
    title: str
    store: str
    filters: str
    total: int
    rows: tuple[dict[str, Any], ...]  # summary columns, newest first
    details: tuple[Any, ...]  # BenchResult with samples, newest first
    runs: tuple[Run, ...]
    class_deltas: tuple[ClassDeltas, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)


def _manifest(bundle: str | None, digest: str) -> Manifest | None:
    """The bundle's manifest when it is still the one measured (same digest); None when gone or unreadable."""

    if not bundle:
        return None
    try:
        m = Manifest.read(bundle)
    except (BundleError, OSError):
        return None
    return m if m.bundle_digest == digest else None


def _accuracy(manifest: Manifest | None) -> AccuracyReport | None:
    try:
        v = None if manifest is None else validation_of(manifest)
    except BundleError:  # a report reads whatever bundles are on disk: a malformed one just has no accuracy
        return None
    return None if v is None else v.accuracy


def _accuracy_drop(result: Any, manifest: Manifest | None) -> float | None:
    for key in ("accuracy_drop", "accuracy_drop_points"):
        if isinstance(result.extra.get(key), (int, float)):
            return float(result.extra[key])
    cand = result.extra.get("candidate") or result.extra.get("optimize") or {}
    if isinstance(cand, dict) and isinstance(cand.get("accuracy_drop"), (int, float)):
        return float(cand["accuracy_drop"])
    acc = _accuracy(manifest)
    return None if acc is None else acc.drop_points


def _chosen(result: Any, manifest: Manifest | None) -> bool:
    cand = result.extra.get("candidate") or {}
    if isinstance(cand, dict) and "chosen" in cand:  # what the optimize run recorded (optimize.stored)
        return cand["chosen"] is True
    if result.extra.get("chosen") is True:
        return True
    optimize = {} if manifest is None else manifest.raw.get("optimize") or {}
    return optimize.get("run_id") == result.run_id and result.run_id is not None


def pareto_front(points: list[tuple[int, float, float]]) -> tuple[int, ...]:
    """Ids of the points no other point beats on both latency and accuracy drop (lower is better for both)."""
    front = []
    for pid, lat, drop in points:
        if not any((o_lat <= lat and o_drop <= drop) and (o_lat < lat or o_drop < drop)
                   for _, o_lat, o_drop in points):
            front.append(pid)
    return tuple(front)


def _details(cand: dict[str, Any], ids: list[int]) -> str:
    """One candidate's hover lines: what it is, how it was measured, which results."""
    settings = cand.get("settings") or {}
    comp = cand.get("compression")
    lines = [f"{cand.get('engine')} {cand.get('precision')} · recipe {cand.get('recipe') or 'default'}"
             + (f" ({len(cand['float_layers'])} float layer(s))" if cand.get("float_layers") else ""),
             "settings " + (", ".join(f"{k}={v}" for k, v in sorted(settings.items())) or "defaults"),
             "compression " + (", ".join(f"{k}={v}" for k, v in comp.items() if not isinstance(v, (dict, list)))
                               if isinstance(comp, dict) else str(comp or "none")),
             f"protocol {cand.get('protocol') or '-'} · results #{', #'.join(map(str, ids))}"
             + (f" · {cand['size_bytes'] / 1e6:.2f} MB" if isinstance(cand.get("size_bytes"), (int, float)) else "")]
    return "<br>".join(lines)


def _runs(store: Any, run_ids: list[str]) -> tuple[Run, ...]:
    """One point per optimize candidate (its full-protocol result when it has one, else its screening), with
    the accuracy, protocol and chosen flag the run recorded (``optimize.stored``); older results: one per result."""
    runs = []
    for run_id in run_ids:
        groups: dict[tuple[str, int], list[Any]] = {}
        decision = None
        for r in store.query(run_id=run_id, limit=None, samples=False, oldest_first=True):
            cand = r.extra.get("candidate") if isinstance(r.extra.get("candidate"), dict) else {}
            if isinstance(r.extra.get("optimize_run"), dict):
                decision = r.extra["optimize_run"]
            key = ("c", int(cand["index"])) if isinstance(cand.get("index"), int) else ("r", int(r.result_id))
            groups.setdefault(key, []).append(r)
        cands = []
        for results in groups.values():
            full = [r for r in results if (r.extra.get("candidate") or {}).get("protocol") == "full"]
            r = (full or results)[-1]
            cand = r.extra.get("candidate") if isinstance(r.extra.get("candidate"), dict) else {}
            m = _manifest(r.bundle, r.bundle_digest)
            label = str(r.extra.get("label") or cand.get("label") or "") or \
                f"#{r.result_id} {r.engine.name or ''} {r.precision or ''} t{r.protocol.threads or '-'}"
            ids = [int(x.result_id) for x in results]
            cands.append(Candidate(result_id=int(r.result_id), label=label, p50_ms=r.latency_ms.p50,
                                   accuracy_drop=_accuracy_drop(r, m), chosen=any(_chosen(x, m) for x in results),
                                   details=_details(cand, ids) if cand else f"result #{r.result_id}",
                                   protocol=str(cand.get("protocol") or "")))
        pts = [(c.result_id, c.p50_ms, c.accuracy_drop) for c in cands
               if c.p50_ms is not None and c.accuracy_drop is not None]
        runs.append(Run(run_id=run_id, candidates=tuple(cands), pareto=pareto_front(pts),  # type: ignore[arg-type]
                        decision=decision))
    return tuple(runs)


def gather(store: Any, filters: Any, *, detail: int = DEFAULT_DETAIL, max_rows: int = DEFAULT_MAX_ROWS,
           max_runs: int = DEFAULT_MAX_RUNS, title: str = "edgeify results") -> ReportData:
    q = filters.as_query()
    total = store.count(**q)
    rows = list(reversed(store.series(**q)))[:max_rows]  # newest first
    details = store.query(**q, limit=detail, samples=True)
    notes = []
    if total > len(rows):
        notes.append(f"the results table and trends show the newest {len(rows)} of {total} results")
    if total > len(details):
        notes.append(f"latency distributions, fingerprints and profiles are drawn for the newest {len(details)} "
                     f"results (edgeify report --detail N for more)")
    run_ids: list[str] = []
    for r in rows:
        if r["run_id"] and r["run_id"] not in run_ids:
            run_ids.append(r["run_id"])
    if len(run_ids) > max_runs:
        notes.append(f"optimize runs: the newest {max_runs} of {len(run_ids)} (edgeify report --run RUN for one)")
    deltas, seen = [], set()
    for r in details:
        if r.bundle_digest in seen:
            continue
        seen.add(r.bundle_digest)
        m = _manifest(r.bundle, r.bundle_digest)
        acc = _accuracy(m)
        if m is not None and acc is not None and acc.per_class:
            raw_labels = m.labels
            labels = tuple(str(x) for x in raw_labels) if isinstance(raw_labels, list) else ()
            deltas.append(ClassDeltas(bundle=str(r.bundle), digest=r.bundle_digest, accuracy=acc, labels=labels))
    return ReportData(title=title, store=store.location, filters=filters.describe() or "none", total=total,
                      rows=tuple(rows), details=tuple(details), runs=_runs(store, run_ids[:max_runs]),
                      class_deltas=tuple(deltas), notes=tuple(notes))


def trend_groups(rows: tuple[dict[str, Any], ...]) -> tuple[list[tuple[str, list[dict[str, Any]]]], int]:
    """Rows grouped by bundle x device, oldest first within a group; the largest groups first, at most
    :data:`MAX_TREND_SERIES`; also how many groups were left out."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in reversed(rows):  # one line per bundle identity (files, engine, precision, options) x device x threads
        ident = r.get("bundle_id") or r["bundle_digest"]
        name = (f"{r['model'] or ident[:12]} · {r.get('engine') or '?'} {r.get('precision') or ''} "
                f"t{r.get('threads') or '-'} ({ident[:8]}) · {r['device']}")
        groups[name].append(r)
    ordered = sorted(groups.items(), key=lambda kv: -len(kv[1]))
    return ordered[:MAX_TREND_SERIES], max(0, len(ordered) - MAX_TREND_SERIES)


__all__ = ["ClassDeltas", "ReportData", "Run", "gather", "pareto_front", "trend_groups"]
