"""``edgeify build --precision int8 --max-accuracy-drop X --ladder``: the quantization ladder for one engine.

Builds int8; when it misses the budget or its parity gate, goes down the ladder (other recipes, int8-mixed,
bf16/fp16, fp32) and publishes the first rung that holds, its manifest recording every rung
(``quantization.ladder``). Nothing is benchmarked here (``edgeify optimize`` measures); the build's own quick
latency run applies to the published bundle as usual.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeify.build import BuildResult
from edgeify.bundle import check_output
from edgeify.errors import AccuracyGateError, ParityError
from edgeify.request import Budgets as RequestBudgets
from edgeify.request import BuildRequest, DataSets
from edgeify.targets import load_registry

from .api import accuracy_measure_for
from .candidates import Inputs
from .ladder import run_ladder
from .publish import write_ladder_bundle
from .records import Budgets
from .search import Search
from .space import ArtifactPlan, DeviceFacts

if TYPE_CHECKING:
    from edgeify.request import BuildRequest


def build_with_ladder(model: str | Path | BuildRequest, *, target: str | None = None, out: str | Path | None = None,
                      engine: str | None = None, calib: str | Path | None = None, eval: str | Path | None = None,
                      preprocess: str | Path | None = None, input_shapes: list[str] | None = None,
                      max_accuracy_drop: float | None = None, target_files: list[str] | tuple[str, ...] = (),
                      use_cache: bool = True, measure_latency: bool = True, trust_source: bool = False,
                      progress: Callable[[str], None] | None = None) -> Any:
    """Returns the ``BuildResult`` of the published rung; raises the last rung's gate error if none holds.
    ``model`` may be a whole ``BuildRequest`` (its precision is the ladder's start, int8)."""


    if isinstance(model, BuildRequest):
        req = model
    else:
        req = BuildRequest(model=str(model), target=target, out=None if out is None else str(out), precision="int8",
                           engine=engine, data=DataSets(calibration=calib, evaluation=eval, preprocess=preprocess),
                           budgets=RequestBudgets(max_accuracy_drop=max_accuracy_drop),
                           input_shapes=tuple(input_shapes or ()), target_files=tuple(target_files),
                           use_cache=use_cache, measure_latency=measure_latency, trust_source=trust_source)
    say = progress or (lambda m: None)
    check_output(req.out or "")
    if isinstance(req.target, str):
        spec, family = load_registry(req.target_files).resolve(req.target)
    else:
        spec, family = req.target, None
    eng_name, _ = spec.engine_for("int8", req.engine)
    out = Path(req.out or "")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".edgeify-ladder-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    data = req.data
    max_accuracy_drop = req.max_accuracy_drop
    measure = accuracy_measure_for(data.evaluation)
    inp = Inputs(model=req.model, spec=spec, work=work, calib=data.calibration, eval=data.evaluation,
                 preprocess=data.preprocess, input_shapes=req.input_shapes, accuracy_measure=measure,
                 use_cache=req.use_cache, trust_source=req.trust_source)
    try:
        search = Search(inp, spec, DeviceFacts.local(), Budgets(max_accuracy_drop=max_accuracy_drop), "accuracy",
                        "local", "build-ladder", None, say, engines=(eng_name,), precisions=("int8",))  # type: ignore
        search.measure = False
        base, _ = search.try_plan(ArtifactPlan(engine=eng_name, precision="int8"))
        rungs: list = []
        got = base
        if not search.accuracy_ok(base):
            say(f"{eng_name} int8 misses the budget or its parity gate: quantization ladder")
            rungs, got = run_ladder(search, base, None, spec)
        if got is None:
            last = rungs[-1] if rungs else None
            drop = None if last is None else last.accuracy_drop
            cls = AccuracyGateError if any(r.parity_passed for r in rungs) else ParityError
            raise cls(f"no rung of the quantization ladder for {eng_name} holds --max-accuracy-drop "
                      f"{max_accuracy_drop} (tried: {', '.join(r.rung for r in rungs)}; last drop {drop} pt)",
                      hint="allow a larger --max-accuracy-drop or give more representative --calib data")
        manifest, latency = write_ladder_bundle(got.bundle, out, tuple(rungs), measure_latency=req.measure_latency)
        return BuildResult(out=out, target=spec.name, family_alias=family, engine=eng_name,
                           precision=got.plan.precision, manifest=manifest, latency=latency,
                           seconds=0.0, steps=list(manifest.raw.get("steps") or []), request=req)
    finally:
        shutil.rmtree(work, ignore_errors=True)


__all__ = ["build_with_ladder"]
