"""Latency statistics over raw samples (milliseconds)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PERCENTILES = (50, 90, 95, 99)


def summarize(samples_ms: Sequence[float]) -> dict[str, float | None]:
    """``{p50, p90, p95, p99, mean, std, min, max, cv}`` of the samples; every value None when there are none.

    Percentiles use linear interpolation between order statistics (numpy's default); ``std`` is the population
    standard deviation; ``cv`` = std / mean (the run-to-run noise, unitless).
    """
    keys = [f"p{p}" for p in PERCENTILES] + ["mean", "std", "min", "max", "cv"]
    if len(samples_ms) == 0:
        return dict.fromkeys(keys)
    a = np.asarray(samples_ms, dtype=np.float64)
    pct = np.percentile(a, PERCENTILES)
    mean = float(a.mean())
    std = float(a.std())
    out: dict[str, float | None] = {f"p{p}": float(pct[k]) for k, p in enumerate(PERCENTILES)}
    out.update(mean=mean, std=std, min=float(a.min()), max=float(a.max()),
               cv=std / mean if mean > 0 else None)
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in out.items()}
