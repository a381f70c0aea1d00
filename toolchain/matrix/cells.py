"""Expand a matrix into cells (one build each) and order them so that shared work runs once.

One cell per model x target x precision (x engine when the matrix names engines), with the target's default
engine otherwise. A precision the target (or the named engine) lacks is a ``skipped`` cell, not an error.

Ordering (``plan``): the step cache shares a step's result between builds whose inputs, config and tools are
equal (rpi4/rpi5/android builds of one ONNX model share one onnx2tf conversion), but only once that result is in
the cache: two builds started together would both convert. So a model's first cell runs first; then the first
cell of each of the model's other pipelines (engine x step chain); then the rest of each pipeline. Cells of
different models never wait for each other.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..errors import ConfigError, TargetError
from .spec import MatrixModel, MatrixSpec


class Cell(BaseModel):
    """One build of the matrix. ``status`` is ``planned`` or ``skipped`` (with ``reason``) after expansion."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    target: str
    precision: str
    engine: str | None = None          # the engine the matrix named (None: the target's default)
    resolved_engine: str | None = None  # the engine the build uses
    status: Literal["planned", "skipped"] = "planned"
    reason: str | None = None
    pipeline_key: str = ""              # cells with equal keys run the same declared step chain

    @property
    def name(self) -> str:
        return f"{self.target}-{self.precision}" + (f"-{self.engine}" if self.engine else "")

    @property
    def id(self) -> str:
        return f"{self.model}/{self.name}"

    def out_dir(self, out: Path) -> Path:
        return out / self.model / self.name


def _pipeline_key(spec, engine_name: str) -> str:
    eng = spec.engines[engine_name]
    chain = [{"id": s.id, "uses": s.uses, "input": s.input, "where": s.where, "config": s.config}
             for s in eng.pipeline if s.where == "host"]
    payload = {"engine": engine_name, "format": eng.artifact_format, "chain": chain}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def expand(matrix: MatrixSpec, registry) -> list[Cell]:
    """All cells in matrix order (model, target, precision, engine). Unknown target names are a ConfigError."""
    cells: list[Cell] = []
    for model in matrix.models:
        targets, precisions, engines = matrix.lists_for(model)
        for tname in targets:
            try:
                spec, _ = registry.resolve(tname)
            except TargetError as exc:
                raise ConfigError(f"matrix file {matrix.source}: model {model.name!r}: {exc.message}",
                                  hint=exc.hint) from None
            for prec in precisions:
                for eng in (engines or (None,)):
                    cells.append(_cell(model, tname, spec, prec, eng))
    seen: dict[str, Cell] = {}
    for c in cells:
        if c.id in seen:  # e.g. a family alias and its default board both listed
            raise ConfigError(f"matrix file {matrix.source}: cell {c.id} appears twice",
                              hint="list each board once (a family name means its default board)")
        seen[c.id] = c
    return cells


def _cell(model: MatrixModel, tname: str, spec, precision: str, engine: str | None) -> Cell:
    base = {"model": model.name, "target": tname, "precision": precision, "engine": engine}
    try:
        eng_name, _ = spec.engine_for(precision, engine)
    except TargetError as exc:
        return Cell(**base, status="skipped", reason=exc.message)
    return Cell(**base, resolved_engine=eng_name, pipeline_key=_pipeline_key(spec, eng_name))


def plan(cells: list[Cell]) -> dict[str, frozenset[str]]:
    """For each planned cell id, the ids of the cells it waits for (see the module docstring)."""
    deps: dict[str, frozenset[str]] = {}
    first_of_model: dict[str, str] = {}
    first_of_pipeline: dict[tuple[str, str], str] = {}
    for c in cells:
        if c.status != "planned":
            continue
        model_first = first_of_model.setdefault(c.model, c.id)
        pipe_first = first_of_pipeline.setdefault((c.model, c.pipeline_key), c.id)
        if c.id == model_first:
            deps[c.id] = frozenset()
        elif c.id == pipe_first:
            deps[c.id] = frozenset({model_first})
        else:
            deps[c.id] = frozenset({model_first, pipe_first})
    return deps
