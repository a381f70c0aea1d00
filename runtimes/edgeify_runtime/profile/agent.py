"""The benchmark agent's ``profile`` request field: ``true`` (``DEFAULT_RUNS`` profiled runs) or a run count.

The agent calls :func:`profile_for_agent` after it closed the model it timed, so the profile runs in its own
session, after the latency samples.
"""

from __future__ import annotations

from typing import Any, Mapping

from . import DEFAULT_RUNS, profile_bundle


def profile_runs(value: Any) -> int | None:
    """The number of profiled runs a request's ``profile`` asks for (None: no profile); ValueError if invalid."""
    if value is None or value is False:
        return None
    if value is True:
        return DEFAULT_RUNS
    if isinstance(value, int) and value >= 1:
        return value
    raise ValueError(f"request field 'profile' must be true, false, null or a run count >= 1, not {value!r}")


def profile_for_agent(req: Any, feeds: Mapping[str, Any], threads: int, p50_ms: float | None) -> dict[str, Any]:
    runs = profile_runs(req.profile)
    assert runs is not None  # the agent calls this only when asked
    prof = profile_bundle(req.bundle, feeds=feeds, threads=threads, options=req.options, runs=runs,
                          p50_ms=p50_ms, timeout_s=float(req.max_duration_s) + 60)
    return prof.to_dict()
