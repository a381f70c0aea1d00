"""The results store on SQLite: whole typed records in and out, filters, tags, WAL, many writers at once, and the
pre-versioned store (schema 1) migrated in place."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from edgeify.results import ResultNotFoundError, open_store
from edgeify.store import schema
from edgeify_runtime.result import BenchResult, Budget, EngineInfo, Fallback, Latency, Protocol


def make_result(i: int = 0, **over) -> BenchResult:
    base = BenchResult(
        bundle_digest=over.pop("digest", f"{i:02x}" * 32), device="pi5", bundle=f"/b/m{i}", target="x86-avx2",
        precision="int8", engine=EngineInfo(name="openvino", version="2026.4.1"),
        latency_ms=Latency(p50=1.0 + i, p90=1.5 + i, p95=2.0 + i, p99=3.0 + i, mean=1.2 + i),
        samples_ms=tuple(1.0 + i + k / 100 for k in range(50)),
        protocol=Protocol(warmup=5, runs=50, runs_done=50, threads=2),
        fingerprint={"arch": "x86_64", "cpu": "Intel Xeon"},
        fallback=Fallback(used=True, requested=("TensorrtExecutionProvider",), active=("CPUExecutionProvider",),
                          reason="no CUDA"),
        budget=Budget(percentile="p95", max_ms=2.5, value_ms=2.0 + i, met=2.0 + i <= 2.5),
        profile={"ops": [{"name": "conv", "ms": 0.4}]}, warnings=("p99 from few samples",), run_id="run-7",
        extra={"parity": {"max_abs": 0.01}},
    )
    return base.replace(**over)


def test_add_get_round_trip_keeps_the_whole_record(tmp_path: Path) -> None:
    with open_store(tmp_path / "r.sqlite") as store:
        original = make_result(1)
        rid = store.add(original)
        got = store.get(rid)
        assert got.result_id == rid
        assert got.samples_ms == original.samples_ms
        for name in ("bundle_digest", "device", "bundle", "target", "precision", "engine", "latency_ms",
                     "protocol", "fingerprint", "fallback", "budget", "profile", "warnings", "run_id"):
            assert getattr(got, name) == getattr(original, name), name
        assert got.extra["parity"] == {"max_abs": 0.01} and got.extra["stored_at"]
        assert "sample_count" not in got.extra
        assert store.get(rid, samples=False).samples_ms == ()
        with pytest.raises(ResultNotFoundError) as err:
            store.get(rid + 100)
        assert err.value.exit_code == 2 and f"#{rid + 100}" in err.value.message


def test_query_filters_and_tags(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path}/r.sqlite") as store:
        ids = [store.add(make_result(i, device="pi5" if i % 2 else "jetson", run_id=f"run-{i % 3}",
                                     target="x86-avx512" if i == 4 else "x86-avx2")) for i in range(6)]
        assert [r.result_id for r in store.query()] == ids[::-1]  # newest first
        assert [r.result_id for r in store.query(device="pi5")] == [ids[5], ids[3], ids[1]]
        assert [r.result_id for r in store.query(target="x86-avx512")] == [ids[4]]
        assert len(store.query(target=["x86-avx512", "x86-avx2"])) == 6
        assert [r.result_id for r in store.query(bundle="0303")] == [ids[3]]
        assert [r.result_id for r in store.query(run_id="run-1")] == [ids[4], ids[1]]
        assert store.query(since="2999-01-01") == [] and len(store.query(since="2000-01-01T00:00:00")) == 6
        assert len(store.query(limit=2)) == 2 and store.count(device="jetson") == 3
        assert store.distinct("device") == ["jetson", "pi5"]
        assert store.tag("baseline", [ids[0], ids[1]]) == [ids[0], ids[1]]
        assert store.tagged("baseline") == [ids[0], ids[1]]
        store.tag("baseline", [ids[2]])  # tagging again moves the tag
        assert store.tagged("baseline") == [ids[2]] and store.tags(ids[0]) == {}
        with pytest.raises(ResultNotFoundError):
            store.tag("x", [999])
        assert store.tagged("baseline") == [ids[2]]  # a failed tag changes nothing


WRITER = textwrap.dedent("""
    import sys
    from edgeify_runtime.result import BenchResult, Latency
    from edgeify.results import open_store
    path, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with open_store(path) as store:
        for i in range(n):
            store.add(BenchResult(bundle_digest="cd" * 32, device=f"w{worker}", run_id=f"{worker}:{i}",
                                  latency_ms=Latency(p50=float(i)), samples_ms=(float(i),) * 200))
    print("done")
