"""The driver: expand the matrix, hand ready cells to an executor in dependency order (``cells.plan``), publish
each bundle as it arrives, and keep one record per cell (``OUT/_reports/<model>/<cell>.json``)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from ..targets import load_registry
from .cells import Cell, expand, plan
from .publish import publish_bundle, report_path, write_json_atomic
from .spec import MatrixSpec
from .worker import CellJob, CellOutcome

Status = Literal["built", "failed", "skipped", "cancelled"]


class CellRecord(BaseModel):
    """What became of one cell (the JSON record of `edgeify build-matrix --format json`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cell: str
    model: str
    target: str
    precision: str
    engine: str | None
    status: Status
    reason: str | None = None
    bundle: str | None = None
    report: str | None = None          # the build report: BUNDLE/report.md, or this record's JSON for failures
    record: str | None = None          # OUT/_reports/<model>/<cell>.json
    error: dict[str, Any] | None = None
    node: dict[str, Any] | None = None
    seconds: float = 0.0
    size_bytes: int | None = None
    parity: dict[str, Any] | None = None
    accuracy: dict[str, Any] | None = None
    steps: tuple[dict[str, Any], ...] = ()


@dataclass
class MatrixResult:
    out: Path
    executor: str
    records: list[CellRecord]
    seconds: float
    interrupted: bool = False
    nodes: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        c = Counter(r.status for r in self.records)
        return {s: c.get(s, 0) for s in ("built", "failed", "skipped", "cancelled")}

    def step_counts(self) -> dict[str, dict[str, int]]:
        """Per step kind: how many times it ran and how many times its cached result was reused."""
        out: dict[str, dict[str, int]] = {}
        for r in self.records:
            for s in r.steps:
                row = out.setdefault(str(s.get("uses")), {"ran": 0, "cached": 0})
                row["cached" if s.get("cached") else "ran"] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "executor": self.executor, "seconds": round(self.seconds, 3),
                "interrupted": self.interrupted, "counts": self.counts(), "steps": self.step_counts(),
                "nodes": self.nodes, "cells": [r.model_dump(mode="json") for r in self.records]}


class MatrixObserver(Protocol):
    def planned(self, cells: list[Cell]) -> None: ...
    def submitted(self, cell: Cell) -> None: ...
    def finished(self, record: CellRecord) -> None: ...


class _Silent:
    def planned(self, cells: list[Cell]) -> None: ...
    def submitted(self, cell: Cell) -> None: ...
    def finished(self, record: CellRecord) -> None: ...


def job_for(matrix: MatrixSpec, cell: Cell, *, use_cache: bool, measure_latency: bool) -> CellJob:
    m = next(m for m in matrix.models if m.name == cell.model)
    shapes = m.shapes()
    drop = m.max_accuracy_drop if m.max_accuracy_drop is not None else matrix.max_accuracy_drop
    return CellJob(cell_id=cell.id, model=cell.model, target=cell.target, precision=cell.precision,
                   engine=cell.engine, model_path=m.path, calib=_s(m.calib), eval=_s(m.eval),
                   preprocess=_s(m.preprocess), input_shapes=tuple(shapes) if shapes else None,
                   target_files=tuple(str(f) for f in matrix.target_files), max_accuracy_drop=drop,
                   use_cache=use_cache, measure_latency=measure_latency)


def _s(p: Path | None) -> str | None:
    return None if p is None else str(p)


def _parity(summary: dict[str, Any]) -> dict[str, Any] | None:
    outs = summary.get("parity") or []
    if not outs:
        return None
    gated = [o for o in outs if o.get("gated", True)] or outs  # figures on random inputs are reported only
    max_abs = [o["max_abs"] for o in gated if isinstance(o.get("max_abs"), (int, float))]
    cos = [o["cosine"] for o in gated if isinstance(o.get("cosine"), (int, float))]
    return {"pass": all(o.get("pass", False) for o in gated), "max_abs": max(max_abs) if max_abs else None,
            "min_cosine": min(cos) if cos else None, "limit": gated[0].get("limit"),
            "inputs": sorted({str(o.get("inputs")) for o in gated})}


