"""The results store on SQLAlchemy Core: the same code and schema for SQLite (default, WAL) and PostgreSQL.

Every row holds one whole :class:`~edgeify_runtime.result.BenchResult` (``stats``: the record without samples;
``samples``: the raw samples) plus indexed copies of what filters and tables need (device, target, bundle digest,
run id, percentiles, ...). Writers on SQLite take the write lock at ``BEGIN IMMEDIATE`` and wait up to
``busy_timeout`` for it, so many processes can add results at once without "database is locked".
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgeify_runtime.result import BenchResult
from sqlalchemy import Connection, Engine, create_engine, event, func, or_, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from . import schema as S
from .errors import ResultNotFoundError, StoreError, sqlite_error

#: how long a writer waits for SQLite's write lock before failing (ms)
SQLITE_BUSY_TIMEOUT_MS = 60_000


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _as_utc_text(since: _dt.datetime | str) -> str:
    if isinstance(since, str):
        since = _dt.datetime.fromisoformat(since)
    if since.tzinfo is None:
        since = since.replace(tzinfo=_dt.timezone.utc)
    return since.astimezone(_dt.timezone.utc).isoformat(timespec="seconds")


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_con: Any, _record: Any) -> None:
        dbapi_con.isolation_level = None  # let SQLAlchemy's "begin" event emit BEGIN (the documented recipe)
        cur = dbapi_con.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_MS)}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(con: Connection) -> None:
        con.exec_driver_sql("BEGIN IMMEDIATE" if con.get_execution_options().get("write") else "BEGIN")

    return engine


def model_name(result: BenchResult) -> str | None:
    """What the results table shows as the model: the source model's file from the bundle's manifest when the
    bundle is a local directory, else the bundle directory's name."""
    if result.extra.get("model"):
        return str(result.extra["model"])
    if not result.bundle:
        return None
    manifest = Path(result.bundle) / "manifest.json"
    try:
        source = json.loads(manifest.read_text(encoding="utf-8")).get("source") or {}
        if source.get("file"):
            return str(source["file"])
    except (OSError, ValueError, AttributeError):
        pass
    return Path(result.bundle).name or None