""")


def test_many_processes_write_at_once_nothing_lost(tmp_path: Path) -> None:
    """8 processes x 25 results into one new SQLite file at once: 200 rows, no 'database is locked'."""
    db = tmp_path / "shared.sqlite"
    procs, per = 8, 25
    running = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(w), str(per)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(procs)]
    for p in running:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0 and out.strip() == "done", err
        assert "locked" not in err
    with open_store(db) as store:
        rows = store.query(limit=None, samples=False)
        assert len(rows) == procs * per
        assert {r.run_id for r in rows} == {f"{w}:{i}" for w in range(procs) for i in range(per)}
        assert len({r.result_id for r in rows}) == procs * per
        assert store.schema_version() == schema.SCHEMA_VERSION
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 1  # migrated exactly once
    con.close()


# The store as edgeify wrote it before schema versions (toolchain/results.py at commit 23cd123), verbatim.
V1_SCHEMA = """
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
V1_STATS = {  # what the agent printed then (a real row from the arm64 test), minus samples and fingerprint
    "ok": True, "agent_version": "0.1.0", "started_at": "2026-12-01T21:12:01Z",
    "bundle": "/opt/edgeify/bundles/tiny/current", "bundle_digest": "4692" + "0" * 60, "target": "rpi5",
    "precision": "fp32", "engine": {"name": "onnxruntime", "version": "1.32.0", "module": "onnxruntime",
                                    "accelerator": "CPUExecutionProvider"},
    "protocol": {"warmup": 2, "warmup_done": 2, "runs": 10, "runs_done": 10, "threads": 1, "batch": 1},
    "verify_ms": 2.07, "load_ms": 629.2, "first_inference_ms": 32.1,
    "latency_ms": {"p50": 0.2755, "p90": 0.5064, "p95": 0.8963, "p99": 1.2083, "mean": 0.3703},
    "throughput_ips": 2700.4, "peak_rss_mb": 175.2, "temperatures_after_c": [], "duration_s": 2.4,
    "device": "emu-arm64", "deploy": {"status": "installed", "uploaded_bytes": 5518},
    "parity": {"max_abs": 0.0},
}


def test_a_schema_1_store_migrates_in_place(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    con.executescript(V1_SCHEMA)
    samples = [0.2755, 0.3, 1.2]
    con.execute("INSERT INTO benchmarks (created_at, device, target, engine, engine_version, precision, "
                "bundle_digest, bundle, threads, p50_ms, protocol, fingerprint, stats, samples) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                ("2026-12-01T21:12:04+00:00", "emu-arm64", "rpi5", "onnxruntime", "1.32.0", "fp32",
                 V1_STATS["bundle_digest"], "/host/tiny", 1, 0.2755, json.dumps(V1_STATS["protocol"]),
                 json.dumps({"arch": "aarch64"}), json.dumps(V1_STATS), json.dumps(samples)))
    con.commit()
    con.close()

    with open_store(db) as store:
        assert store.migrated_from == 1 and store.schema_version() == schema.SCHEMA_VERSION
        old = store.get(1)
        assert old.device == "emu-arm64" and old.bundle == "/host/tiny" and old.target == "rpi5"
        assert old.samples_ms == tuple(samples) and old.fingerprint == {"arch": "aarch64"}
        assert old.latency_ms.p95 == 0.8963 and old.protocol.threads == 1 and old.engine.version == "1.32.0"
        assert old.extra["parity"] == {"max_abs": 0.0}  # v1 top-level extras kept
        new_id = store.add(make_result(2))
        assert new_id == 2 and [r.result_id for r in store.query(device="emu-arm64")] == [1]
    with open_store(db) as again:  # a second open does not migrate again
        assert again.migrated_from is None and again.get(1).device == "emu-arm64"
    with open_store(db) as again:  # the migrated rows come back whole through the typed API
        (row,) = again.query(device="emu-arm64")
        assert row.result_id == 1 and list(row.samples_ms) == samples and row.latency_ms.p50 == 0.2755
        rid = again.add(BenchResult(bundle_digest="ef" * 32, device="d", samples_ms=(1.0,)))
        assert again.get(rid).device == "d"


def test_a_store_from_a_newer_edgeify_is_refused(tmp_path: Path) -> None:
    from edgeify.results import StoreSchemaError

    db = tmp_path / "new.sqlite"
    open_store(db).close()
    con = sqlite3.connect(db)
    con.execute("INSERT INTO schema_version (version) VALUES (99)")
    con.commit()
    con.close()
    with pytest.raises(StoreSchemaError) as err:
        open_store(db)
    assert "99" in err.value.message and err.value.hint
