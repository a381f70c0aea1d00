"""The local results store: one SQLite row per benchmark run, with raw samples, protocol and fingerprint."""

from __future__ import annotations

import datetime as _dt
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS benchmarks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    device TEXT NOT NULL,
    target TEXT,
    engine TEXT,
    engine_version TEXT,
    precision TEXT,
    bundle_digest TEXT NOT NULL,
    bundle TEXT,
    threads INTEGER,
    p50_ms REAL, p90_ms REAL, p95_ms REAL, p99_ms REAL, mean_ms REAL,
    throughput_ips REAL,
    load_ms REAL,
    peak_rss_mb REAL,
    protocol TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    stats TEXT NOT NULL,
    samples TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS benchmarks_device ON benchmarks(device, created_at);
CREATE INDEX IF NOT EXISTS benchmarks_digest ON benchmarks(bundle_digest);
"""

SUMMARY_COLUMNS = ("id", "created_at", "device", "target", "engine", "engine_version", "precision",
                   "bundle_digest", "bundle", "threads", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms",
                   "throughput_ips", "load_ms", "peak_rss_mb")


class ResultsStore:
    """``ResultsStore(path)``; ``add(result, device=..., bundle=...)`` -> id; ``query(...)`` -> list of dicts."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30)
        try:
            con.row_factory = sqlite3.Row
            con.executescript(SCHEMA)
            with con:
                yield con
        finally:
            con.close()

    def add(self, result: dict[str, Any], *, device: str, bundle: str | None = None) -> int:
        lat = result["latency_ms"]
        engine = result.get("engine") or {}
        protocol = result.get("protocol") or {}
        row = {
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "device": device, "target": result.get("target"), "engine": engine.get("name"),
            "engine_version": engine.get("version"), "precision": result.get("precision"),
            "bundle_digest": result["bundle_digest"], "bundle": bundle, "threads": protocol.get("threads"),
            "p50_ms": lat.get("p50"), "p90_ms": lat.get("p90"), "p95_ms": lat.get("p95"), "p99_ms": lat.get("p99"),
            "mean_ms": lat.get("mean"), "throughput_ips": result.get("throughput_ips"),
            "load_ms": result.get("load_ms"), "peak_rss_mb": result.get("peak_rss_mb"),
            "protocol": json.dumps(protocol), "fingerprint": json.dumps(result.get("fingerprint") or {}),
            "stats": json.dumps({k: v for k, v in result.items() if k not in ("samples_ms", "fingerprint")}),
            "samples": json.dumps(result.get("samples_ms") or []),
        }
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._connect() as con:
            cur = con.execute(f"INSERT INTO benchmarks ({cols}) VALUES ({marks})", tuple(row.values()))
            return int(cur.lastrowid or 0)

    def query(self, *, device: str | None = None, target: str | None = None, bundle_digest: str | None = None,
              limit: int = 50, full: bool = False) -> list[dict[str, Any]]:
        where, args = [], []
        for col, val in (("device", device), ("target", target)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if bundle_digest:
            where.append("bundle_digest LIKE ?")
            args.append(bundle_digest + "%")
        cols = "*" if full else ", ".join(SUMMARY_COLUMNS)
        sql = f"SELECT {cols} FROM benchmarks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        if not self.path.exists():
            return []
        with self._connect() as con:
            rows = [dict(r) for r in con.execute(sql, args)]
        if full:
            for r in rows:
                for k in ("protocol", "fingerprint", "stats", "samples"):
                    r[k] = json.loads(r[k])
        return rows
