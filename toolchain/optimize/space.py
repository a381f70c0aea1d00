"""The search space of an optimize run, derived from the target spec and the device's fingerprint.

Artifacts: every engine x precision the target offers (bf16 only where the CPU has bf16 arithmetic, static int8
only with calibration data). Recipes: the quantization choices of the engine's quantize step (ONNX Runtime:
activation type, per-channel/per-tensor weights, calibration method, symmetric activations; NNCF: preset,
bias correction, model type). Settings: the run-time options that change speed (threads 1..physical cores,
ONNX Runtime graph optimization level and execution mode, OpenVINO performance hint, LiteRT threads).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from .records import Recipe, Settings

if TYPE_CHECKING:
    from edgeify.targets.spec import TargetSpec

#: CPU flags (``/proc/cpuinfo``) that mean bfloat16 arithmetic
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: precisions a search starts from; ``int8-mixed`` only comes from the ladder
SEARCH_PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int8-dynamic", "int16x8")
STATIC_PRECISIONS = ("int8", "int8-mixed", "int16x8")
#: (runtime, precision) left to the ladder: ONNX Runtime's CPU provider has no 16-bit kernels, it runs int16x8 as
#: float compute between 16-bit Q/DQ pairs (p50 about fp32's, weights int8-sized): only an accuracy rung
LADDER_ONLY = frozenset({("onnxruntime", "int16x8")})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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
        from edgeify_runtime.fingerprint import fingerprint

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


def quantize_step(spec: TargetSpec, engine: str, precision: str) -> tuple[str, str, dict[str, Any]] | None:
    """(step id, step kind, declared config) of the step that quantizes ``precision`` on ``engine``."""
    for step in spec.engines[engine].pipeline:
        if step.uses in ("ort-quantize", "nncf-quantize", "tflite-quantize") and (
                step.precisions is None or precision in step.precisions):
            return step.id, step.uses, dict(step.config)
    return None


def speed_recipes(spec: TargetSpec, engine: str, precision: str) -> tuple[Recipe, ...]:
    """Recipes that change speed, screened for every int8 artifact (ONNX Runtime: U8S8 vs S8S8)."""
    q = quantize_step(spec, engine, precision)
    if precision != "int8" or q is None or q[1] != "ort-quantize":
        return ()
    sid, _, cfg = q
    act = cfg.get("activation_type", "uint8")
    other = "int8" if act == "uint8" else "uint8"
    over: dict[str, Any] = {"activation_type": other}
    if other == "int8":
        over["reduce_range"] = False
    if cfg.get("symmetric_activations"):  # symmetric means int8 activations (TensorRT): no U8 variant there
        return ()
    return (Recipe(name=f"{'u8s8' if other == 'uint8' else 's8s8'}", step=sid, config=over),)


def alternate_recipes(spec: TargetSpec, engine: str, precision: str) -> tuple[Recipe, ...]:
    """The ladder's "other recipes" rung for an int8 artifact, most promising for accuracy first."""
    q = quantize_step(spec, engine, precision)
    if q is None or precision not in ("int8", "int8-mixed"):
        return ()
    sid, kind, cfg = q
    out: list[Recipe] = []
    if kind == "ort-quantize":
        method = cfg.get("calibration_method", "minmax")
        for m in ("entropy", "percentile", "minmax"):
            if m != method:
                out.append(Recipe(name=f"calib-{m}", step=sid, config={"calibration_method": m}))
        if cfg.get("per_channel", True) is False:
            out.append(Recipe(name="per-channel", step=sid, config={"per_channel": True}))
        if not cfg.get("symmetric_activations") and cfg.get("activation_type", "uint8") == "int8":
            out.append(Recipe(name="symmetric-act", step=sid, config={"symmetric_activations": True}))
        if cfg.get("activation_type", "uint8") == "uint8" and not cfg.get("reduce_range"):
            out.append(Recipe(name="reduce-range", step=sid, config={"reduce_range": True}))
    elif kind == "nncf-quantize":
        out.append(Recipe(name="bias-correction", step=sid, config={"fast_bias_correction": False}))
        if cfg.get("preset", "performance") == "performance":
            out.append(Recipe(name="preset-mixed", step=sid, config={"preset": "mixed"}))
        out.append(Recipe(name="model-type-transformer", step=sid, config={"model_type": "transformer"}))
    return tuple(out)


def settings_grid(runtime: str, cores: int, option_keys: frozenset[str]) -> tuple[Settings, ...]:
    """Run-time settings worth trying for ``runtime``; only options the installed adapter understands."""
    from .settings import engine_option_names

    names = engine_option_names(runtime, option_keys)
    threads = tuple(range(cores, 0, -1))
    axes: list[tuple[str, tuple[Any, ...]]] = []
    if runtime == "onnxruntime":
        if "graph_optimization_level" in names:
            axes.append(("graph_optimization_level", ("all", "extended")))
        if "execution_mode" in names:
            axes.append(("execution_mode", ("sequential", "parallel")))
    elif runtime == "openvino" and "performance_hint" in names:
        axes.append(("performance_hint", ("LATENCY", "THROUGHPUT")))
    out = []
    for t in threads:
        for combo in itertools.product(*(vals for _, vals in axes)):
            out.append(Settings(threads=t, options={k: v for (k, _), v in zip(axes, combo, strict=True)}))
    return tuple(out)


def build_space(spec: TargetSpec, facts: DeviceFacts, *, has_calib: bool,
                engines: tuple[str, ...] | None = None, precisions: tuple[str, ...] | None = None) -> SearchSpace:
    """Every engine x precision (and speed recipe) the target offers on this device; settings per runtime."""
    from edgeify_runtime.engines import create_adapter

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
            if (eng.runtime, prec) in LADDER_ONLY and not precisions:  # unless asked for by --precision
                skipped.append(f"{name} {prec}: only as a quantization-ladder rung (no 16-bit kernels on this engine)")
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
        extra["nodes_to_exclude" if kind == "ort-quantize" else "ignored_layers"] = list(recipe.float_layers)
    steps = tuple(s.model_copy(update={"config": {**s.config, **extra}}) if s.id == recipe.step else s
                  for s in eng.pipeline)
    return spec.model_copy(update={"engines": {**spec.engines, engine: eng.model_copy(update={"pipeline": steps})}})
