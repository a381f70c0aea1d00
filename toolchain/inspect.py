"""``edgeify inspect``: what a build for a target will do, and which ops its engine will not accelerate.

``inspect_model(MODEL, target=T)``: the resolved pipeline (each step, its input and its resolved config), the
model's op histogram (the ONNX the pipeline builds from: the source itself or the export step's output), and the
engine's own report on a quick build: the fp32 (or requested) bundle is built for real in a temporary directory
and the engine states where each op runs (``edgeify_runtime.profile``: ONNX Runtime's node placement, OpenVINO's
executed kernels, LiteRT's XNNPACK partitions) — no hand-kept list of unsupported ops.

``inspect_parity(BUNDLE, source=MODEL)``: the per-op parity table (``edgeify.parity_ops``) for a bundle, also one
that passed its check.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeify_runtime.bench_inputs import input_shapes, random_feeds, resolve_batch
from edgeify_runtime.engines import create_adapter
from edgeify_runtime.manifest import Manifest
from edgeify_runtime.profile import profile_bundle

from .build import build
from .errors import UsageError
from .parity_ops import explain_bundle, reference_onnx
from .pipeline import resolve
from .sources import open_source
from .steps.base import BuildContext
from .targets import load_registry


@dataclass(frozen=True)
class InspectReport:
    model: str
    target: str
    engine: str
    precision: str
    pipeline: tuple[dict[str, Any], ...]
    #: op type -> count, and where the histogram comes from
    op_histogram: dict[str, int] = field(default_factory=dict)
    histogram_of: str = ""
    #: the engine's report on a quick build: {"source", "intended", "counts", "not_accelerated": [...],
    #: "source_modules": [{"module", "type", "at", "ops": ["name (type)"]}] (PyTorch sources), ...}
    engine_report: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _context(model: str, spec: Any, engine: str, precision: str, work: Path, input_shapes: list[str] | None) -> Any:
    return BuildContext(source=open_source(model, input_shapes), target=spec, engine_name=engine,
                        engine=spec.engines[engine], precision=precision, work_dir=work)


def _histogram_onnx(path: Path) -> dict[str, int]:
    import onnx

    counts = Counter(n.op_type if not n.domain or n.domain == "ai.onnx" else f"{n.domain}.{n.op_type}"
                     for n in onnx.load(str(path), load_external_data=False).graph.node)
    return dict(counts.most_common())


def _random_feeds(bundle: Path) -> dict[str, Any]:
    m = Manifest.read(bundle)
    shapes = input_shapes(m.inputs, resolve_batch(m.inputs, None))
    return random_feeds(m.inputs, shapes, 0)


def engine_report(bundle: Path) -> dict[str, Any]:
    """Where the engine runs each op of ``bundle``, in its own words (one profiled inference)."""

    m = Manifest.read(bundle)
    prof = profile_bundle(bundle, feeds=_random_feeds(bundle), runs=1, warmup=1)
    report: dict[str, Any] = {
        "source": prof.source, "intended": prof.placement.intended, "counts": prof.placement.counts,
        "ops": len(prof.ops), "not_accelerated": list(prof.placement.fallback_ops),
        "engine_types": dict(Counter(o.type for o in prof.ops).most_common()),
    }
    if any(o.module is not None for o in prof.ops):  # the source module each engine op came from
        by: dict[str | None, dict[str, Any]] = {}
        for o in prof.ops:
            g = by.setdefault(o.module, {"module": o.module, "type": o.module_type, "at": o.module_at, "ops": []})
            g["ops"].append(f"{o.name} ({o.type})")
        report["source_modules"] = list(by.values())
    unsupported = create_adapter(m.engine.name, m.engine.min_version).unsupported_ops(bundle / m.engine.artifact)
    if unsupported is not None:  # the engine's own statement of what it supports (EngineAdapter.unsupported_ops)
        report["unsupported_on_cpu"] = unsupported
    return report


def inspect_model(model: str, *, target: str, engine: str | None = None, precision: str = "fp32",
                  calib: str | None = None, convert: bool = True, input_shapes: list[str] | None = None,
                  target_files: tuple[str, ...] = ()) -> InspectReport:
    spec, _ = load_registry(target_files).resolve(target)
    pipeline = resolve(spec, engine, precision)
    with tempfile.TemporaryDirectory(prefix="edgeify-inspect-") as tmp:
        ctx = _context(model, spec, pipeline.engine, precision, Path(tmp) / "work", input_shapes)
        ref = reference_onnx(ctx, Path(tmp) / "export")
        hist, of = ({}, "") if ref is None else (_histogram_onnx(ref), "the source ONNX" if ctx.source.kind ==
                                                 "onnx" else "the ONNX of the pipeline's export step")
        report: dict[str, Any] = {"skipped": "--no-convert"}
        device_steps = [s.id for s in pipeline.steps if s.where == "device"]
        if convert and device_steps:
            report = {"skipped": f"the {pipeline.engine} engine is built on the device (steps {device_steps}); "
                                 "profile it there: edgeify bench BUNDLE --device NAME --profile"}
        elif convert:
            out = Path(tmp) / "bundle"
            build(model, target=spec, out=out, precision=precision, engine=pipeline.engine, calib=calib,
                  measure_latency=False, input_shapes=input_shapes)
            report = engine_report(out)
            if ref is None:  # no ONNX (e.g. litert-torch converts PyTorch directly): the converter's ops
                hist, of = report["engine_types"], f"the {pipeline.engine} model the converter wrote"
    return InspectReport(model=str(model), target=spec.name, engine=pipeline.engine, precision=precision,
                         pipeline=tuple(pipeline.describe()), op_histogram=hist, histogram_of=of,
                         engine_report=report)


def inspect_parity(bundle: Path, *, source: str | None, input_shapes: list[str] | None = None) -> Any:
    """The per-op parity table of ``bundle`` against its source model (``source``: the model file)."""

    m = Manifest.read(bundle)
    if not source:
        raise UsageError(f"inspect --parity {bundle}: name the bundle's source model with --source "
                         f"(the manifest records {(m.raw.get('source') or {}).get('file', 'no file name')})",
                         hint=f"edgeify inspect --parity {bundle} --source MODEL")
    spec, _ = load_registry().resolve(m.target or "")
    engine = m.engine.name if m.engine.name in spec.engines else next(iter(spec.engines))
    with tempfile.TemporaryDirectory(prefix="edgeify-inspect-") as tmp:
        ctx = _context(source, spec, engine, m.precision, Path(tmp) / "work", input_shapes)
        ref = reference_onnx(ctx, Path(tmp) / "export")
        if ref is None:
            raise UsageError(f"{bundle}: the {engine} pipeline has no ONNX of the source to compare per op",
                             hint="per-op parity needs an ONNX source or an ONNX export step")
        return explain_bundle(ref, bundle, _random_feeds(bundle))


__all__ = ["InspectReport", "engine_report", "inspect_model", "inspect_parity"]
