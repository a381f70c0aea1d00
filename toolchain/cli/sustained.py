"""``edgeify bench --sustained DURATION``: the protocol of one long timed run, and its record (first vs last
seconds, p50 over time; ``edgeify.analysis.sustained``) added to the result and to the stored copy."""

from __future__ import annotations

import dataclasses
from typing import Any

from edgeify.analysis import sustained as S
from edgeify.results import open_store

#: the timed phase may run this much past the asked duration before the agent stops it (s)
SLACK_S = 30.0


def parse_sustained(text: str) -> float:
    return S.parse_duration(text)


def sustained_settings(settings: Any, seconds: float) -> Any:
    """Time for ``seconds`` (at least 1 run): min duration = the duration, max duration a little more."""
    return dataclasses.replace(settings, runs=1, min_duration_s=seconds, max_duration_s=seconds + SLACK_S)


def with_sustained(result: Any) -> Any:
    """The result with ``extra.sustained``; the stored result (when stored) gets it too."""
    record = S.summarize(result.samples_ms, result.protocol.timed_phase_s, result.device_state)
    result = result.replace(extra={**result.extra, "sustained": record})
    if result.result_id:
        with open_store() as store:
            store.annotate({int(result.result_id): {"sustained": record}})
    return result


def sustained_lines(record: dict[str, Any] | None) -> list[str]:
    return S.lines(record) if record else []


__all__ = ["parse_sustained", "sustained_lines", "sustained_settings", "with_sustained"]
