"""The results store's public entry (``from edgeify.results import open_store``); the code is in ``edgeify.store``.

``ResultsStore`` is the pre-typed API (dict in, dict rows out) kept for callers that have not moved to
``open_store().add(BenchResult)`` yet; it reads and writes the same store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .store import ResultNotFoundError, StoreError, StoreSchemaError, open_store, store_url

#: the summary keys of the old dict rows
SUMMARY_COLUMNS = ("id", "created_at", "device", "target", "engine", "engine_version", "precision",
                   "bundle_digest", "bundle", "threads", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms",
                   "throughput_ips", "load_ms", "peak_rss_mb")


def legacy_row(result: Any, *, full: bool = False) -> dict[str, Any]:
    """A typed result as the old ``results --format json`` row."""
    lat = result.latency_ms
    row: dict[str, Any] = {
        "id": result.result_id, "created_at": result.extra.get("stored_at") or result.started_at or "",
        "device": result.device, "target": result.target, "engine": result.engine.name,
        "engine_version": result.engine.version, "precision": result.precision,
        "bundle_digest": result.bundle_digest, "bundle": result.bundle, "threads": result.protocol.threads,
        "p50_ms": lat.p50, "p90_ms": lat.p90, "p95_ms": lat.p95, "p99_ms": lat.p99, "mean_ms": lat.mean,
        "throughput_ips": result.throughput_ips, "load_ms": result.load_ms, "peak_rss_mb": result.peak_rss_mb,
    }
    if full:
        d = result.to_dict()
        row.update(protocol=d["protocol"], fingerprint=d["fingerprint"], stats=d, samples=list(result.samples_ms))
    return row


class ResultsStore:
    """Deprecated: ``ResultsStore(path).add(dict, device=..., bundle=...)``; use :func:`open_store`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def add(self, result: dict[str, Any], *, device: str, bundle: str | None = None) -> int:
        from edgeify_runtime.result import BenchResult

        rec = BenchResult.from_dict({k: v for k, v in result.items() if k != "result_id"})
        rec = rec.replace(device=device, bundle=bundle if bundle is not None else rec.bundle)
        with open_store(self.path) as store:
            return store.add(rec)

    def query(self, *, device: str | None = None, target: str | None = None, bundle_digest: str | None = None,
              limit: int = 50, full: bool = False) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open_store(self.path) as store:
            found = store.query(device=device, target=target, bundle=bundle_digest, limit=limit, samples=full)
        return [legacy_row(r, full=full) for r in found]


__all__ = ["ResultNotFoundError", "ResultsStore", "StoreError", "StoreSchemaError", "legacy_row", "open_store",
           "store_url"]
