"""The search space of an optimize run, derived from the target spec and the device's fingerprint.

Artifacts: every engine x precision the target offers (bf16 only where the CPU has bf16 arithmetic, static int8
only with calibration data). Recipes: what the engine's quantize step declares for the precision
(``Step.search_space``: speed recipes screened beside the default, alternates for the ladder); this module never
names a step kind. Settings: the run-time options that change speed (threads 1..physical cores,
ONNX Runtime graph optimization level and execution mode, OpenVINO performance hint, LiteRT threads).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from edgeify.errors import ConfigError
from edgeify.pipeline import step_class
from edgeify.steps.search import SearchRecipe, StepSearch
from edgeify_runtime.engines import create_adapter
from edgeify_runtime.fingerprint import fingerprint
from pydantic import Field

from ..values import Frozen as _Frozen
from .records import Recipe, Settings
from .settings import engine_option_names, tuning_axes

if TYPE_CHECKING:
    from edgeify.targets.spec import TargetSpec

#: CPU flags (``/proc/cpuinfo``) that mean bfloat16 arithmetic
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: precisions a search starts from; ``int8-mixed`` only comes from the ladder
SEARCH_PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int8-dynamic", "int16x8")
STATIC_PRECISIONS = ("int8", "int8-mixed", "int16x8")


class DeviceFacts(_Frozen):
    """What the search needs to know about the device (from its fingerprint)."""

    arch: str = ""
    cpu_model: str = ""
    flags: tuple[str, ...] = ()
    physical_cores: int = 1

    @classmethod
    def from_fingerprint(cls, fp: dict[str, Any] | None) -> DeviceFacts:
        cpu = (fp or {}).get("cpu") or {}
        return cls(arch=str((fp or {}).get("arch") or ""), cpu_model=str(cpu.get("model") or ""),
                   flags=tuple(cpu.get("flags") or ()), physical_cores=max(1, int(cpu.get("physical_cores") or 1)))

    @classmethod
    def local(cls) -> DeviceFacts:
        return cls.from_fingerprint(fingerprint())

    @property
    def has_bf16(self) -> bool:
        return any(f in self.flags for f in BF16_FLAGS)


class ArtifactPlan(_Frozen):
    """One artifact to build: engine, precision, recipe (the step config overrides)."""

    engine: str
    precision: str
    recipe: Recipe = Recipe()

    def key(self) -> str:
        return f"{self.engine}/{self.precision}/{self.recipe.name}"


class SearchSpace(_Frozen):
    target: str
    artifacts: tuple[ArtifactPlan, ...]
    skipped: tuple[str, ...] = Field(default=(), description="what was left out of the space, and why")
    settings: dict[str, tuple[Settings, ...]] = Field(description="run-time settings per engine runtime")

    def alternates(self, spec: TargetSpec, plan: ArtifactPlan) -> tuple[Recipe, ...]:
        return alternate_recipes(spec, plan.engine, plan.precision)


class QuantizeStep(_Frozen):
    """The step that decides ``precision``'s numerics on one engine, and what it offers to the search."""

    id: str
    kind: str
    config: dict[str, Any]
    search: StepSearch

    def recipe(self, r: SearchRecipe) -> Recipe:
        return Recipe(name=r.name, step=self.id, config=dict(r.config), float_layers=r.float_layers)


def quantize_step(spec: TargetSpec, engine: str, precision: str, *,
                  max_accuracy_drop: float | None = None) -> QuantizeStep | None:
    """The first step of ``engine``'s pipeline that runs for ``precision`` and declares a search space for it
    (``Step.search_space``); None when no step does."""

    for step in spec.engines[engine].pipeline:
        if step.precisions is not None and precision not in step.precisions:
            continue
        search = step_class(step.uses).search_space(dict(step.config), precision,
                                                    max_accuracy_drop=max_accuracy_drop)
        if search is not None:
            return QuantizeStep(id=step.id, kind=step.uses, config=dict(step.config), search=search)
    return None


def speed_recipes(spec: TargetSpec, engine: str, precision: str) -> tuple[Recipe, ...]:
    """Recipes that change speed, screened beside the default (e.g. ONNX Runtime int8: U8S8 vs S8S8)."""
    q = quantize_step(spec, engine, precision)
    return () if q is None else tuple(q.recipe(r) for r in q.search.speed)


