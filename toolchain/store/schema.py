"""One schema for the results store on SQLite and PostgreSQL (SQLAlchemy Core), with its version and migrations.

Version 1 is the store edgeify wrote before this module (one ``benchmarks`` table, no version table); version 2
adds the whole typed record (``stats`` holds ``BenchResult.to_dict()`` without samples), indexed filter columns
(``run_id``, ``model``, ``ok``, ``budget_met``), result tags and the ``schema_version`` table. ``migrate`` brings
any older store up to :data:`SCHEMA_VERSION` in place, inside one locked transaction, so several processes
opening a new or old store at once migrate it exactly once. A store written by a newer edgeify is refused.
"""

from __future__ import annotations

import json
from typing import Any

from edgeify_runtime.identity import manifest_identity
from edgeify_runtime.result import BenchResult
from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    inspect,
    select,
    text,
)

from .errors import StoreSchemaError

#: 1: the pre-versioned SQLite store; 2: full typed records, tags, schema_version; 3: ``bundle_id`` (the bundle's
#: identity: files, engine, precision and engine options) and ``series`` (interleaved repeated runs).
SCHEMA_VERSION = 3
#: arbitrary constant for PostgreSQL's advisory lock around migrations
_PG_LOCK_KEY = 0x0ED6E1F7

metadata = MetaData()

benchmarks = Table(
    "benchmarks", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", String(40), nullable=False),
    Column("device", String(200), nullable=False),
    Column("target", String(200)),
    Column("engine", String(100)),
    Column("engine_version", String(100)),
    Column("precision", String(40)),
    Column("bundle_digest", String(128), nullable=False),
    Column("bundle", Text),
    Column("threads", Integer),
    Column("p50_ms", Float), Column("p90_ms", Float), Column("p95_ms", Float), Column("p99_ms", Float),
    Column("mean_ms", Float),
    Column("throughput_ips", Float),
    Column("load_ms", Float),
    Column("peak_rss_mb", Float),
    Column("protocol", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    #: v2: the whole record as JSON (``BenchResult.to_dict()``, no samples); v1 rows are rewritten by migration
    Column("stats", Text, nullable=False),
    Column("samples", Text, nullable=False),
    # -- v2 --
    Column("run_id", String(200)),
    Column("model", Text),
    Column("ok", Boolean),
    Column("budget_met", Boolean),
    # -- v3 --
    Column("bundle_id", String(128)),
    Column("series", String(200)),
    sqlite_autoincrement=True,
)
Index("benchmarks_device", benchmarks.c.device, benchmarks.c.created_at)
Index("benchmarks_digest", benchmarks.c.bundle_digest)
Index("benchmarks_target", benchmarks.c.target)
Index("benchmarks_run", benchmarks.c.run_id)
Index("benchmarks_created", benchmarks.c.created_at)
Index("benchmarks_bundle_id", benchmarks.c.bundle_id)
Index("benchmarks_series", benchmarks.c.series)

tags = Table(
    "tags", metadata,
    Column("name", String(200), primary_key=True),
    Column("result_id", Integer, ForeignKey("benchmarks.id"), primary_key=True),
    Column("created_at", String(40), nullable=False),
)

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, nullable=False),
    Column("migrated_at", String(40)),
)

#: columns added by version 2 to a version-1 ``benchmarks`` table
_V2_COLUMNS = ("run_id", "model", "ok", "budget_met")
_V2_INDEXES = ("benchmarks_target", "benchmarks_run", "benchmarks_created")
_V3_COLUMNS = ("bundle_id", "series")
_V3_INDEXES = ("benchmarks_bundle_id", "benchmarks_series")


def _lock(con: Connection) -> None:
    """Serialize migrations between processes (SQLite: the caller's BEGIN IMMEDIATE already does)."""
    if con.dialect.name == "postgresql":
        con.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})


