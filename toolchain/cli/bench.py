"""``edgeify bench BUNDLE [--device NAME | --devices SELECTOR]``: benchmark a bundle and record the result."""

from __future__ import annotations

from pathlib import Path

import typer
from edgeify.bench import bench as run_bench
from edgeify.bench import bench_series, budget_error, parse_input_shapes, settings_for
from edgeify.errors import UsageError

from .output import (
    AskPassOpt,
    Format,
    FormatOpt,
    Percentile,
    TrustOpt,
    console,
    err_console,
    examples,
    fail_fleet,
    passphrase,
    print_bench,
    print_fleet_bench,
    print_json,
    print_warnings,
)
from .profile_view import print_profile
from .sustained import parse_sustained, sustained_lines, sustained_settings, with_sustained

EPILOG = examples("edgeify bench build/digits-x86",
                  "edgeify bench build/digits-x86 --threads 1 --runs 200 --min-duration 2 --format json",
                  "edgeify bench build/seq-x86 --input-shape tokens:1,128 --batch 8",
                  "edgeify bench build/digits-rpi5 --device pi-01 --max-latency-ms 5 --percentile p99",
                  "edgeify bench build/digits-rpi5 --devices tag:pi --format json --samples",
                  "edgeify bench build/a build/b --repeat 5     # interleaved; then: edgeify compare build/a build/b",
                  "edgeify bench build/digits-rpi5 --device pi-01 --sustained 60s   # first vs last 10 s")


def bench(
    bundles: list[Path] = typer.Argument(..., metavar="BUNDLE...", help="bundle directory written by `edgeify "
                                         "build` (several: run interleaved, see --repeat)"),
    device: str = typer.Option(None, "--device", "-d", help="where to run: `local` (this machine) or a device "
                                                            "name from `edgeify devices list`  [default: local]"),
    devices: str = typer.Option(None, "--devices", help="several devices in parallel: tag:TAG, NAME1,NAME2 or all"),
    threads: int = typer.Option(None, "--threads", min=1, help="engine threads  [default: the target's protocol, "
                                                               "else the device's physical cores]"),
    warmup: int = typer.Option(None, "--warmup", min=0, help="untimed runs first, discarded (caches, JIT, clocks "
                                                             "settle)  [default: the target's protocol, usually 10]"),
    runs: int = typer.Option(None, "--runs", min=1, help="MINIMUM number of timed runs: timing goes on until both "
                             "--runs and --min-duration are reached (bounded by the protocol's max duration)  "
                             "[default: the target's protocol, usually 100]"),
    min_duration: float = typer.Option(None, "--min-duration", min=0, help="minimum seconds of timed runs  "
                                       "[default: the target's protocol, usually 1.0]"),
    batch: int = typer.Option(None, "--batch", min=1, help="batch size for a dynamic batch dimension  "
                                                           "[default: the bundle's fixed batch, else 1]"),
    input_shape: list[str] = typer.Option([], "--input-shape", metavar="NAME:DIMS",
                                          help="shape for an input with dynamic dimensions, e.g. tokens:1,128 "
                                               "(NAME may be left out for a one-input bundle; repeatable)  "
                                               "[default: dynamic dimensions at 1]"),
    max_latency_ms: float = typer.Option(None, "--max-latency-ms", help="fail (exit 13) when --percentile is over "
                                                                        "this budget; the verdict is in the result"),
    percentile: Percentile = typer.Option(Percentile.p95, "--percentile", help="percentile the budget applies to"),
    samples: bool = typer.Option(False, "--samples", help="include the raw samples in the JSON output"),
    profile: bool = typer.Option(False, "--profile", help="also run the engine's per-op profiler, in a separate "
                                 "run after the timed ones: top ops, placement, fallback warning"),
    top: int = typer.Option(10, "--top", min=1, help="ops shown by --profile (JSON carries all)"),
    repeat: int = typer.Option(1, "--repeat", min=1, help="run the bundle(s) this many times, interleaved (A B, B A, "
                               "A B, ...), each run its own process, each stored; compare/gate infer at the run level"),
    cooldown: float = typer.Option(0.5, "--cooldown", min=0, help="seconds of rest between the runs of --repeat"),
    sustained: str = typer.Option(None, "--sustained", metavar="DURATION", help="one long timed run (60s, 5m): "
                                  "latency over time, the first vs the last 10 s (thermal throttling shows)"),
    no_store: bool = typer.Option(False, "--no-store", help="do not record the result in the results store"),
    force: bool = typer.Option(False, "--force", help="(devices) deploy even if the bundle's target does not fit"),
    trust_new_host_key: bool = TrustOpt,
    ask_passphrase: bool = AskPassOpt,
    fmt: Format = FormatOpt,
) -> None:
    """Benchmark a bundle with the device-side agent (in its own process, on this machine or on devices) and
    record the result."""

    if device and devices:
        raise UsageError("give --device NAME or --devices SELECTOR, not both", hint="e.g. --devices tag:pi")
    where = devices or device or "local"
    if len(bundles) > 1 or repeat > 1:
        if devices:
            raise UsageError("--repeat and several bundles run on one site", hint="use --device NAME (or none)")
        _series(bundles, where, repeat=repeat, cooldown=cooldown, threads=threads, warmup=warmup, runs=runs,
                min_duration=min_duration, batch=batch, no_store=no_store, samples=samples, fmt=fmt,
                trust_new_host_key=trust_new_host_key, ask_passphrase=ask_passphrase, force=force)
        return
    bundle = bundles[0]
    shapes = parse_input_shapes(input_shape, bundle) if input_shape else None
    settings = settings_for(bundle, threads=threads, warmup=warmup, runs=runs, min_duration_s=min_duration,
                            batch=batch, input_shapes=shapes, profile=profile or None)
    if sustained:
        if devices:
            raise UsageError("--sustained runs on one site", hint="use --device NAME (or none)")
        settings = sustained_settings(settings, parse_sustained(sustained))
    outcomes = run_bench(bundle, where, settings=settings, store=not no_store, max_latency_ms=max_latency_ms,
                         percentile=percentile.value, force=force, trust_new_host_key=trust_new_host_key,
                         passphrase=passphrase(ask_passphrase))
    if not devices:  # one site: its result, or its own error
        result = outcomes[0].unwrap()
        if sustained:
            result = with_sustained(result)
        if fmt == Format.json:
            print_json(result.to_dict(samples=samples), compact=samples)
            print_warnings(result)
        else:
            print_bench(result)
            for line in sustained_lines(result.extra.get("sustained")):
                console.print(line)
            if profile:
                print_profile(result.profile, top)
    else:
        if fmt == Format.json:
            print_json({"devices": [o.to_dict(samples=samples) for o in outcomes]}, compact=samples)
        else:
            print_fleet_bench(outcomes, f"bench {Path(bundle).name} on {devices}")
        fail_fleet(outcomes)
    err = budget_error([o.result for o in outcomes if o.ok and o.result is not None])
    if err is not None:
        raise err


