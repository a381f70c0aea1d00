"""The Open Inference Protocol (KServe v2) over REST: health, metadata and infer, through the same batcher."""

from __future__ import annotations

from typing import Any, Callable


def oip_routes(service: Any, bodies: Any, wrap: Callable[[str, Any], Any]) -> list[Any]:
    return []
