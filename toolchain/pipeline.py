"""Resolve a target's declared pipeline for one engine and precision into typed, ordered steps.

Step kinds live in ``edgeify.steps``; each declares a pydantic ``Config``. The mapping below is static and
imported lazily (no mutable global registry); third-party kinds come from the entry-point group
``edgeify.steps`` (value: ``module:Class``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from .errors import ConfigError

if TYPE_CHECKING:
    from edgeify.steps.base import Step
    from edgeify.targets.spec import EngineSpec, TargetSpec

BUILTIN_STEPS: dict[str, str] = {
    "onnx-export": "edgeify.steps.onnx_export:OnnxExport",
    "onnx-optimize": "edgeify.steps.onnx_optimize:OnnxOptimize",
    "ort-quantize": "edgeify.steps.ort_quantize:OrtQuantize",
    "openvino-convert": "edgeify.steps.openvino_convert:OpenVinoConvert",
    "nncf-quantize": "edgeify.steps.nncf_quantize:NncfQuantize",
    "tflite-convert": "edgeify.steps.tflite_convert:TfliteConvert",
    "tflite-quantize": "edgeify.steps.tflite_quantize:TfliteQuantize",
    "check": "edgeify.steps.check:Check",
    "tensorrt-engine": "edgeify.steps.tensorrt_engine:TensorRTEngine",
}
STEP_ENTRY_POINT_GROUP = "edgeify.steps"


@cache
def _step_table() -> dict[str, str]:
    from importlib.metadata import entry_points

    table = dict(BUILTIN_STEPS)
    for ep in entry_points(group=STEP_ENTRY_POINT_GROUP):
        if ep.name in table:
            raise ConfigError(f"step kind {ep.name!r} from entry point {ep.value} is already defined "
                              f"by {table[ep.name]}")
        table[ep.name] = ep.value
    return table


@cache
def step_class(kind: str) -> type[Step]:
    table = _step_table()
    if kind not in table:
        import difflib

        close = difflib.get_close_matches(kind, list(table), n=1)
        raise ConfigError(f"unknown step kind {kind!r}",
                          hint=(f"did you mean {close[0]!r}? " if close else "") + f"known: {', '.join(table)}")
    module, _, attr = table[kind].partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class ResolvedStep:
    id: str
    kind: str
    input: str | None
    config: BaseModel
    where: str

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "uses": self.kind, "input": self.input, "where": self.where,
                "config": self.config.model_dump(mode="json")}


@dataclass(frozen=True)
class ResolvedPipeline:
    target: str
    engine: str
    precision: str
    steps: tuple[ResolvedStep, ...]

    def describe(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.steps]


def _validate_config(kind: str, config: dict[str, Any], where: str) -> BaseModel:
    cls = step_class(kind)
    try:
        return cls.Config.model_validate(config)
    except ValidationError as exc:
        lines = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{where}: invalid config for step {kind!r}: {lines}") from None


def validate_spec_steps(spec: TargetSpec) -> None:
    """Registry-time check: every step kind exists and every declared config validates."""
    for eng_name, eng in spec.engines.items():
        for ref in eng.pipeline:
            _validate_config(ref.uses, ref.config, f"{spec.source}: {spec.name}.engines.{eng_name}.{ref.id}")


def resolve(spec: TargetSpec, engine: str | None, precision: str) -> ResolvedPipeline:
    """Filter the engine's pipeline by precision, re-wire inputs past skipped steps, validate configs.

    Order is the declared dependency order (each step after its input), never list position alone. The last
    step that runs on the host must be a ``check`` (ConfigError otherwise): every bundle is validated.
    """
    eng_name, eng = spec.engine_for(precision, engine)
    return _resolve_engine(spec, eng_name, eng, precision)


def _resolve_engine(spec: TargetSpec, eng_name: str, eng: EngineSpec, precision: str) -> ResolvedPipeline:
    by_id = {s.id: s for s in eng.pipeline}
    active = {s.id for s in eng.pipeline if s.precisions is None or precision in s.precisions}

    def effective_input(step_input: str | None) -> str | None:
        while step_input is not None and step_input not in active:
            step_input = by_id[step_input].input
        return step_input

    resolved: list[ResolvedStep] = []
    placed: set[str | None] = {None}
    pending = [s for s in eng.pipeline if s.id in active]
    while pending:
        progressed = False
        for ref in list(pending):
            inp = effective_input(ref.input)
            if inp in placed:
                cfg = _validate_config(ref.uses, ref.config, f"{spec.name}.engines.{eng_name}.{ref.id}")
                resolved.append(ResolvedStep(ref.id, ref.uses, inp, cfg, ref.where))
                placed.add(ref.id)
                pending.remove(ref)
                progressed = True
        if not progressed:  # unreachable after spec validation; kept as a guard
            raise ConfigError(f"{spec.name}.engines.{eng_name}: pipeline has a dependency cycle")
    sources = [s for s in resolved if s.input is None]
    if len(sources) != 1:
        raise ConfigError(f"{spec.name}.engines.{eng_name}: exactly one step must consume the source model "
                          f"for {precision}, found {[s.id for s in sources]}")
    host = [s for s in resolved if s.where == "host"]
    if not host or host[-1].kind != "check":
        last = host[-1].id if host else None
        raise ConfigError(f"{spec.source or spec.name}: {spec.name}.engines.{eng_name} ({precision}) does not end in "
                          f"a `check` step (last host step: {last!r}); a bundle nobody checked against its source "
                          "model would deploy and benchmark as if it were valid",
                          hint=f'add {{ id = "check", uses = "check", input = "{last}" }} as the last host step '
                               "of the pipeline (see `edgeify targets show x86-cpu`)")
    return ResolvedPipeline(spec.name, eng_name, precision, tuple(resolved))