def _series(bundles: list[Path], where: str, *, repeat: int, cooldown: float, threads: int | None,
            warmup: int | None, runs: int | None, min_duration: float | None, batch: int | None, no_store: bool,
            samples: bool, fmt: Format, trust_new_host_key: bool, ask_passphrase: bool, force: bool) -> None:
    sets = [settings_for(b, threads=threads, warmup=warmup, runs=runs, min_duration_s=min_duration, batch=batch)
            for b in bundles]
    progress = None if fmt == Format.json else (lambda m: err_console.print(f"[dim]{m}[/]"))
    s = bench_series([str(b) for b in bundles], where, repeat=repeat, settings=sets, cooldown_s=cooldown,
                     store=not no_store, progress=progress, force=force, trust_new_host_key=trust_new_host_key,
                     passphrase=passphrase(ask_passphrase))
    if fmt == Format.json:
        print_json(s.to_dict(samples=samples), compact=samples)
        return
    from rich.table import Table

    t = Table(title=f"series {s.id}: {repeat} round(s), order {' '.join(s.order)}")
    for col in ("", "bundle", "result ids", "p50 per run (ms)", "disturbed"):
        t.add_column(col)
    for i, (b, rs) in enumerate(zip(s.bundles, s.runs, strict=True)):
        t.add_row(chr(ord("A") + i), Path(b).name, ", ".join(f"#{r.result_id}" for r in rs if r.result_id),
                  " ".join(f"{r.latency_ms.p50:.4f}" for r in rs if r.latency_ms.p50 is not None),
                  str(sum(r.disturbed for r in rs)))
    console.print(t)
    if len(bundles) == 2 and repeat >= 2 and not no_store:
        console.print(f"compare these runs: edgeify compare {bundles[0]} {bundles[1]}")


def register(app: typer.Typer) -> None:
    app.command("bench", epilog=EPILOG)(bench)


__all__ = ["bench", "register"]
