"""Build one candidate artifact through ``edgeify.build`` (shared step cache, the target's checks) and read back
what the search needs: parity, accuracy against the source model, size and quantized compute ops."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .ops import count_ops
from .records import Accuracy, AccuracyMeasure, Recipe
from .space import ArtifactPlan, variant_spec

if TYPE_CHECKING:
    from edgeify.targets.spec import TargetSpec


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
    status: str = "built"  # built | parity-failed | build-failed
    manifest: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "built"


def accuracy_from(validation: dict[str, Any] | None, measure: AccuracyMeasure, passed: bool) -> Accuracy:
    """Accuracy drop in points: labelled top-1 (``labels``) or top-1 disagreement with the source (``agreement``)."""
    validation = validation or {}
    rows = validation.get("outputs") or []
    real = [r for r in rows if str(r.get("inputs", "")).startswith("real")] or rows
    cos = [r["cosine"] for r in real if r.get("cosine") is not None]
    agree = [r["top1_agreement"] for r in real if r.get("top1_agreement") is not None]
    acc = validation.get("accuracy")
    if measure == "labels" and acc:
        return Accuracy(measure="labels", drop=float(acc["drop_points"]), source_accuracy=acc["source_accuracy"],
                        built_accuracy=acc["built_accuracy"], top1_agreement=acc.get("top1_agreement"),
                        cosine=min(cos) if cos else None, parity_passed=passed)
    drop = round((1.0 - min(agree)) * 100, 3) if agree else None
    return Accuracy(measure="agreement", drop=drop, top1_agreement=min(agree) if agree else None,
                    cosine=min(cos) if cos else None, parity_passed=passed)


def build_candidate(inp: Inputs, plan: ArtifactPlan, index: int, observer: Any = None) -> Built:
    from edgeify.build import build
    from edgeify.errors import EdgeifyError, InterruptedBuild, ParityError

    spec = variant_spec(inp.spec, plan.engine, plan.recipe)
    runtime = spec.engines[plan.engine].runtime
    out = inp.work / f"c{index:03d}-{plan.engine}-{plan.precision}-{plan.recipe.name}"
    try:
        res = build(inp.model, target=spec, out=out, precision=plan.precision, engine=plan.engine,
                    calib=inp.calib, eval=inp.eval if inp.accuracy_measure == "labels" else None,
                    preprocess=inp.preprocess, input_shapes=list(inp.input_shapes) or None,
                    use_cache=inp.use_cache, measure_latency=False, observer=observer)
    except InterruptedBuild:
        raise KeyboardInterrupt from None
    except ParityError as exc:
        report = getattr(exc, "report", None)
        return Built(plan, None, runtime, accuracy_from(report, "agreement", False), error=str(exc).splitlines()[0],
                     status="parity-failed")
    except EdgeifyError as exc:
        return Built(plan, None, runtime, None, error=f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
                     status="build-failed")
    acc = accuracy_from(res.validation, inp.accuracy_measure, True)
    q, total = count_ops(res.out)
    size = sum(int(f.get("size") or 0) for f in res.manifest.get("files", {}).values())
    return Built(plan, res.out, runtime, acc, size, q, total, manifest=res.manifest)


def with_recipe(plan: ArtifactPlan, recipe: Recipe, precision: str | None = None) -> ArtifactPlan:
    return ArtifactPlan(engine=plan.engine, precision=precision or plan.precision, recipe=recipe)
