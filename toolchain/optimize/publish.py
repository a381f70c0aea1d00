"""Write the chosen candidate as a normal bundle at ``-o``: its run-time settings in ``engine.options``, the
optimize record (run id, objective, budgets, why it won) and ``quantization.ladder`` in the manifest. The bundle
is finished in a staging directory beside ``-o`` and published atomically (a good bundle is never half replaced)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .records import Candidate, OptimizeResult, Rung
from .settings import to_engine_options


def write_chosen(c: Candidate, runtime: str, out: Path, result: OptimizeResult, ladder: tuple[Rung, ...]) -> None:
    from edgeify import bundle as bundle_mod
    from edgeify_runtime.manifest import MANIFEST_NAME, Manifest, dumps

    src = Path(c.bundle or "")
    staging = bundle_mod.staging_dir_for(out)
    try:
        shutil.copytree(src, staging)
        path = staging / MANIFEST_NAME
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        options, threads = to_engine_options(runtime, c.settings)
        manifest["engine"]["options"] = {**(manifest["engine"].get("options") or {}), **options}
        quant = dict(manifest.get("quantization") or {})
        quant["ladder"] = [r.model_dump(mode="json") for r in ladder]
        quant["quantized_ops"], quant["total_ops"] = c.quantized_ops, c.total_ops
        manifest["quantization"] = quant
        manifest["optimize"] = {
            "run_id": result.run_id, "objective": result.objective, "budgets": result.budgets.model_dump(),
            "device": result.device, "target_reason": result.target_reason,
            "why": result.chosen.why if result.chosen else "", "accuracy_measure": result.accuracy_measure,
            "recipe": c.recipe.model_dump(mode="json"),
            "settings": {**({"threads": threads} if threads else {}), **c.settings.options},
            "latency_ms": c.latency_ms or c.screen_latency_ms, "accuracy_drop": c.accuracy_drop,
            "candidates": len(result.candidates), "stopped": result.stopped,
        }
        path.write_text(dumps(manifest), encoding="utf-8")
        Manifest.read(staging)  # still a valid bundle (files and digest untouched)
        bundle_mod.publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_ladder_bundle(src: Path | None, out: Path, ladder: tuple[Rung, ...], *,
                        measure_latency: bool = True) -> dict[str, Any]:
    """Publish the ladder's accepted rung (``src``) at ``out`` with ``quantization.ladder``; returns the manifest
    (with the quick latency run under ``_latency`` when asked)."""
    from edgeify import bundle as bundle_mod
    from edgeify.build import quick_latency
    from edgeify_runtime.manifest import MANIFEST_NAME, Manifest, dumps

    staging = bundle_mod.staging_dir_for(out)
    try:
        shutil.copytree(Path(src or ""), staging)
        path = staging / MANIFEST_NAME
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        quant = dict(manifest.get("quantization") or {})
        quant["ladder"] = [r.model_dump(mode="json") for r in ladder]
        manifest["quantization"] = quant
        path.write_text(dumps(manifest), encoding="utf-8")
        Manifest.read(staging)
        latency = quick_latency(staging) if measure_latency else None
        bundle_mod.write_report(staging, manifest, latency)
        bundle_mod.publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {**manifest, "_latency": latency}
