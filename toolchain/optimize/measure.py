"""Benchmark one candidate bundle on the chosen device by the real agent, in its own process.

Run-time settings travel in the bundle itself: a candidate measured with engine options is a copy of its bundle
(files hard-linked) whose manifest ``engine.options`` hold them, exactly what the winner is published with; the
thread count goes in the protocol. Runs through the bench orchestrator (``edgeify.bench.bench``: local site or
SSH device, results stored under the optimize run id), or, where that is missing, the agent paths it replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .records import Settings
from .settings import to_engine_options


@dataclass(frozen=True)
class Protocol:
    warmup: int
    runs: int
    min_duration_s: float
    max_duration_s: float = 60.0


SCREEN = Protocol(warmup=3, runs=20, min_duration_s=0.3, max_duration_s=20.0)


def full_protocol(target_bench: Any) -> Protocol:
    return Protocol(warmup=target_bench.warmup, runs=target_bench.runs, min_duration_s=target_bench.min_duration_s,
                    max_duration_s=target_bench.max_duration_s)


@dataclass(frozen=True)
class Measurement:
    latency_ms: dict[str, float | None]
    result_id: int | None
    fingerprint: dict[str, Any] | None
    bundle: Path


def settings_bundle(bundle: Path, runtime: str, settings: Settings) -> tuple[Path, int | None]:
    """``bundle`` itself when ``settings`` need no engine options, else a sibling copy carrying them."""
    from edgeify_runtime.manifest import MANIFEST_NAME, dumps

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
        manifest = json.loads(path.read_text(encoding="utf-8"))
        manifest["engine"]["options"] = {**(manifest["engine"].get("options") or {}), **options}
        path.unlink()  # a hard link: never write through it into the original bundle
        path.write_text(dumps(manifest), encoding="utf-8")
        os.rename(tmp, dest)
    return dest, threads


def bench_candidate(bundle: Path, runtime: str, settings: Settings, proto: Protocol, *, device: str,
                    run_id: str, store: bool = True) -> Measurement:
    target, threads = settings_bundle(Path(bundle), runtime, settings)
    try:
        from edgeify.bench import BenchSettings, bench
    except ImportError:  # an older tree without the orchestrator
        return _direct(target, threads, proto, device=device, run_id=run_id, store=store)
    bs = BenchSettings(warmup=proto.warmup, runs=proto.runs, min_duration_s=proto.min_duration_s,
                       max_duration_s=proto.max_duration_s, threads=threads)
    rec = bench(target, device, settings=bs, store=store, run_id=run_id)[0].unwrap()
    d = rec.to_dict()
    return Measurement(dict(d["latency_ms"]), d.get("result_id"), d.get("fingerprint"), target)


def _direct(bundle: Path, threads: int | None, proto: Protocol, *, device: str, run_id: str,
            store: bool) -> Measurement:
    request: dict[str, Any] = {"warmup": proto.warmup, "runs": proto.runs, "min_duration_s": proto.min_duration_s,
                               "max_duration_s": proto.max_duration_s, "threads": threads}
    if device == "local":
        from edgeify.bench_local import run_agent

        result = run_agent({"bundle": str(bundle), **request})
    else:
        from edgeify.deploy.remote_bench import benchmark_on_device

        result = benchmark_on_device(bundle, device, request, store=False)
    result_id = None
    if store:
        from edgeify.results import open_store
        from edgeify_runtime.result import BenchResult

        rec = BenchResult.from_dict({k: v for k, v in result.items() if k != "result_id"})
        with open_store() as st:
            result_id = st.add(rec.replace(device=device, bundle=str(bundle), run_id=run_id))
    return Measurement(dict(result["latency_ms"]), result_id, result.get("fingerprint"), bundle)