class ResultStore:
    """``open_store()`` makes one; ``add``/``get``/``query``/``tag``. Use as a context manager or ``close()``."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        #: for messages: the SQLite file, or the URL without its password
        self.location = (parsed.database or ":memory:") if self.dialect == "sqlite" else \
            parsed.render_as_string(hide_password=True)
        try:
            if self.dialect == "sqlite":
                if parsed.database:
                    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                self.engine = _sqlite_engine(url)
            else:
                self.engine = create_engine(url, pool_pre_ping=True)
        except (OSError, ImportError) as exc:
            if self.dialect == "sqlite" and isinstance(exc, OSError):
                raise sqlite_error(self.location, f"cannot open it: {exc}") from exc
            raise StoreError(f"cannot open the results store {self.location}: {exc}") from exc
        #: the schema version this open migrated from (None: it was current)
        self.migrated_from: int | None = None
        with self._tx() as con:
            current = S.current_version(con) == S.SCHEMA_VERSION
        if not current:
            with self._tx(write=True) as con:
                found, _ = S.migrate(con, now=_now())
            self.migrated_from = found if found != S.SCHEMA_VERSION else None

    # -- plumbing -----------------------------------------------------------------------------------------
    @contextmanager
    def _tx(self, *, write: bool = False) -> Iterator[Connection]:
        try:
            with self.engine.connect() as con:
                con = con.execution_options(write=write)
                with con.begin():
                    yield con
        except (OperationalError, DBAPIError) as exc:
            first = str(exc.orig if getattr(exc, "orig", None) is not None else exc).strip().splitlines()[0]
            if self.dialect == "sqlite":
                raise sqlite_error(self.location, first) from exc
            raise StoreError(f"results store {self.location}: {first}") from exc

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------------------
    def add(self, result: BenchResult) -> int:
        """Store the whole record (budget, fallback, profile, warnings, run_id, ...); return its id."""
        record = result.replace(result_id=None).to_dict()
        record.pop("sample_count", None)
        record["extra"].pop("stored_at", None)
        lat = result.latency_ms
        row = {
            "created_at": _now(), "device": result.device or "local", "target": result.target,
            "engine": result.engine.name, "engine_version": result.engine.version, "precision": result.precision,
            "bundle_digest": result.bundle_digest, "bundle": result.bundle, "threads": result.protocol.threads,
            "p50_ms": lat.p50, "p90_ms": lat.p90, "p95_ms": lat.p95, "p99_ms": lat.p99, "mean_ms": lat.mean,
            "throughput_ips": result.throughput_ips, "load_ms": result.load_ms, "peak_rss_mb": result.peak_rss_mb,
            "protocol": json.dumps(record["protocol"]), "fingerprint": json.dumps(record["fingerprint"]),
            "stats": json.dumps(record, default=str), "samples": json.dumps(list(result.samples_ms)),
            "run_id": result.run_id, "model": model_name(result), "ok": bool(result.ok),
            "budget_met": None if result.budget is None else bool(result.budget.met),
            "bundle_id": result.bundle_id, "series": (result.series or {}).get("id"),
        }
        with self._tx(write=True) as con:
            new_id = con.execute(S.benchmarks.insert().values(**row).returning(S.benchmarks.c.id)).scalar_one()
        return int(new_id)

    def annotate(self, extras: dict[int, dict[str, Any]]) -> int:
        """Merge ``extras[id]`` into each stored result's ``extra`` (e.g. what an optimize run learned after it
        was measured: its accuracy, chosen or not); ids the store does not hold are skipped. How many changed."""
        if not extras:
            return 0
        c = S.benchmarks.c
        changed = 0
        with self._tx(write=True) as con:
            for rid, stats in con.execute(select(c.id, c.stats).where(c.id.in_([int(i) for i in extras]))).all():
                raw = json.loads(stats)
                raw["extra"] = {**(raw.get("extra") or {}), **extras[int(rid)]}
                con.execute(S.benchmarks.update().where(c.id == rid).values(stats=json.dumps(raw, default=str)))
                changed += 1
        return changed

    def tag(self, name: str, ids: Iterable[int]) -> list[int]:
        """Name a result (or a set of results); tagging again moves the name to the new ids."""
        wanted = sorted(set(int(i) for i in ids))
        if not name or not wanted:
            raise ResultNotFoundError("a tag needs a name and at least one result id")
        with self._tx(write=True) as con:
            have = set(con.execute(select(S.benchmarks.c.id).where(S.benchmarks.c.id.in_(wanted))).scalars())
            missing = [i for i in wanted if i not in have]
            if missing:
                raise ResultNotFoundError(f"no result #{', #'.join(map(str, missing))} in {self.location}")
            con.execute(S.tags.delete().where(S.tags.c.name == name))
            now = _now()
            con.execute(S.tags.insert(), [{"name": name, "result_id": i, "created_at": now} for i in wanted])
        return wanted

    # -- reading ------------------------------------------------------------------------------------------
    @staticmethod
    def _result(row: Any, *, samples: bool = True) -> BenchResult:
        raw = json.loads(row.stats)
        if samples:
            raw["samples_ms"] = json.loads(row.samples)
        raw["result_id"] = int(row.id)
        raw.pop("sample_count", None)
        raw["extra"] = {**(raw.get("extra") or {}), "stored_at": row.created_at}  # when the store took it
        result = BenchResult.from_dict(raw)
        return result if result.device else result.replace(device=row.device)

    def _columns(self, samples: bool) -> list[Any]:
        cols = [S.benchmarks.c.id, S.benchmarks.c.stats, S.benchmarks.c.device, S.benchmarks.c.created_at]
        return [*cols, S.benchmarks.c.samples] if samples else cols

    def get(self, result_id: int, *, samples: bool = True) -> BenchResult:
        """One result by id; :class:`ResultNotFoundError` (exit 2) when the store does not hold it."""
        with self._tx() as con:
            row = con.execute(select(*self._columns(samples)).where(S.benchmarks.c.id == int(result_id))).first()
        if row is None:
            raise ResultNotFoundError(f"no result #{result_id} in {self.location}")
        return self._result(row, samples=samples)

    def _where(self, *, device: str | None = None, target: str | Sequence[str] | None = None,
               bundle: str | None = None, run_id: str | None = None, since: _dt.datetime | str | None = None,
               ids: Sequence[int] | None = None, model: str | None = None,
               series: str | None = None) -> list[Any]:
        c = S.benchmarks.c
        where: list[Any] = []
        if device is not None:
            where.append(c.device == device)
        if target is not None:
            where.append(c.target == target if isinstance(target, str) else c.target.in_(list(target)))
        if bundle:  # an identity (bundle_id) prefix, or a files digest prefix (every identity with those files)
            key = bundle.lower()
            where.append(or_(c.bundle_id.startswith(key, autoescape=True),
                             c.bundle_digest.startswith(key, autoescape=True)))
        if series is not None:
            where.append(c.series == series)
        if run_id is not None:
            where.append(c.run_id == run_id)
        if since is not None:
            where.append(c.created_at >= _as_utc_text(since))
        if ids is not None:
            where.append(c.id.in_([int(i) for i in ids]))
        if model is not None:
            where.append(c.model == model)
        return where

    def query(self, device: str | None = None, target: str | Sequence[str] | None = None,
              bundle: str | None = None, run_id: str | None = None, since: _dt.datetime | str | None = None,
              limit: int | None = 50, *, offset: int = 0, ids: Sequence[int] | None = None,
              model: str | None = None, samples: bool = True, oldest_first: bool = False,
              series: str | None = None) -> list[BenchResult]:
        """Results, newest first. ``bundle`` is a digest prefix; ``target`` a name or a list of names (a family's
        members); ``since`` a datetime or ISO time; ``samples=False`` skips the raw samples (fast lists)."""
        where = self._where(device=device, target=target, bundle=bundle, run_id=run_id, since=since, ids=ids,
                            model=model, series=series)
        order = S.benchmarks.c.id.asc() if oldest_first else S.benchmarks.c.id.desc()
        stmt = select(*self._columns(samples)).where(*where).order_by(order).offset(offset)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._tx() as con:
            rows = con.execute(stmt).all()
        return [self._result(r, samples=samples) for r in rows]

    def count(self, **filters: Any) -> int:
        with self._tx() as con:
            return int(con.execute(select(func.count()).select_from(S.benchmarks)
                                   .where(*self._where(**filters))).scalar_one())

    def series(self, **filters: Any) -> list[dict[str, Any]]:
        """Summary columns only (no JSON decoding), oldest first: what trend plots of thousands of results need."""
        c = S.benchmarks.c
        cols = (c.id, c.created_at, c.device, c.target, c.bundle_digest, c.bundle_id, c.model, c.precision, c.engine,
                c.threads, c.p50_ms, c.p95_ms, c.p99_ms, c.run_id)
        with self._tx() as con:
            rows = con.execute(select(*cols).where(*self._where(**filters)).order_by(c.id.asc())).all()
        return [dict(r._mapping) for r in rows]

    def distinct(self, column: str) -> list[str]:
        """Distinct non-empty values of a summary column (``device``, ``target``, ``bundle_digest``, ``model``)."""
        col = S.benchmarks.c[column]
        with self._tx() as con:
            return [v for v in con.execute(select(col).distinct().order_by(col)).scalars() if v]

    def tagged(self, name: str) -> list[int]:
        """The result ids a tag names (empty when the tag does not exist)."""
        with self._tx() as con:
            return [int(i) for i in con.execute(select(S.tags.c.result_id).where(S.tags.c.name == name)
                                                .order_by(S.tags.c.result_id)).scalars()]

    def tags(self, result_id: int | None = None) -> dict[str, list[int]]:
        stmt = select(S.tags.c.name, S.tags.c.result_id).order_by(S.tags.c.name, S.tags.c.result_id)
        if result_id is not None:
            stmt = stmt.where(S.tags.c.result_id == int(result_id))
        out: dict[str, list[int]] = {}
        with self._tx() as con:
            for name, rid in con.execute(stmt):
                out.setdefault(name, []).append(int(rid))
        return out

    def schema_version(self) -> int:
        with self._tx() as con:
            return S.current_version(con)


def sqlite_url(path: str | os.PathLike[str]) -> str:
    return f"sqlite:///{Path(path)}"


__all__ = ["ResultStore", "model_name", "sqlite_url"]
