"""``edgeify bench``: the one benchmark orchestrator, for this machine, one device, a fleet or a tag selector.

::

    outcomes = bench("build/digits-x86", "local")             # this machine
    outcomes = bench(bundle, "pi-01")                         # a device from the devices file
    outcomes = bench(bundle, "tag:pi")                        # every device with the tag, in parallel
    result = bench(bundle, "pi-01,pi-02")[0].unwrap()         # BenchResult, or raises that device's error

Every run takes the same path: a site (``DeviceSite.local()`` over ``LocalTransport``, or an SSH device with the
bundle deployed if needed), the agent ``python -m edgeify_runtime.bench`` run there by
``deploy.site_exec.run_module`` with the protocol as its JSON request, its reply read as a typed
:class:`~edgeify_runtime.result.BenchResult`, host-side facts added (device, warnings, budget, deploy), and the
result written to the results store. This module is the only writer of benchmark results to the store.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgeify_runtime.identity import manifest_identity
from edgeify_runtime.manifest import Manifest
from edgeify_runtime.result import BenchResult

from .bench_agent import (
    AGENT_MODULE,
    BenchSettings,
    bench_here,
    bench_local,
    host_warnings,
    measure,
    settings_for,
)
from .deploy.connect import open_site
from .deploy.deployer import deploy
from .deploy.inventory import Device, Inventory
from .deploy.outcome import Outcome, attempt, run_fleet
from .deploy.site import DeviceSite
from .errors import BundleError, LatencyBudgetError, UsageError
from .preflight import check_input_memory
from .store import open_store

PERCENTILES = ("p50", "p90", "p95", "p99")


def parse_input_shapes(specs: Sequence[str], bundle: str | os.PathLike[str]) -> dict[str, list[int]]:
    """``--input-shape name:1,16`` (or ``1,16`` for a one-input bundle) -> {name: [dims]}; checked against the
    bundle's signature (names, rank, fixed dimensions)."""

    inputs = {t.name: t for t in Manifest.read(Path(bundle)).inputs}
    out: dict[str, list[int]] = {}
    for spec in specs:
        name, _, dims = spec.rpartition(":")
        if not name:
            if len(inputs) != 1:
                raise UsageError(f"--input-shape {spec}: the bundle has {len(inputs)} inputs; name one",
                                 hint=f"--input-shape NAME:DIMS with NAME one of {', '.join(inputs)}")
            name = next(iter(inputs))
        if name not in inputs:
            raise UsageError(f"--input-shape {spec}: the bundle has no input {name!r}",
                             hint=f"its inputs: {', '.join(inputs)}")
        try:
            shape = [int(d) for d in dims.replace("x", ",").split(",") if d.strip()]
        except ValueError:
            shape = []
        sig = inputs[name].shape
        if not shape or any(d < 1 for d in shape) or len(shape) != len(sig):
            raise UsageError(f"--input-shape {spec}: give {len(sig)} positive dimensions for {name} {list(sig)}",
                             hint=f"e.g. --input-shape {name}:" + ",".join(
                                 str(d) if isinstance(d, int) else "1" for d in sig))
        fixed = [(i, d, s) for i, (d, s) in enumerate(zip(sig, shape, strict=True)) if isinstance(d, int) and d != s]
        if fixed:
            raise UsageError(f"--input-shape {spec}: dimension {fixed[0][0]} of {name} is fixed at {fixed[0][1]}",
                             hint="only the dynamic dimensions (named in the signature) can change")
        out[name] = shape
    _check_memory(out, inputs)
    return out


def _check_memory(shapes: dict[str, list[int]], inputs: dict[str, Any]) -> None:
    """Refuse input shapes whose tensors alone exceed the memory this machine has available (before anything
    allocates them: a MemoryError, or an engine's allocation failure, is no answer)."""

    check_input_memory({n: (s, inputs[n].dtype) for n, s in shapes.items()})


