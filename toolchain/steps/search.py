"""What a step offers to ``edgeify optimize`` and the quantization ladder, per precision (as Olive passes declare
``search_defaults``). The search engine and the ladder enumerate these declarations; they never name a step kind.

A step that decides a precision's numerics (a quantize step) returns a ``StepSearch`` from
``Step.search_space(config, precision, ...)`` for each precision it handles; every other step returns None.

>>> s = StepSearch(speed=(SearchRecipe(name="fast", config={"a": 1}),))
>>> s.speed[0].name, s.mixed_by_layers
('fast', False)
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..values import Frozen as _Frozen


class SearchRecipe(_Frozen):
    """One point of a step's search space: overrides of the step's declared config."""

    name: str = Field(description="short label (shown in optimize tables and ladder rungs)")
    config: dict[str, Any] = Field(default_factory=dict, description="step config overrides")
    float_layers: tuple[str, ...] = Field(default=(), description="layers kept in float")


class StepSearch(_Frozen):
    """A quantize step's search space for one precision."""

    speed: tuple[SearchRecipe, ...] = Field(
        default=(), description="recipes that change speed: screened beside the default on every search")
    alternates: tuple[SearchRecipe, ...] = Field(
        default=(), description="the ladder's 'other recipes' rung, most promising for accuracy first")
    ladder_only: bool = Field(
        default=False, description="this precision is only an accuracy rung of the ladder (never a search "
                                   "candidate unless --precision asks for it): e.g. no fast kernels for it")
    mixed_by_layers: bool = Field(
        default=False, description="int8-mixed: keep the most sensitive layers in float, fewest first "
                                   "(the step's float_layers_option lists them)")
    mixed: SearchRecipe | None = Field(
        default=None, description="int8-mixed: one recipe that keeps accuracy itself (e.g. accuracy control)")
    keep_fp32_option: str | None = Field(
        default=None, description="fp16: the config key listing ops kept in fp32 (values that overflow fp16)")


__all__ = ["SearchRecipe", "StepSearch"]
