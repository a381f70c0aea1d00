"""``edgeify bench``: run the agent for a bundle on a device, validate its result, store it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import BundleError, LatencyBudgetError

REQUIRED_RESULT_KEYS = ("latency_ms", "samples_ms", "throughput_ips", "load_ms", "first_inference_ms",
                        "peak_rss_mb", "protocol", "fingerprint", "bundle_digest", "engine")


def protocol_for(bundle: Path, *, threads: int | None, warmup: int | None, runs: int | None,
                 min_duration_s: float | None) -> dict[str, Any]:
    """The benchmark protocol: CLI values, else the bundle target's declared protocol, else defaults."""
    from edgeify_runtime.manifest import Manifest

    from .targets import BenchProtocol, load_registry

    manifest = Manifest.read(bundle)
    proto = BenchProtocol()
    try:
        if manifest.target:
            proto = load_registry().get(manifest.target).bench
    except Exception:  # a user target not installed here: fall back to the default protocol
        pass
    return {"warmup": proto.warmup if warmup is None else warmup, "runs": proto.runs if runs is None else runs,
            "min_duration_s": proto.min_duration_s if min_duration_s is None else min_duration_s,
            "max_duration_s": proto.max_duration_s, "threads": threads if threads is not None else proto.threads}


def validate_result(result: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in REQUIRED_RESULT_KEYS if k not in result]
    if missing:
        raise BundleError(f"the benchmark agent returned an incomplete result (missing {missing})",
                          hint="the device's agent is out of date; redeploy")
    return result


def benchmark_bundle(bundle: Path, *, device: str = "local", threads: int | None = None, warmup: int | None = None,
                     runs: int | None = None, min_duration_s: float | None = None,
                     store: bool = True) -> dict[str, Any]:
    from .bench_local import run_agent
    from .paths import results_db
    from .results import ResultsStore

    bundle = Path(bundle).resolve()
    proto = protocol_for(bundle, threads=threads, warmup=warmup, runs=runs, min_duration_s=min_duration_s)
    if device != "local":
        from .deploy.remote_bench import benchmark_on_device

        return benchmark_on_device(bundle, device, proto, store=store)
    result = validate_result(run_agent({"bundle": str(bundle), **proto}))
    result["device"] = device
    if store:
        result["result_id"] = ResultsStore(results_db()).add(result, device=device, bundle=str(bundle))
    return result


def check_budget(result: dict[str, Any], max_latency_ms: float | None, percentile: str) -> None:
    if max_latency_ms is None:
        return
    value = result["latency_ms"][percentile]
    if value > max_latency_ms:
        raise LatencyBudgetError(f"{percentile} latency {value:.3f} ms is over the budget of {max_latency_ms} ms "
                                 f"on {result.get('device')}",
                                 hint="try --precision int8, another --engine, or a smaller model")