def alternate_recipes(spec: TargetSpec, engine: str, precision: str) -> tuple[Recipe, ...]:
    """The ladder's "other recipes" rung for an artifact, most promising for accuracy first."""
    q = quantize_step(spec, engine, precision)
    return () if q is None else tuple(q.recipe(r) for r in q.search.alternates)


def ladder_only(spec: TargetSpec, engine: str, precision: str) -> bool:
    """True when ``precision`` on ``engine`` is only an accuracy rung of the ladder (its quantize step says so)."""
    q = quantize_step(spec, engine, precision)
    return q is not None and q.search.ladder_only


def settings_grid(runtime: str, cores: int, option_keys: frozenset[str]) -> tuple[Settings, ...]:
    """Run-time settings worth trying for ``runtime``; only options the installed adapter understands."""

    names = engine_option_names(runtime, option_keys)
    threads = tuple(range(cores, 0, -1))
    # the engine adapter's own tuning axes (EngineAdapter.tuning_axes)
    axes: list[tuple[str, tuple[Any, ...]]] = [(a.option, tuple(a.values)) for a in tuning_axes(runtime)
                                               if a.option in names]
    out = []
    for t in threads:
        for combo in itertools.product(*(vals for _, vals in axes)):
            out.append(Settings(threads=t, options={k: v for (k, _), v in zip(axes, combo, strict=True)}))
    return tuple(out)


def build_space(spec: TargetSpec, facts: DeviceFacts, *, has_calib: bool,
                engines: tuple[str, ...] | None = None, precisions: tuple[str, ...] | None = None) -> SearchSpace:
    """Every engine x precision (and speed recipe) the target offers on this device; settings per runtime."""

    arts: list[ArtifactPlan] = []
    skipped: list[str] = []
    for prec in SEARCH_PRECISIONS:
        if prec not in spec.precisions or (precisions and prec not in precisions):
            continue
        if prec == "bf16" and not facts.has_bf16:
            skipped.append(f"bf16: the CPU ({facts.cpu_model or 'unknown'}) has none of {', '.join(BF16_FLAGS)}")
            continue
        if prec in STATIC_PRECISIONS and not has_calib:
            skipped.append(f"{prec}: static quantization needs --calib")
            continue
        for name, eng in spec.engines.items():
            if prec not in eng.precisions or (engines and name not in engines):
                continue
            if not precisions and ladder_only(spec, name, prec):  # unless asked for by --precision
                skipped.append(f"{name} {prec}: only as a quantization-ladder rung (no fast kernels for it on this "
                               "engine)")
                continue
            arts.append(ArtifactPlan(engine=name, precision=prec))
            arts += [ArtifactPlan(engine=name, precision=prec, recipe=r) for r in speed_recipes(spec, name, prec)]
    grids: dict[str, tuple[Settings, ...]] = {}
    for eng in spec.engines.values():
        if eng.runtime in grids:
            continue
        try:
            keys = create_adapter(eng.runtime, None).option_keys
        except Exception:  # an engine this host has no adapter for: threads only
            keys = frozenset()
        grids[eng.runtime] = settings_grid(eng.runtime, facts.physical_cores, keys)
    return SearchSpace(target=spec.name, artifacts=tuple(arts), skipped=tuple(skipped), settings=grids)


def variant_spec(spec: TargetSpec, engine: str, recipe: Recipe) -> TargetSpec:
    """``spec`` with ``recipe``'s overrides applied to one step of ``engine``'s pipeline (name unchanged)."""
    if (not recipe.config and not recipe.float_layers) or recipe.step is None:
        return spec

    eng = spec.engines[engine]
    extra = dict(recipe.config)
    if recipe.float_layers:
        kind = next(s.uses for s in eng.pipeline if s.id == recipe.step)
        option = step_class(kind).float_layers_option
        if option is None:
            raise ConfigError(f"step {recipe.step!r} ({kind}) of {spec.name}.engines.{engine} cannot keep layers in "
                              f"float (recipe {recipe.name!r}): it declares no float_layers_option")
        extra[option] = list(recipe.float_layers)
    steps = tuple(s.model_copy(update={"config": {**s.config, **extra}}) if s.id == recipe.step else s
                  for s in eng.pipeline)
    return spec.model_copy(update={"engines": {**spec.engines, engine: eng.model_copy(update={"pipeline": steps})}})
