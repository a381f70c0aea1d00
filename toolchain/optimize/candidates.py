"""Build one candidate artifact through ``edgeify.build`` (shared step cache, the target's checks) and read back
what the search needs: parity, accuracy against the source model, size and quantized compute ops."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgeify.build import build
from edgeify.errors import EdgeifyError, InterruptedBuild, ParityError

from .choose import parity_reason
from .ops import count_ops
from .records import Accuracy, AccuracyMeasure, Recipe
from .space import ArtifactPlan, variant_spec

if TYPE_CHECKING:
    from edgeify.steps.records import ValidationReport
    from edgeify.targets.spec import TargetSpec
    from edgeify_runtime.manifest import Manifest


@dataclass(frozen=True)
class Inputs:
    """What every candidate build of one optimize run shares."""

    model: str
    spec: TargetSpec
    work: Path
    calib: str | None
    eval: str | None
    preprocess: str | None
    input_shapes: tuple[str, ...]
    accuracy_measure: AccuracyMeasure
    use_cache: bool = True
    #: allow a .pt2 that needs full unpickling (``--trust-source``)
    trust_source: bool = False


@dataclass(frozen=True)
class Built:
    plan: ArtifactPlan
    bundle: Path | None
    runtime: str
    accuracy: Accuracy | None
    size_bytes: int | None = None
    quantized_ops: int | None = None
    total_ops: int | None = None
    error: str = ""
    status: str = "built"  # built | parity-failed | build-failed | duplicate
    manifest: Manifest | None = None
    #: ``duplicate``: the key of the earlier plan whose build gave this very artifact (same sha256)
    duplicate_of: str = ""
    #: the Ray node that built it (``--executor ray``: id, ip, host, pid); None: built in this process
    node: dict[str, Any] | None = None
    #: parity-failed (no bundle to hash): sha256 of its parity report (every error metric on the same inputs)
    report_sha256: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "built"

    def artifact_sha256(self) -> str | None:
        """sha256 of the engine artifact (the model file the engine loads), from the bundle manifest."""
        if self.manifest is None:
            return self.report_sha256 or None
        return (self.manifest.files.get(self.manifest.engine.artifact) or {}).get("sha256")


def _as_dict(report: Any) -> dict[str, Any] | None:
    """A validation report as its manifest dict (typed ``ValidationReport`` or already a dict)."""
    return report.to_dict() if hasattr(report, "to_dict") else report


def accuracy_from(validation: ValidationReport | None, measure: AccuracyMeasure, passed: bool) -> Accuracy:
    """Accuracy drop in points: labelled top-1 (``labels``) or top-1 disagreement with the source (``agreement``)."""
    rows = list(validation.outputs) if validation is not None else []
    real = [r for r in rows if r.inputs.startswith("real")] or rows
    cos = [r.cosine for r in real if r.cosine is not None]
    agree = [r.top1_agreement for r in real if r.top1_agreement is not None]
    acc = validation.accuracy if validation is not None else None
    if measure == "labels" and acc:
        return Accuracy(measure="labels", drop=acc.drop_points, source_accuracy=acc.source_accuracy,
                        built_accuracy=acc.built_accuracy, top1_agreement=acc.top1_agreement,
                        cosine=min(cos) if cos else None, parity_passed=passed)
    drop = round((1.0 - min(agree)) * 100, 3) if agree else None
    return Accuracy(measure="agreement", drop=drop, top1_agreement=min(agree) if agree else None,
                    cosine=min(cos) if cos else None, parity_passed=passed)


def _report_sha256(report: Any) -> str:
    import hashlib
    import json

    report = _as_dict(report)
    return hashlib.sha256(json.dumps(report, sort_keys=True, default=str).encode()).hexdigest() if report else ""


def build_candidate(inp: Inputs, plan: ArtifactPlan, index: int, observer: Any = None) -> Built:
    spec = variant_spec(inp.spec, plan.engine, plan.recipe)
    runtime = spec.engines[plan.engine].runtime
    out = inp.work / f"c{index:03d}-{plan.engine}-{plan.precision}-{plan.recipe.name}"
    try:
        res = build(inp.model, target=spec, out=out, precision=plan.precision, engine=plan.engine,
                    calib=inp.calib, eval=inp.eval if inp.accuracy_measure == "labels" else None,
                    preprocess=inp.preprocess, input_shapes=list(inp.input_shapes) or None,
                    use_cache=inp.use_cache, measure_latency=False, observer=observer,
                    trust_source=inp.trust_source)
    except InterruptedBuild:
        raise KeyboardInterrupt from None
    except ParityError as exc:
        report = getattr(exc, "report", None)

        return Built(plan, None, runtime, accuracy_from(report, "agreement", False), error=parity_reason(exc),
                     status="parity-failed", report_sha256=_report_sha256(report))
    except EdgeifyError as exc:
        return Built(plan, None, runtime, None, error=f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
                     status="build-failed")
    acc = accuracy_from(res.validation, inp.accuracy_measure, True)
    q, total = count_ops(res.out)
    size = sum(int(f.get("size") or 0) for f in res.manifest.files.values())
    return Built(plan, res.out, runtime, acc, size, q, total, manifest=res.manifest)


class CandidateBuilder(Protocol):
    """Where candidate builds run: in this process (``LocalBuilder``) or on a Ray cluster
    (``remote_build.RayBuilder``). ``prefetch`` may start a round's builds ahead (until ``deadline``,
    ``time.monotonic()``); ``build`` returns one candidate, prefetched or not."""

    def prefetch(self, inp: Inputs, plans: Sequence[tuple[ArtifactPlan, int]], deadline: float) -> None: ...
    def build(self, inp: Inputs, plan: ArtifactPlan, index: int) -> Built: ...
    def close(self) -> None: ...


class LocalBuilder:
    """Each candidate built here when the search reaches it."""

    def prefetch(self, inp: Inputs, plans: Sequence[tuple[ArtifactPlan, int]], deadline: float) -> None:
        return None

    def build(self, inp: Inputs, plan: ArtifactPlan, index: int) -> Built:
        return build_candidate(inp, plan, index)

    def close(self) -> None:
        return None


def with_recipe(plan: ArtifactPlan, recipe: Recipe, precision: str | None = None) -> ArtifactPlan:
    return ArtifactPlan(engine=plan.engine, precision=precision or plan.precision, recipe=recipe)
