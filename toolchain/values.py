"""The base of edgeify's host-side value objects: a frozen pydantic model that refuses unknown fields.

Target specs, matrix specs, optimize records, step search spaces and build requests derive from it, so "a typo
in a file is an error" and "a value never changes after it is made" hold the same way everywhere.

>>> class Point(Frozen):
...     x: int
>>> Point(x=1).model_copy(update={"x": 2}).x, Point.model_config["frozen"], Point.model_config["extra"]
(2, True, 'forbid')
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    """Frozen (hashable, immutable) and ``extra="forbid"``: an unknown field is a validation error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


__all__ = ["Frozen"]
