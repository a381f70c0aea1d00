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

from ..engines import create_adapter
from ..errors import BundleError
from ..fingerprint import default_threads
from ..manifest import Manifest
from .record import FALLBACK_WARN_SHARE, OpProfile, Placement, Profile, build_profile

__all__ = ["DEFAULT_RUNS", "FALLBACK_WARN_SHARE", "OpProfile", "Placement", "Profile", "build_profile",
           "profile_bundle"]

DEFAULT_RUNS = 20
PROFILED_ENGINES = ("onnxruntime", "openvino", "litert", "tensorrt")


def profile_bundle(bundle: str | os.PathLike[str], *, feeds: Mapping[str, Any], threads: int | None = None,
                   options: Mapping[str, Any] | None = None, runs: int = DEFAULT_RUNS, warmup: int = 3,
                   p50_ms: float | None = None, timeout_s: float = 300.0) -> Profile:
    """Profile ``runs`` inferences of ``feeds`` (after ``warmup`` unrecorded ones) with the bundle's engine.

    ``options`` are merged over the manifest's engine options, as in ``edgeify_runtime.load``; ``p50_ms`` (the
    end-to-end p50 of a separate latency run) is recorded beside the per-op sum.
    """
    from ..session import Model

    bundle_dir = Path(bundle)
    manifest = Manifest.read(bundle_dir)
    engine = manifest.engine.name
    if engine not in PROFILED_ENGINES:
        raise BundleError(f"edgeify_runtime.profile has no profiler for engine {engine!r}",
                          hint=f"profiles exist for {', '.join(PROFILED_ENGINES)}")
    if runs < 1:
        raise ValueError("runs must be >= 1")
    threads = threads or default_threads()
    merged: dict[str, Any] = dict(manifest.engine.options)
    merged.update(dict(options or {}))
    counters = None
    if engine == "openvino":
        from . import openvino as ov_prof

        merged = ov_prof.options_with_counters(merged)
        counters = ov_prof.Counters()
    with tempfile.TemporaryDirectory(prefix="edgeify-profile-") as work:
        adapter = create_adapter(engine, manifest.engine.min_version)
        if engine == "onnxruntime":
            from . import ort

            ort.prepare(adapter, work)
        adapter.load(bundle_dir, manifest, threads, merged)
        model = Model(bundle_dir, manifest, adapter, threads)
        try:
            for _ in range(warmup):
                model.run(feeds)
            if counters is not None:
                adapter.profiling_info()  # counters are per inference: drop the warm-up's
            wall = 0
            n = 0 if engine == "tensorrt" else runs  # TensorRT: trtexec does the profiled runs
            for _ in range(n):
                t0 = time.perf_counter_ns()
                model.run(feeds)
                wall += time.perf_counter_ns() - t0
                if counters is not None:
                    counters.add(adapter.profiling_info())
            overhead: dict[str, Any] = {"warmup_runs": warmup, "profiled_runs": n,
                                        "profiled_run_ms": round(wall / n / 1e6, 6) if n else None}
            if engine == "onnxruntime":
                ops, extra, intended, missing = ort.collect(adapter, runs, merged)
                source = ort.SOURCE
            elif engine == "openvino":
                ops, extra, intended, missing = ov_prof.collect(adapter, counters, manifest)
                source = ov_prof.SOURCE
            elif engine == "litert":
                from . import litert

                ops, extra, intended, missing = litert.collect(adapter)
                source = litert.SOURCE
            else:
                from . import tensorrt

                shapes = {k: list(v.shape) for k, v in feeds.items()}
                ops, extra, intended, missing = tensorrt.collect(adapter.engine_record, work, shapes, runs,
                                                                 timeout_s)
                source = tensorrt.SOURCE
        finally:
            model.close()
    overhead.update(extra)
    prof = build_profile(engine, source, runs, ops, intended, overhead, missing)
    return prof.with_latency(p50_ms)