def current_version(con: Connection) -> int:
    """0: empty database; 1: the pre-versioned store; n: what ``schema_version`` says."""
    names = set(inspect(con).get_table_names())
    if "schema_version" in names:
        return int(con.execute(select(func.max(schema_version.c.version))).scalar() or 0)
    return 1 if "benchmarks" in names else 0


def migrate(con: Connection, *, now: str) -> tuple[int, int]:
    """Bring the store to :data:`SCHEMA_VERSION` inside the caller's transaction; return (from, to)."""

    _lock(con)
    found = current_version(con)
    if found > SCHEMA_VERSION:
        raise StoreSchemaError(f"the results store has schema version {found}; this edgeify reads up to "
                               f"{SCHEMA_VERSION}")
    if found == SCHEMA_VERSION:
        return found, found
    if found == 0:
        metadata.create_all(con)
    else:
        if found < 2:
            _v1_to_v2(con)
            tags.create(con, checkfirst=True)
            schema_version.create(con, checkfirst=True)
        _v2_to_v3(con)
    con.execute(schema_version.insert().values(version=SCHEMA_VERSION, migrated_at=now))
    return found, SCHEMA_VERSION


def _add_columns(con: Connection, names: tuple[str, ...], index_names: tuple[str, ...]) -> None:
    have = {c["name"] for c in inspect(con).get_columns("benchmarks")}
    for name in names:
        if name not in have:
            col = benchmarks.c[name]
            ddl = col.type.compile(dialect=con.dialect)
            con.execute(text(f'ALTER TABLE benchmarks ADD COLUMN "{name}" {ddl}'))  # name from _V*_COLUMNS
    indexes = {i["name"] for i in inspect(con).get_indexes("benchmarks")}
    for idx in benchmarks.indexes:
        if idx.name in index_names and idx.name not in indexes:
            idx.create(con)


def _v2_to_v3(con: Connection) -> None:
    """Add ``bundle_id`` and ``series``; fill ``bundle_id`` where the result's bundle directory is still here and
    still holds the same files (its manifest gives the options); elsewhere it stays null (identity unknown)."""
    from pathlib import Path

    _add_columns(con, _V3_COLUMNS, _V3_INDEXES)
    rows = con.execute(select(benchmarks.c.id, benchmarks.c.bundle, benchmarks.c.bundle_digest)).all()
    for row in rows:
        try:
            raw = json.loads((Path(row.bundle) / "manifest.json").read_text(encoding="utf-8")) if row.bundle else None
        except (OSError, ValueError):
            raw = None
        if isinstance(raw, dict) and raw.get("bundle_digest") == row.bundle_digest:
            con.execute(benchmarks.update().where(benchmarks.c.id == row.id).values(
                bundle_id=manifest_identity(raw)))


def _v1_to_v2(con: Connection) -> None:
    _add_columns(con, _V2_COLUMNS, _V2_INDEXES)
    rows = con.execute(select(benchmarks.c.id, benchmarks.c.stats, benchmarks.c.protocol, benchmarks.c.fingerprint,
                              benchmarks.c.device, benchmarks.c.bundle)).all()
    for row in rows:
        record = v1_record(row._mapping)
        con.execute(benchmarks.update().where(benchmarks.c.id == row.id).values(
            stats=json.dumps(record), ok=bool(record.get("ok", True))))


def v1_record(row: Any) -> dict[str, Any]:
    """A version-1 row as a version-2 record dict (``BenchResult.from_dict`` migrates the agent's v1 keys)."""

    raw = json.loads(row["stats"] or "{}")
    raw["protocol"] = json.loads(row["protocol"] or "{}") or raw.get("protocol") or {}
    raw["fingerprint"] = json.loads(row["fingerprint"] or "{}")
    raw["device"] = row["device"]
    if row["bundle"]:
        raw["bundle"] = row["bundle"]
    if isinstance(raw.get("temperatures_after_c"), list):  # v1 agents wrote [] when nothing was readable
        raw["temperatures_after_c"] = None
    return BenchResult.from_dict(raw).to_dict()
