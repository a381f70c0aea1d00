"""``edgeify bench BUNDLE [--device NAME | --devices SELECTOR]``: benchmark a bundle and record the result."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import typer

from .output import Format, FormatOpt, fail_fleet, print_json


class Percentile(str, Enum):
    p50 = "p50"
    p90 = "p90"
    p95 = "p95"
    p99 = "p99"


def bench(
    bundle: Path = typer.Argument(..., help="bundle directory written by `edgeify build`"),
    device: str = typer.Option("local", "--device", "-d", help="device to run on (`local`: this machine, or a name "
                                                                 "from `edgeify devices list`)"),
    devices: str = typer.Option(None, "--devices", help="several devices in parallel: tag:TAG, NAME1,NAME2 or all"),
    threads: int = typer.Option(None, "--threads", min=1, help="[default: the device's physical cores]"),
    warmup: int = typer.Option(None, "--warmup", min=0, help="[default: the target's protocol]"),
    runs: int = typer.Option(None, "--runs", min=1, help="[default: the target's protocol]"),
    min_duration: float = typer.Option(None, "--min-duration", min=0, help="seconds [default: target's protocol]"),
    max_latency_ms: float = typer.Option(None, "--max-latency-ms", help="fail (exit 13) when over this budget"),
    percentile: Percentile = typer.Option(Percentile.p95, "--percentile", help="percentile the budget applies to"),
    no_store: bool = typer.Option(False, "--no-store", help="do not record the result in the results store"),
    fmt: Format = FormatOpt,
) -> None:
    """Benchmark a bundle with the device-side agent (in its own process) and record the result."""
    from edgeify.benchmark import benchmark_bundle, check_budget

    if devices:
        bench_fleet(bundle, devices, threads=threads, warmup=warmup, runs=runs, min_duration_s=min_duration,
                    store=not no_store, fmt=fmt.value, max_latency_ms=max_latency_ms, percentile=percentile.value)
        return

    result = benchmark_bundle(bundle, device=device, threads=threads, warmup=warmup, runs=runs,
                              min_duration_s=min_duration, store=not no_store)
    if fmt == Format.json:
        print_json(result)
    else:
        from .output import print_bench

        print_bench(result)
    check_budget(result, max_latency_ms, percentile.value)


def bench_fleet(bundle: Path, selector: str, *, threads: int | None = None, warmup: int | None = None,
                runs: int | None = None, min_duration_s: float | None = None, store: bool = True,
                fmt: str = "table", max_latency_ms: float | None = None, percentile: str = "p95",
                force: bool = False, trust_new_host_key: bool = False) -> list[Any]:
    """``edgeify bench BUNDLE --devices SELECTOR``: benchmark on many devices in parallel, print, then fail with
    the first failing device's exit code (or 13 when a result is over ``--max-latency-ms``)."""
    from edgeify.benchmark import check_budget, protocol_for
    from edgeify.deploy.remote_bench import benchmark_fleet

    from .output import print_fleet_bench

    bundle = Path(bundle).resolve()
    proto = protocol_for(bundle, threads=threads, warmup=warmup, runs=runs, min_duration_s=min_duration_s)
    outcomes = benchmark_fleet(bundle, selector, proto, store=store, force=force,
                               trust_new_host_key=trust_new_host_key)
    if str(getattr(fmt, "value", fmt)) == "json":
        print_json({"devices": [o.to_dict() for o in outcomes]})
    else:
        print_fleet_bench(outcomes, f"bench {bundle.name} on {selector}")
    fail_fleet(outcomes)
    for o in outcomes:
        check_budget(o.result, max_latency_ms, percentile)
    return outcomes


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


__all__ = ["bench", "bench_fleet", "register"]
