"""One typed build request: everything a build is asked to do, in one frozen value.

``edgeify.build(model, target=..., out=..., ...)`` builds one from its keywords; ``edgeify.build(request)`` takes
one directly. The request travels to every step as ``ctx.request``, so a step that needs a new input (training
data, a teacher model, a pruning target) reads it from the request — ``ctx.request.data.train``,
``ctx.request.step_options("prune")`` — and ``build()``'s signature does not change again.

>>> r = BuildRequest(model="m.onnx", target="x86", out="build/m", precision="int8",
...                  data=DataSets(calibration="calib.npz", train="train.npz"),
...                  options={"prune": {"sparsity": 0.5}})
>>> r.data.train, r.step_options("prune")["sparsity"], r.step_options("distill")
('train.npz', 0.5, {})
>>> r.model_copy(update={"precision": "fp32"}).precision
'fp32'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from .values import Frozen as _Frozen  # frozen, extra="forbid" (``target: Any`` takes a TargetSpec as it is)


class DataSets(_Frozen):
    """The data files a build may use (``.npz``, ``.npy`` or an image folder; see ``edgeify.data``)."""

    calibration: str | None = Field(default=None, description="--calib: representative inputs (static int8)")
    evaluation: str | None = Field(default=None, description="--eval: labelled inputs (accuracy, the ladder)")
    train: str | None = Field(default=None, description="training data (compression steps: QAT, distillation)")
    preprocess: str | None = Field(default=None, description="--preprocess: the preprocessing spec for images")
    labels: str | None = Field(default=None, description="--labels: class names (else labels.txt by the model)")

    @field_validator("*", mode="before")
    @classmethod
    def _path(cls, v: Any) -> Any:
        return str(v) if isinstance(v, Path) else v

    def named(self) -> dict[str, str]:
        """The given data sets by name (what a step's ``uses_data`` refers to)."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class Budgets(_Frozen):
    """Limits the build must hold."""

    max_accuracy_drop: float | None = Field(default=None, description="percentage points of top-1 accuracy")


class BuildRequest(_Frozen):
    """What to build. ``target`` is a registered name (or an already-resolved ``TargetSpec``, e.g. a variant
    ``edgeify optimize`` derived). ``options`` are namespaced: ``{"<step kind>": {...}}`` for a step's run-time
    inputs; ``engine_options`` override the target's engine load options in the bundle's manifest."""

    model: str
    target: Any
    out: str | None = None
    precision: str = "fp32"
    engine: str | None = None
    data: DataSets = DataSets()
    budgets: Budgets = Budgets()
    input_shapes: tuple[str, ...] = ()
    target_files: tuple[str, ...] = ()
    io_dtype: str = "float32"
    trust_source: bool = False
    use_cache: bool = True
    measure_latency: bool = True
    engine_options: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("model", "out", mode="before")
    @classmethod
    def _path(cls, v: Any) -> Any:
        return str(v) if isinstance(v, Path) else v

    @field_validator("input_shapes", "target_files", mode="before")
    @classmethod
    def _tuple(cls, v: Any) -> Any:
        return () if v is None else tuple(v)

    def step_options(self, name: str) -> dict[str, Any]:
        """The options given for one step kind (or any other namespace); ``{}`` when none were."""
        return dict(self.options.get(name) or {})

    @property
    def max_accuracy_drop(self) -> float | None:
        return self.budgets.max_accuracy_drop


__all__ = ["Budgets", "BuildRequest", "DataSets"]
