"""Write the chosen candidate as a normal bundle at ``-o``: its run-time settings in ``engine.options``, the
optimize record (run id, objective, budgets, why it won) and ``quantization.ladder`` in the manifest. The bundle
is finished in a staging directory beside ``-o`` and published atomically (a good bundle is never half replaced)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeify import bundle as bundle_mod
from edgeify.build import quick_latency
from edgeify.steps.records import quantization_of
from edgeify_runtime.manifest import Manifest

from .records import Candidate, OptimizeResult, Rung
from .settings import to_engine_options

if TYPE_CHECKING:
    from edgeify_runtime.manifest import Manifest


def _quantization(manifest: Manifest, ladder: tuple[Rung, ...], **details: Any) -> dict[str, Any]:
    """The manifest's quantization record with the ladder's rungs (and ``details``) added, as its JSON."""

    q = quantization_of(manifest)
    return dataclasses.replace(q, ladder=tuple(r.model_dump(mode="json") for r in ladder),
                               details={**q.details, **details}).to_dict()


def write_chosen(c: Candidate, runtime: str, out: Path, result: OptimizeResult, ladder: tuple[Rung, ...]) -> None:
    src = Path(c.bundle or "")
    staging = bundle_mod.staging_dir_for(out)
    try:
        shutil.copytree(src, staging)
        manifest = Manifest.read(staging)
        options, threads = to_engine_options(runtime, c.settings)
        engine = {**manifest.raw["engine"], "options": {**manifest.engine.options, **options}}
        quant = _quantization(manifest, ladder, quantized_ops=c.quantized_ops, total_ops=c.total_ops)
        optimize = {
            "run_id": result.run_id, "objective": result.objective, "budgets": result.budgets.model_dump(),
            "device": result.device, "target_reason": result.target_reason,
            "why": result.chosen.why if result.chosen else "", "accuracy_measure": result.accuracy_measure,
            "recipe": c.recipe.model_dump(mode="json"),
            "settings": {**({"threads": threads} if threads else {}), **c.settings.options},
            "latency_ms": c.latency_ms or c.screen_latency_ms, "accuracy_drop": c.accuracy_drop,
            "candidates": len(result.candidates), "stopped": result.stopped,
            "compression": c.compression,  # optimize --compress: what was done, accuracy against the original
        }
        # `updated` validates it as a reader does (files and digest untouched); written in staging, then published
        manifest.updated(engine=engine, quantization=quant, optimize=optimize).write(staging)
        bundle_mod.publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_ladder_bundle(src: Path | None, out: Path, ladder: tuple[Rung, ...], *,
                        measure_latency: bool = True) -> tuple[Manifest, dict[str, Any] | None]:
    """Publish the ladder's accepted rung (``src``) at ``out`` with ``quantization.ladder``; returns the manifest
    and the quick latency run (None when not asked)."""

    staging = bundle_mod.staging_dir_for(out)
    try:
        shutil.copytree(Path(src or ""), staging)
        manifest = Manifest.read(staging)
        manifest = manifest.updated(quantization=_quantization(manifest, ladder))
        manifest.write(staging)
        latency = quick_latency(staging) if measure_latency else None
        bundle_mod.write_report(staging, manifest, latency)
        bundle_mod.publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest, latency
