"""The team results store on a real PostgreSQL server started by the test suite: the same schema and API as
SQLite, a schema-1 table migrated in place, EDGEIFY_RESULTS_URL and the config entry, a real bench writing to it,
and several processes writing at once with nothing lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _kit import run_cli
from _pg import PgServer, postgres_server
from edgeify.results import open_store
from edgeify.store import schema
from test_store import V1_STATS, WRITER, make_result

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    with postgres_server() as server:
        yield server


def _new_db(pg: PgServer, name: str) -> str:
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={pg.port} user={pg.user} dbname={pg.database}",
                         autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')  # a test-chosen identifier
    return f"postgresql://{pg.user}@127.0.0.1:{pg.port}/{name}"


def test_round_trip_filters_and_tags_on_postgres(pg: PgServer) -> None:
    url = _new_db(pg, "roundtrip")
    with open_store(url) as store:
        assert store.dialect == "postgresql" and store.schema_version() == schema.SCHEMA_VERSION
        original = make_result(3)
        rid = store.add(original)
        got = store.get(rid)
        for name in ("bundle_digest", "device", "latency_ms", "protocol", "fingerprint", "fallback", "budget",
                     "profile", "warnings", "run_id", "samples_ms"):
            assert getattr(got, name) == getattr(original, name), name
        other = store.add(make_result(4, device="jetson"))
        assert [r.result_id for r in store.query(device="jetson")] == [other]
        assert [r.result_id for r in store.query(bundle="0303")] == [rid]
        store.tag("baseline-main", [rid])
        store.tag("baseline-main", [other])
        assert store.tagged("baseline-main") == [other]


def test_a_schema_1_table_on_postgres_migrates_in_place(pg: PgServer) -> None:
    import psycopg

    url = _new_db(pg, "old")
    with psycopg.connect(f"host=127.0.0.1 port={pg.port} user={pg.user} dbname=old", autocommit=True) as con:
        con.execute("""CREATE TABLE benchmarks (id SERIAL PRIMARY KEY, created_at TEXT NOT NULL, device TEXT NOT NULL,
            target TEXT, engine TEXT, engine_version TEXT, precision TEXT, bundle_digest TEXT NOT NULL, bundle TEXT,
            threads INTEGER, p50_ms REAL, p90_ms REAL, p95_ms REAL, p99_ms REAL, mean_ms REAL, throughput_ips REAL,
            load_ms REAL, peak_rss_mb REAL, protocol TEXT NOT NULL, fingerprint TEXT NOT NULL, stats TEXT NOT NULL,
            samples TEXT NOT NULL)""")
        con.execute("INSERT INTO benchmarks (created_at, device, bundle_digest, protocol, fingerprint, stats, samples)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    ("2026-12-01T21:12:04+00:00", "emu-arm64", V1_STATS["bundle_digest"],
                     json.dumps(V1_STATS["protocol"]), json.dumps({"arch": "aarch64"}), json.dumps(V1_STATS),
                     json.dumps([0.5, 0.6])))
    with open_store(url) as store:
        assert store.migrated_from == 1 and store.schema_version() == schema.SCHEMA_VERSION
        old = store.get(1)
        assert old.device == "emu-arm64" and old.samples_ms == (0.5, 0.6) and old.latency_ms.p95 == 0.8963
        assert store.add(make_result(1)) == 2


def test_many_processes_write_to_postgres_at_once(pg: PgServer) -> None:
    url = _new_db(pg, "concurrent")  # a new database: the writers also race to create the schema
    procs, per = 6, 25
    running = [subprocess.Popen([sys.executable, "-c", WRITER, url, str(w), str(per)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for w in range(procs)]
    for p in running:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0 and out.strip() == "done", err
    with open_store(url) as store:
        rows = store.query(limit=None, samples=False)
        assert len(rows) == procs * per and len({r.result_id for r in rows}) == procs * per
        assert {r.run_id for r in rows} == {f"{w}:{i}" for w in range(procs) for i in range(per)}
        assert store.get(rows[0].result_id).samples_ms == (float(per - 1),) * 200
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={pg.port} user={pg.user} dbname=concurrent") as con:
        assert con.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 1  # migrated exactly once


def test_bench_writes_to_the_store_named_by_url_or_config(pg: PgServer, tiny_onnx: Path, tmp_path: Path) -> None:
    url = _new_db(pg, "team")
    out = tmp_path / "tiny"
    assert run_cli("build", str(tiny_onnx), "--target", "x86", "-o", str(out), "--no-latency").returncode == 0
    env = {"EDGEIFY_RESULTS_URL": url.replace(f"{pg.user}@", f"{pg.user}:hunter2@")}  # trust auth ignores it
    res = run_cli("bench", str(out), "--min-duration", "0.05", "--format", "json", env=env)
    assert res.returncode == 0, res.stderr
    rid = json.loads(res.stdout)["result_id"]
    listed = run_cli("results", "--format", "json", env=env)
    doc = json.loads(listed.stdout)
    assert [r["result_id"] for r in doc["results"]] == [rid]
    assert "hunter2" not in listed.stdout + listed.stderr and doc["store"].startswith("postgresql")
    # the config entry: [results] url in config.toml (EDGEIFY_HOME/config)
    home = Path(os.environ["EDGEIFY_HOME"])
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "config" / "config.toml").write_text(f'[results]\nurl = "{url}"\n')
    try:
        via_config = run_cli("results", "show", str(rid), "--format", "json",
                             env={"EDGEIFY_RESULTS_URL": "", "EDGEIFY_RESULTS_DB": str(tmp_path / "x.sqlite")})
        assert via_config.returncode == 0, via_config.stderr
        assert json.loads(via_config.stdout)["result_id"] == rid
    finally:
        (home / "config" / "config.toml").unlink()
    down = run_cli("results", env={"EDGEIFY_RESULTS_URL": f"postgresql://{pg.user}@127.0.0.1:1/none"})
    assert down.returncode == 4 and "fix:" in down.stderr and "Traceback" not in down.stderr