def _record(cell: Cell, out: Path, outcome: CellOutcome | None, status: Status | None = None) -> CellRecord:
    base = {"cell": cell.id, "model": cell.model, "target": cell.target, "precision": cell.precision,
            "engine": cell.resolved_engine or cell.engine, "record": str(report_path(out, cell.id))}
    if outcome is None:
        return CellRecord(**base, status=status or cell.status, reason=cell.reason)
    s = outcome.summary
    built = outcome.status == "built"
    bundle = cell.out_dir(out)
    return CellRecord(**base, status=outcome.status, bundle=str(bundle) if built else None,
                      report=str(bundle / "report.md") if built else base["record"], error=outcome.error,
                      node=outcome.node, seconds=round(outcome.seconds, 3), size_bytes=s.get("size_bytes"),
                      parity=_parity(s), accuracy=s.get("accuracy"), steps=outcome.steps)


def _finish(cell: Cell, out: Path, outcome: CellOutcome) -> CellRecord:
    if outcome.status == "built" and outcome.bundle_tar is not None:
        try:
            publish_bundle(outcome.bundle_tar, cell.out_dir(out))
        except Exception as exc:  # a broken archive or a full disk: the cell failed, OUT is untouched
            outcome = CellOutcome(outcome.cell_id, "failed", outcome.node, outcome.seconds, outcome.steps, error={
                "type": type(exc).__name__, "message": f"publishing the bundle failed: {exc}", "exit_code": 1,
                "hint": "check free space and permissions under OUT, then rerun the matrix"})
    rec = _record(cell, out, outcome)
    write_json_atomic(report_path(out, cell.id), rec.model_dump(mode="json"))
    return rec


def run_matrix(matrix: MatrixSpec, out: str | Path, executor, *, use_cache: bool = True,
               measure_latency: bool = True, observer: MatrixObserver | None = None,
               registry=None) -> MatrixResult:
    """Build every planned cell of ``matrix`` into ``OUT/<model>/<cell>``; never raises for a failed cell.

    Ctrl-C cancels the cells in flight (on Ray: ``ray.cancel``); finished bundles stay; the result says
    ``interrupted``."""

    obs = observer or _Silent()
    out = Path(out)
    t0 = time.perf_counter()
    reg = registry or load_registry([str(f) for f in matrix.target_files])
    cells = expand(matrix, reg)
    deps = plan(cells)
    by_id = {c.id: c for c in cells}
    obs.planned(cells)
    records: dict[str, CellRecord] = {}
    for c in cells:
        if c.status == "skipped":
            records[c.id] = _record(c, out, None)
            write_json_atomic(report_path(out, c.id), records[c.id].model_dump(mode="json"))
            obs.finished(records[c.id])
    waiting = [c.id for c in cells if c.id in deps]
    in_flight: set[str] = set()
    interrupted = False
    try:
        while waiting or in_flight:
            for cid in list(waiting):
                if executor.capacity is not None and len(in_flight) >= executor.capacity:
                    break
                if deps[cid] <= records.keys():
                    waiting.remove(cid)
                    executor.submit(job_for(matrix, by_id[cid], use_cache=use_cache,
                                            measure_latency=measure_latency))
                    in_flight.add(cid)
                    obs.submitted(by_id[cid])
            for outcome in executor.wait(0.25):
                in_flight.discard(outcome.cell_id)
                records[outcome.cell_id] = _finish(by_id[outcome.cell_id], out, outcome)
                obs.finished(records[outcome.cell_id])
    except KeyboardInterrupt:
        interrupted = True
        executor.cancel()
        for cid in [*in_flight, *waiting]:
            records[cid] = _record(by_id[cid], out, None, status="cancelled")
            obs.finished(records[cid])
    nodes = executor.nodes() if hasattr(executor, "nodes") else []
    ordered = [records[c.id] for c in cells if c.id in records]
    return MatrixResult(out=out, executor=executor.name, records=ordered, seconds=time.perf_counter() - t0,
                        interrupted=interrupted, nodes=nodes)
