"""Benchmark one candidate bundle on the chosen device by the real agent, in its own process.

Run-time settings travel in the bundle itself: a candidate measured with engine options is a copy of its bundle
(files hard-linked) whose manifest ``engine.options`` hold them, exactly what the winner is published with; the
thread count goes in the protocol. Runs through the bench orchestrator (``edgeify.bench.bench``: local site or
SSH device, every result stored under the optimize run id).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeify.bench import BenchSettings, bench
from edgeify_runtime.manifest import MANIFEST_NAME, Manifest

from .records import Settings
from .settings import to_engine_options


@dataclass(frozen=True)
class MeasureProtocol:
    """How long a candidate is measured (the screen, or the target's full protocol); the protocol a result
    records is ``edgeify_runtime.result.Protocol``."""

    warmup: int
    runs: int
    min_duration_s: float
    max_duration_s: float = 60.0


SCREEN = MeasureProtocol(warmup=3, runs=20, min_duration_s=0.3, max_duration_s=20.0)


def full_protocol(target_bench: Any) -> MeasureProtocol:
    return MeasureProtocol(warmup=target_bench.warmup, runs=target_bench.runs,
                           min_duration_s=target_bench.min_duration_s, max_duration_s=target_bench.max_duration_s)


@dataclass(frozen=True)
class Measurement:
    latency_ms: dict[str, float | None]
    result_id: int | None
    fingerprint: dict[str, Any] | None
    bundle: Path


def settings_bundle(bundle: Path, runtime: str, settings: Settings) -> tuple[Path, int | None]:
    """``bundle`` itself when ``settings`` need no engine options, else a sibling copy carrying them."""

    options, threads = to_engine_options(runtime, settings)
    if not options:
        return bundle, threads
    tag = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]
    dest = bundle.with_name(f"{bundle.name}-s{tag}")
    if not dest.exists():
        tmp = bundle.with_name(f".{dest.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            shutil.copytree(bundle, tmp, copy_function=os.link)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(bundle, tmp)
        path = tmp / MANIFEST_NAME
        manifest = Manifest.read(tmp)
        engine = {**manifest.raw["engine"], "options": {**manifest.engine.options, **options}}
        manifest = manifest.updated(engine=engine)
        path.unlink()  # a hard link: never write through it into the original bundle
        manifest.write(tmp)
        os.rename(tmp, dest)
    return dest, threads


def bench_candidate(bundle: Path, runtime: str, settings: Settings, proto: MeasureProtocol, *, device: str,
                    run_id: str, store: bool = True) -> Measurement:
    target, threads = settings_bundle(Path(bundle), runtime, settings)
    bs = BenchSettings(warmup=proto.warmup, runs=proto.runs, min_duration_s=proto.min_duration_s,
                       max_duration_s=proto.max_duration_s, threads=threads)
    rec = bench(target, device, settings=bs, store=store, run_id=run_id)[0].unwrap()
    d = rec.to_dict()
    return Measurement(dict(d["latency_ms"]), d.get("result_id"), d.get("fingerprint"), target)
