"""Where the time goes: the engine's own per-operator profiler, run on a bundle, as one unified record.

    from edgeify_runtime.profile import profile_bundle

    prof = profile_bundle("bundle/", feeds={"x": x}, threads=2, runs=20)
    prof.ops[0].name, prof.ops[0].time_ms, prof.placement.fallback_share, prof.warning

Each engine reports in its own words; ``record.build_profile`` turns them into one shape:

* ONNX Runtime: session profiling (``SessionOptions.enable_profiling``): per node time and execution provider.
* OpenVINO: performance counters (``PERF_COUNT``): per runtime layer time, type, kernel and executed precision.
* LiteRT: per-op placement (delegated to XNNPACK or built-in kernels); no per-op times (``time_ms`` null, with
  the reason in ``time_ms_missing``).
* TensorRT: trtexec's per-layer profile of the engine plan.

Each engine's adapter owns its profiler (``EngineAdapter.profile_options`` / ``profile_mark`` /
``profile_collect``, implemented in this package's per-engine modules); this module only runs the session.

The profile loads its own session and runs it after the benchmark's latency samples were taken (the agent
calls it after closing the timed model), so profiler overhead never reaches those samples. Engines are imported
lazily, by the adapters, as for ``edgeify_runtime.load``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from ..engines import ProfileRun, adapter_classes, create_adapter
from ..errors import BundleError
from ..fingerprint import default_threads
from ..manifest import Manifest
from ..session import Model
from .modules import SourceMap
from .record import FALLBACK_WARN_SHARE, OpProfile, Placement, Profile, build_profile

__all__ = ["DEFAULT_RUNS", "FALLBACK_WARN_SHARE", "OpProfile", "Placement", "Profile", "build_profile",
           "profile_bundle", "profiled_engines"]

DEFAULT_RUNS = 20


def profiled_engines() -> tuple[str, ...]:
    """The registered engines whose adapter has a per-operator profiler."""
    return tuple(name for name, cls in adapter_classes().items() if cls.profile_source)


def profile_bundle(bundle: str | os.PathLike[str], *, feeds: Mapping[str, Any], threads: int | None = None,
                   options: Mapping[str, Any] | None = None, runs: int = DEFAULT_RUNS, warmup: int = 3,
                   p50_ms: float | None = None, timeout_s: float = 300.0) -> Profile:
    """Profile ``runs`` inferences of ``feeds`` (after ``warmup`` unrecorded ones) with the bundle's engine.

    ``options`` are merged over the manifest's engine options, as in ``edgeify_runtime.load``; ``p50_ms`` (the
    end-to-end p50 of a separate latency run) is recorded beside the per-op sum. The engine's adapter does the
    engine-specific part (``profile_options``, ``profile_mark``, ``profile_collect``).
    """

    bundle_dir = Path(bundle)
    manifest = Manifest.read(bundle_dir)
    engine = manifest.engine.name
    if runs < 1:
        raise ValueError("runs must be >= 1")
    threads = threads or default_threads()
    merged: dict[str, Any] = dict(manifest.engine.options)
    merged.update(dict(options or {}))
    with tempfile.TemporaryDirectory(prefix="edgeify-profile-") as work:
        adapter = create_adapter(engine, manifest.engine.min_version)
        if not adapter.profile_source:
            raise BundleError(f"edgeify_runtime.profile has no profiler for engine {engine!r}",
                              hint=f"profiles exist for {', '.join(profiled_engines())}")
        merged = adapter.profile_options(merged, work)
        adapter.load(bundle_dir, manifest, threads, merged)
        model = Model(bundle_dir, manifest, adapter, threads)
        try:
            for _ in range(warmup):
                model.run(feeds)
                adapter.profile_mark(False)
            wall = 0
            n = 0 if adapter.profile_runs_itself else runs
            for _ in range(n):
                t0 = time.perf_counter_ns()
                model.run(feeds)
                wall += time.perf_counter_ns() - t0
                adapter.profile_mark(True)
            overhead: dict[str, Any] = {"warmup_runs": warmup, "profiled_runs": n,
                                        "profiled_run_ms": round(wall / n / 1e6, 6) if n else None}
            prof = adapter.profile_collect(ProfileRun(manifest=manifest, feeds=feeds, options=merged, runs=runs,
                                                      workdir=work, timeout_s=timeout_s, overhead=overhead))
        finally:
            model.close()
    return prof.with_latency(p50_ms).with_modules(SourceMap.from_manifest(manifest))  # source module per op
