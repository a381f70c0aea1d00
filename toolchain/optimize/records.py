"""Typed records of an optimize run: budgets, candidates, ladder rungs, the chosen bundle and the whole result.

Frozen pydantic models; ``OptimizeResult.to_json()`` is the one JSON shape (``edgeify optimize --format json``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..values import Frozen as _Frozen

Objective = Literal["latency", "size", "accuracy"]
AccuracyMeasure = Literal["labels", "agreement"]
Status = Literal["measured", "screened", "skipped", "parity-failed", "accuracy-failed", "build-failed",
                 "bench-failed", "not-run"]


class Budgets(_Frozen):
    max_accuracy_drop: float | None = Field(default=None, description="percentage points")
    max_latency_ms: float | None = None
    percentile: str = "p50"
    max_time_s: float = 1800.0


class Settings(_Frozen):
    """Run-time settings of one engine. ``options`` are written to the winner's manifest ``engine.options``."""

    threads: int | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    def label(self) -> str:
        parts = [f"threads={self.threads}"] if self.threads else []
        parts += [f"{k}={v}" for k, v in sorted(self.options.items()) if k != "threads"]
        return " ".join(parts) or "defaults"


class Recipe(_Frozen):
    """How an artifact is quantized: overrides of the target's quantize step config, and the float layers."""

    name: str = "default"
    step: str | None = Field(default=None, description="pipeline step id the overrides apply to")
    config: dict[str, Any] = Field(default_factory=dict)
    float_layers: tuple[str, ...] = ()


class Accuracy(_Frozen):
    measure: AccuracyMeasure
    drop: float | None = Field(default=None, description="percentage points against the source model")
    source_accuracy: float | None = None
    built_accuracy: float | None = None
    top1_agreement: float | None = None
    cosine: float | None = None
    parity_passed: bool = True


class Candidate(_Frozen):
    """One row of the table: an artifact (engine, precision, recipe) measured with one set of settings."""

    engine: str
    precision: str
    recipe: Recipe = Recipe()
    settings: Settings = Settings()
    latency_ms: dict[str, float | None] | None = None
    screen_latency_ms: dict[str, float | None] | None = None
    accuracy_drop: float | None = None
    accuracy: Accuracy | None = None
    size_bytes: int | None = None
    quantized_ops: int | None = None
    total_ops: int | None = None
    meets_budget: bool = False
    status: Status = "not-run"
    reason: str = ""
    result_ids: tuple[int, ...] = ()
    node: dict[str, Any] | None = Field(default=None, description="the Ray node that built the artifact (id, ip, "
                                        "host, pid) with --executor ray; None: built in this process")
    compression: dict[str, Any] | None = Field(default=None, description="optimize --compress: phases, prune_ratio, "
                                               "macs, distilled, qat, accuracy against the original, on_front; "
                                               "None: not compressed")
    bundle: str | None = Field(default=None, exclude=True)

    def key(self) -> str:
        return f"{self.engine}/{self.precision}/{self.recipe.name}/{self.settings.label()}"

    def latency(self, percentile: str) -> float | None:
        lat = self.latency_ms or self.screen_latency_ms
        return None if lat is None else lat.get(percentile)

    def row(self) -> dict[str, Any]:
        d = self.model_dump(mode="json", exclude={"bundle", "screen_latency_ms"})
        d["latency_ms"] = self.latency_ms or self.screen_latency_ms  # the full protocol's, else the screening's
        d["latency_protocol"] = "full" if self.latency_ms else ("screen" if self.screen_latency_ms else None)
        d["recipe"] = self.recipe.model_dump(mode="json")
        d["settings"] = {**({"threads": self.settings.threads} if self.settings.threads else {}),
                         **self.settings.options}
        return d


class Rung(_Frozen):
    """One rung of the quantization ladder, tried in order until the accuracy budget (and parity) held."""

    rung: str
    engine: str
    precision: str
    recipe: Recipe
    accuracy_drop: float | None = None
    parity_passed: bool = False
    cosine: float | None = None
    latency_p50_ms: float | None = None
    quantized_ops: int | None = None
    total_ops: int | None = None
    accepted: bool = False
    skipped: bool = Field(default=False, description="not measured: its build gave an artifact already tried")
    reason: str = ""
    float_modules: dict[str, str] = Field(default_factory=dict, description="each layer kept in float -> its source "
                                          "module ('blocks.2.conv (nn.Conv2d)'), where the source records modules")


class Chosen(_Frozen):
    bundle: str
    engine: str
    precision: str
    recipe: Recipe
    settings: dict[str, Any]
    latency_ms: dict[str, float | None]
    accuracy_drop: float | None
    size_bytes: int | None
    quantized_ops: int | None = None
    total_ops: int | None = None
    ladder: tuple[Rung, ...] = ()
    why: str = ""
    index: int
    compression: dict[str, Any] | None = None


class OptimizeResult(_Frozen):
    run_id: str
    objective: Objective
    budgets: Budgets
    target: str
    target_reason: str = ""
    device: str = "local"
    accuracy_measure: AccuracyMeasure
    chosen: Chosen | None
    candidates: tuple[Candidate, ...]
    pareto: tuple[int, ...]
    ladder: tuple[Rung, ...] = ()
    stopped: str = Field(default="", description="why the search stopped early (--max-time, Ctrl-C), if it did")
    wall_s: float = 0.0
    failure: Literal["accuracy", "latency"] | None = None
    confirm: dict[str, Any] | None = Field(default=None, description="the finalists re-measured in interleaved "
                                           "rounds before choosing (optimize.confirm); None: not run")

    def to_json(self) -> dict[str, Any]:
        out = self.model_dump(mode="json", exclude={"candidates", "chosen", "ladder"})
        out["candidates"] = [c.row() for c in self.candidates]
        out["chosen"] = None if self.chosen is None else {
            **self.chosen.model_dump(mode="json"), "ladder": [r.model_dump(mode="json") for r in self.chosen.ladder]}
        out["ladder"] = [r.model_dump(mode="json") for r in self.ladder]
        return out