# -- the entry point ---------------------------------------------------------------------------------------------
def bench(bundle: str | os.PathLike[str], where: str | Device | Sequence[Device] = "local", *,
          settings: BenchSettings | None = None,
          store: bool = True, run_id: str | None = None, max_latency_ms: float | None = None,
          percentile: str = "p95", force: bool = False, trust_new_host_key: bool = False,
          passphrase: str | None = None, inventory: Inventory | None = None, timeout: float | None = None,
          max_workers: int | None = None) -> list[Outcome[BenchResult]]:
    """Benchmark ``bundle`` ``where``: ``"local"`` (this machine), a device name, ``NAME1,NAME2``, ``tag:TAG``
    or ``all`` (devices of the devices file, in parallel), or Device entries themselves.

    One :class:`Outcome` per device, in order: its :class:`BenchResult` (stored unless ``store=False``, with the
    ``max_latency_ms`` budget's verdict), or its error. ``Outcome.unwrap()`` gives the result or raises."""
    bundle = Path(bundle).resolve()
    settings = settings or settings_for(bundle)
    if percentile not in PERCENTILES:
        raise UsageError(f"percentile {percentile!r} is not one of {', '.join(PERCENTILES)}")

    def finish(result: BenchResult) -> BenchResult:
        result = result.with_budget(max_latency_ms, percentile).replace(run_id=run_id)
        if store:
            result = result.replace(result_id=_store(result))
        return result

    if where == "local":
        return [attempt("local", lambda: finish(bench_here(bundle, settings, timeout=timeout)))]
    if isinstance(where, str):
        devices = (inventory or Inventory()).select(where)
    else:
        devices = [where] if isinstance(where, Device) else list(where)
    return run_fleet(devices, lambda d: finish(_bench_device(d, bundle, settings, force=force, timeout=timeout,
                                                             trust_new_host_key=trust_new_host_key,
                                                             passphrase=passphrase)),
                     max_workers=max_workers)


#: seconds of rest between the runs of a series (lets clocks and caches settle a little; recorded)
DEFAULT_COOLDOWN_S = 0.5


@dataclass(frozen=True)
class Series:
    """``bench --repeat N`` over one or more bundles: N rounds, each running every bundle once, in its own agent
    process. Rounds alternate the order (A B, B A, A B, ...) so no bundle always runs right after another."""

    id: str
    bundles: tuple[str, ...]
    runs: tuple[tuple[BenchResult, ...], ...]  # per bundle, in round order
    cooldown_s: float
    order: tuple[str, ...]

    def to_dict(self, *, samples: bool = False) -> dict[str, Any]:
        return {"series": self.id, "cooldown_s": self.cooldown_s, "order": list(self.order),
                "bundles": [{"bundle": b, "results": [r.to_dict(samples=samples) for r in rs]}
                            for b, rs in zip(self.bundles, self.runs, strict=True)]}


def bench_series(bundles: Sequence[str | os.PathLike[str]], where: str = "local", *, repeat: int,
                 settings: Sequence[BenchSettings] | None = None, cooldown_s: float = DEFAULT_COOLDOWN_S,
                 store: bool = True, progress: Any = None, stop_at: float | None = None, **kw: Any) -> Series:
    """Run ``bundles`` interleaved, ``repeat`` rounds, on this machine or one device; every run is one agent
    process and one stored result carrying ``series`` {id, index, count}. The first error stops the series.
    ``stop_at`` (a ``time.monotonic()`` value): start no new round after it (the rounds done are returned)."""
    import time
    import uuid

    if repeat < 1 or not bundles:
        raise UsageError("a series needs at least one bundle and --repeat 1 or more")
    paths = [Path(b).resolve() for b in bundles]
    sets = list(settings) if settings is not None else [settings_for(p) for p in paths]
    sid = f"s-{uuid.uuid4().hex[:12]}"
    runs: list[list[BenchResult]] = [[] for _ in paths]
    order: list[str] = []
    for k in range(repeat):
        if stop_at is not None and k > 0 and time.monotonic() >= stop_at:
            break
        idx = list(range(len(paths)))
        if k % 2:
            idx.reverse()
        for i in idx:
            if order:
                time.sleep(cooldown_s)
            label = chr(ord("A") + i) if len(paths) <= 26 else str(i)
            if progress is not None:
                progress(f"round {k + 1}/{repeat}: {label} {paths[i].name}")
            settings_i = replace(sets[i], series={"id": sid, "index": k, "count": repeat})
            result = bench(paths[i], where, settings=settings_i, store=store, **kw)[0].unwrap()
            runs[i].append(result)
            order.append(label)
    return Series(id=sid, bundles=tuple(str(p) for p in paths), runs=tuple(tuple(r) for r in runs),
                  cooldown_s=cooldown_s, order=tuple(order))


