"""The quantization ladder for one engine: when int8 misses the accuracy budget (or its parity gate), go down
rung by rung instead of giving up: other recipes; mixed precision (``int8-mixed``: the fewest most sensitive
layers kept in float until the budget holds, or the quantize step's own accuracy-keeping recipe such as NNCF's
``quantize_with_accuracy_control``); int16 activations with int8 weights (``int16x8``, where the engine has them);
bf16; fp16 (with the ops whose values overflow fp16 kept in fp32, where the step can); fp32 last. Each rung is
recorded. What each rung may vary comes from the engine's quantize step (``Step.search_space``): this module
names no step kind."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edgeify_runtime.profile.modules import SourceMap

from .records import Recipe, Rung
from .sensitivity import failed_rung
from .space import ArtifactPlan, alternate_recipes, quantize_step

if TYPE_CHECKING:
    from .candidates import Built

#: at most this many layers are kept in float before the ladder moves on to fp16/bf16/fp32
MAX_FLOAT_LAYERS = 8


class Runner(Protocol):
    """What the ladder needs from the search: build + screen a plan (cached), judge it, rank its layers."""

    def try_plan(self, plan: ArtifactPlan) -> tuple[Built, float | None]: ...
    def accuracy_ok(self, built: Built) -> bool: ...
    def rank_layers(self, built: Built) -> list[tuple[str, float, tuple[str, ...]]]: ...
    def precisions_for(self, engine: str) -> list[str]: ...
    def out_of_time(self) -> bool: ...
    def fp16_overflow(self, engine: str) -> tuple[str, ...]: ...
    def max_accuracy_drop(self) -> float | None: ...


def float_modules(layers: tuple[str, ...] | list[str], manifest: object) -> dict[str, str]:
    """Each layer kept in float -> the source module it came from (``blocks.2.conv (nn.Conv2d)``), from the
    manifest's ``facts.source_modules``; layers the source recorded no module for are left out."""
    if not layers or manifest is None:
        return {}
    smap = SourceMap.from_manifest(manifest)
    out: dict[str, str] = {}
    for name in layers:
        mod = smap.get(name) or smap.lookup(name)
        if mod is not None:
            out[name] = f"{mod.label} ({mod.type})" if mod.type else mod.label
    return out


def _rung(name: str, built: Built, p50: float | None, accepted: bool, reason: str = "",
          manifest: object = None) -> Rung:
    """A duplicate build (the very artifact of an earlier rung or candidate) is recorded as skipped: the earlier
    one's accuracy and latency stand, nothing is measured twice, and it is never accepted a second time. Layers
    kept in float are named by source module too (``manifest``: where the built one has none, e.g. parity
    failed)."""
    acc = built.accuracy
    dup = built.status == "duplicate"
    return Rung(rung=name, engine=built.plan.engine, precision=built.plan.precision, recipe=built.plan.recipe,
                accuracy_drop=None if acc is None else acc.drop, parity_passed=bool(acc and acc.parity_passed),
                cosine=None if acc is None else acc.cosine, latency_p50_ms=p50, quantized_ops=built.quantized_ops,
                total_ops=built.total_ops, accepted=accepted and not dup, skipped=dup,
                reason=reason or (f"skipped: {built.error}" if dup else built.error),
                float_modules=float_modules(built.plan.recipe.float_layers, built.manifest or manifest))


