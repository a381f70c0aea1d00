"""Resolve a target's declared pipeline for one engine and precision into typed, ordered steps.

Step kinds are found through the entry-point group ``edgeify.steps`` (``edgeify.steps.registry``: built-in steps
register there like third-party ones); each declares a pydantic ``Config`` and the artifact formats it consumes
and produces, which ``resolve`` checks along the wiring (a mismatch is a ``ConfigError`` naming both steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from .errors import ConfigError
from .steps.base import SOURCE_MODEL
from .steps.registry import STEP_ENTRY_POINT_GROUP, step_class, step_table

if TYPE_CHECKING:
    from edgeify.targets.spec import EngineSpec, TargetSpec


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
    """Registry-time check: every step kind exists, every declared config validates, and for every precision the
    engine offers each step consumes the format its input step produces (the engine's ``artifact_format`` is
    checked when a build resolves the pipeline)."""
    for eng_name, eng in spec.engines.items():
        for ref in eng.pipeline:
            _validate_config(ref.uses, ref.config, f"{spec.source}: {spec.name}.engines.{eng_name}.{ref.id}")
        for precision in eng.precisions:
            _check_formats(spec, eng_name, eng, precision, _order(spec, eng_name, eng, precision), final=False)


def resolve(spec: TargetSpec, engine: str | None, precision: str) -> ResolvedPipeline:
    """Filter the engine's pipeline by precision, re-wire inputs past skipped steps, validate configs.

    Order is the declared dependency order (each step after its input), never list position alone. The last
    step that runs on the host must be a ``check`` (ConfigError otherwise): every bundle is validated.
    """
    eng_name, eng = spec.engine_for(precision, engine)
    return _resolve_engine(spec, eng_name, eng, precision)


def _resolve_engine(spec: TargetSpec, eng_name: str, eng: EngineSpec, precision: str) -> ResolvedPipeline:
    resolved = _order(spec, eng_name, eng, precision)
    _check_formats(spec, eng_name, eng, precision, resolved)
    return _check_shape(spec, eng_name, precision, resolved)


def _check_formats(spec: TargetSpec, eng_name: str, eng: EngineSpec, precision: str,
                   resolved: list[ResolvedStep], *, final: bool = True) -> None:
    """Each step must consume what its input step produces (the source model for the first): a ``ConfigError``
    names both steps otherwise. ``final`` (when a build resolves it): the last host step must also produce the
    engine's ``artifact_format``."""

    where = f"{spec.source or spec.name}: {spec.name}.engines.{eng_name} ({precision})"
    produced: dict[str | None, str] = {None: SOURCE_MODEL}
    kinds = {s.id: s.kind for s in resolved}
    for step in resolved:
        cls = step_class(step.kind)
        got = produced.get(step.input, SOURCE_MODEL)
        if not cls.accepts(got):
            src = "the source model" if step.input is None else f"step {step.input!r} ({kinds[step.input]})"
            raise ConfigError(f"{where}: step {step.id!r} ({step.kind}) consumes {', '.join(cls.consumes) or 'nothing'}"
                              f", but its input, {src}, produces {got!r}",
                              hint=f"wire {step.id!r} to a step that produces one of {list(cls.consumes)} "
                                   "(`edgeify targets show` lists each step's input)")
        produced[step.id] = cls.output_format(got)
    host = [s for s in resolved if s.where == "host"]
    if final and host and eng.artifact_format and produced[host[-1].id] != eng.artifact_format:
        last = host[-1]
        raise ConfigError(f"{where}: the last host step {last.id!r} ({last.kind}) produces {produced[last.id]!r}, "
                          f"but engine {eng_name!r} loads {eng.artifact_format!r} (its artifact_format)",
                          hint="end the pipeline with the step that writes the engine's format, or fix artifact_format")


def _order(spec: TargetSpec, eng_name: str, eng: EngineSpec, precision: str) -> list[ResolvedStep]:
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
    return resolved


def _check_shape(spec: TargetSpec, eng_name: str, precision: str, resolved: list[ResolvedStep]) -> ResolvedPipeline:
    sources = [s for s in resolved if s.input is None]
    if len(sources) != 1:
        raise ConfigError(f"{spec.name}.engines.{eng_name}: exactly one step must consume the source model "
                          f"for {precision}, found {[s.id for s in sources]}")
    host = [s for s in resolved if s.where == "host"]
    if not host or not step_class(host[-1].kind).validates:
        last = host[-1].id if host else None
        raise ConfigError(f"{spec.source or spec.name}: {spec.name}.engines.{eng_name} ({precision}) does not end in "
                          f"a `check` step (last host step: {last!r}); a bundle nobody checked against its source "
                          "model would deploy and benchmark as if it were valid",
                          hint=f'add {{ id = "check", uses = "check", input = "{last}" }} as the last host step '
                               "of the pipeline (see `edgeify targets show x86-cpu`)")
    return ResolvedPipeline(spec.name, eng_name, precision, tuple(resolved))


__all__ = ["STEP_ENTRY_POINT_GROUP", "ResolvedPipeline", "ResolvedStep", "resolve", "step_class", "step_table",
           "validate_spec_steps"]