def _bench_device(device: Device, bundle: Path, settings: BenchSettings, *, force: bool, timeout: float | None,
                  trust_new_host_key: bool, passphrase: str | None) -> BenchResult:
    """Deploy if needed (sizes + manifest digest; the agent hashes every file), then run the agent there."""

    with open_site(device, trust_new_host_key=trust_new_host_key, passphrase=passphrase) as site:
        report = deploy(site, bundle, device=device, force=force, hash_check=False)
        result = measure(site, deployed_path(report), settings, timeout=timeout,
                          runtime_path=_runtime_path(site, report))
    if result.bundle_digest != report.digest:
        raise BundleError(f"device {device.name} benchmarked bundle {result.bundle_digest[:12]}, "
                          f"not {report.digest[:12]} (another deploy replaced it meanwhile?)",
                          hint="rerun the benchmark")
    _check_identity(device.name, bundle, result)
    deployed = {"status": report.status, "uploaded_bytes": report.uploaded_bytes, "timings_s": report.timings_s,
                "warnings": report.warnings}
    if report.device_steps:
        deployed["device_steps"] = report.device_steps
    return result.replace(deploy=deployed, warnings=result.warnings + tuple(host_warnings(result, local=False)))


def _check_identity(device: str, bundle: Path, result: BenchResult) -> None:
    """The device ran this bundle's identity (files AND engine options): a deployed copy with the same files but
    another manifest (other engine options) would otherwise be measured under this bundle's name."""

    want = manifest_identity(Manifest.read(bundle))
    if result.bundle_id and result.bundle_id != want:
        raise BundleError(f"device {device} ran bundle {result.bundle_id[:12]} (same files, other engine options), "
                          f"not {want[:12]}: the deployed manifest is another build's",
                          hint="the device keeps an earlier build with the same files under this bundle name: deploy "
                               "this one under another name (`edgeify deploy BUNDLE --device NAME --name OTHER`) "
                               "or rebuild into another directory")


def deployed_path(report: Any) -> str:
    """The installed ``current`` version of a deployed bundle on the device."""
    return posixpath.join(report.workdir or "", "bundles", report.name, "current")


def _runtime_path(site: DeviceSite, report: Any) -> str:
    return site.runtime_path or posixpath.join(report.workdir or "", "runtime", report.runtime or "")


def outputs_on_device(site: DeviceSite, report: Any, inputs_npz: str | os.PathLike[str], local_dir: Path, *,
                      settings: BenchSettings | None = None, which: str = "current") -> tuple[BenchResult, Path]:
    """Host-vs-device parity: run the deployed bundle on a fixed input set on the device, bring its outputs back
    as a local .npz. Returns (the agent's result, the local .npz). The remote files are removed afterwards."""
    import uuid

    tag = uuid.uuid4().hex[:12]
    io_dir = posixpath.join(report.workdir or "", "io")
    remote_in, remote_out = posixpath.join(io_dir, f"{tag}-inputs.npz"), posixpath.join(io_dir, f"{tag}-outputs.npz")
    site.transport.run(["mkdir", "-p", io_dir], timeout=30)
    quick = BenchSettings(warmup=1, runs=3, min_duration_s=0.0, max_duration_s=60.0)
    try:
        site.transport.put(str(inputs_npz), remote_in)
        path = posixpath.join(posixpath.dirname(deployed_path(report)), which)  # current | previous
        result = measure(site, path, settings or quick, inputs_npz=remote_in,
                          outputs_npz=remote_out, samples=False, runtime_path=_runtime_path(site, report))
        local_dir.mkdir(parents=True, exist_ok=True)
        local = local_dir / f"{site.name}-{tag}-outputs.npz"
        site.transport.get(remote_out, str(local))
    finally:
        site.transport.run(["rm", "-f", remote_in, remote_out], timeout=30)
    return result, local


def budget_error(results: Sequence[BenchResult]) -> LatencyBudgetError | None:
    """The error for the first result over its latency budget (exit 13), None when every budget is met."""
    over = [r for r in results if r.budget is not None and not r.budget.met]
    if not over:
        return None
    r = over[0]
    b = r.budget
    assert b is not None
    value = "no value" if b.value_ms is None else f"{b.value_ms:.3f} ms"
    others = f" ({len(over)} of {len(results)} devices over)" if len(results) > 1 else ""
    return LatencyBudgetError(f"{b.percentile} latency {value} is over the budget of {b.max_ms:g} ms on "
                              f"{r.device}{others}", hint=_budget_hint(r))


def _budget_hint(r: BenchResult) -> str:
    prec = (r.precision or "").lower()
    if prec.startswith("int8") or prec == "int16x8":
        return "the bundle is already int8: try another --engine, more --threads, or a smaller model"
    return "try --precision int8 (with --calib), another --engine, or a smaller model"


def _store(result: BenchResult) -> int:
    """Write the result to the results store; its id."""

    with open_store() as store:
        return int(store.add(result))


__all__ = ["AGENT_MODULE", "BenchSettings", "Series", "bench", "bench_local", "bench_series", "budget_error",
           "deployed_path", "outputs_on_device", "parse_input_shapes", "settings_for"]