def run_ladder(runner: Runner, base: Built, base_p50: float | None, spec) -> tuple[list[Rung], Built | None]:
    """Rungs tried for ``base``'s engine, and the first built artifact that met the budget (or None)."""
    engine = base.plan.engine
    rungs = [_rung("int8", base, base_p50, False, "missed the accuracy budget or parity gate")]

    def attempt(name: str, plan: ArtifactPlan) -> Built | None:
        built, p50 = runner.try_plan(plan)
        ok = runner.accuracy_ok(built)
        rungs.append(_rung(name, built, p50, ok))
        return built if ok else None

    for recipe in alternate_recipes(spec, engine, "int8"):
        if runner.out_of_time():
            return rungs, None
        got = attempt(f"recipe {recipe.name}", ArtifactPlan(engine=engine, precision="int8", recipe=recipe))
        if got is not None:
            return rungs, got
    q = quantize_step(spec, engine, "int8-mixed", max_accuracy_drop=runner.max_accuracy_drop())
    if q is not None and "int8-mixed" in runner.precisions_for(engine) and not runner.out_of_time():
        got = None
        if q.search.mixed_by_layers:  # the fewest most sensitive layers kept in float
            got = _mixed(runner, base, q.id, rungs)
        elif q.search.mixed is not None:  # one recipe that holds the drop itself (e.g. NNCF accuracy control)
            got = attempt(f"int8-mixed {q.search.mixed.name}",
                          ArtifactPlan(engine=engine, precision="int8-mixed", recipe=q.recipe(q.search.mixed)))
        if got is not None:
            return rungs, got
    for prec in ("int16x8", "bf16", "fp16", "fp32"):
        if prec not in runner.precisions_for(engine) or runner.out_of_time():
            continue
        name, plan = prec, ArtifactPlan(engine=engine, precision=prec)
        q16 = quantize_step(spec, engine, "fp16") if prec == "fp16" else None
        keep_option = None if q16 is None else q16.search.keep_fp32_option
        if q16 is not None and keep_option is not None:
            keep = runner.fp16_overflow(engine)
            if keep:  # plain fp16 would turn these values to inf: keep them in fp32 from the start
                name = f"fp16 fp32: {', '.join(keep)}"
                plan = ArtifactPlan(engine=engine, precision="fp16", recipe=Recipe(
                    name=f"keep-fp32-{len(keep)}", step=q16.id, config={keep_option: list(keep)},
                    float_layers=keep))
        got = attempt(name, plan)
        if got is not None:
            return rungs, got
    return rungs, None


def _mixed(runner: Runner, base: Built, step_id: str, rungs: list[Rung]) -> Built | None:
    try:
        ranked = runner.rank_layers(base)
    except Exception as exc:  # its tooling failed: the rung is recorded as failed, the ladder goes on
        rungs.append(failed_rung("int8-mixed", base, "sensitivity ranking", exc))
        return None
    if not ranked:
        return None
    base_cfg = dict(base.plan.recipe.config)

    def plan_for(layers: list[str]) -> ArtifactPlan:
        return ArtifactPlan(engine=base.plan.engine, precision="int8-mixed", recipe=Recipe(
            name=f"mixed-{len(layers)}", step=step_id, config=base_cfg, float_layers=tuple(layers)))

    def ok(layers: list[str], label: str) -> Built | None:
        built, p50 = runner.try_plan(plan_for(layers))
        good = runner.accuracy_ok(built)
        rungs.append(_rung(f"int8-mixed {label}", built, p50, good, manifest=base.manifest))
        return built if good else None

    chosen: list[str] = []
    found: Built | None = None
    for name, _score, producers in ranked:
        if runner.out_of_time() or len(chosen) >= MAX_FLOAT_LAYERS:
            return None
        unit = [n for n in (*producers, name) if n not in chosen]  # the activation's producer and consumer
        if not unit:
            continue
        chosen += unit
        found = ok(chosen, f"float: {', '.join(chosen)}")
        if found is not None:
            break
    if found is None:
        return None
    for name in list(chosen[:-1]):  # prune: keep the fewest layers in float that still hold the budget
        if runner.out_of_time():
            break
        trial = [n for n in chosen if n != name]
        got = ok(trial, f"prune {name}")
        if got is not None:
            chosen, found = trial, got
    return found


def qdq_model_path(built: Built) -> Path | None:
    if built.bundle is None or built.manifest is None:
        return None
    return built.bundle / built.manifest.engine.artifact
