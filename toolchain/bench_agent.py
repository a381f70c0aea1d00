"""The benchmark agent on one site: the protocol settings, the agent's request, this machine's path (a build's quick
latency check takes it: no devices file, no fleet, no store) and the host-side warnings on a result.

:mod:`edgeify.bench` (the orchestrator for devices, fleets and the results store) runs every benchmark through
:func:`measure` and :func:`host_warnings`; :func:`bench_local` is the orchestrator's local path on its own.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeify_runtime.manifest import Manifest
from edgeify_runtime.result import BenchResult

from .deploy.site import DeviceSite
from .deploy.site_exec import run_module
from .errors import EdgeifyError
from .targets import BenchProtocol, load_registry

AGENT_MODULE = "edgeify_runtime.bench"
#: seconds allowed on top of the protocol's own bounds (engine import, model load, verify)
DEADLINE_SLACK_S = 120.0
#: a p99 from fewer samples than this is mostly the few slowest runs: say so
MIN_SAMPLES_P99 = 100


@dataclass(frozen=True)
class BenchSettings:
    """The protocol to run; None: the bundle target's declared protocol (``targets.BenchProtocol``)."""

    warmup: int | None = None
    runs: int | None = None
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    threads: int | None = None
    batch: int | None = None
    #: {input name: [dims]} for dynamic dimensions (``--input-shape``)
    input_shapes: Mapping[str, Sequence[int]] | None = None
    #: per-op profile (``bench --profile``): True or a run count
    profile: bool | int | None = None
    seed: int | None = None
    #: one run of an interleaved series (``bench_series``): {"id", "index", "count"}
    series: Mapping[str, Any] | None = None

    def request(self, bundle: str, **more: Any) -> dict[str, Any]:
        """The agent's JSON request for ``bundle`` (a path on the site); unset fields are left to the agent."""
        fields = {k: v for k, v in asdict(self).items() if v is not None}
        if "input_shapes" in fields:
            fields["input_shapes"] = {k: [int(d) for d in v] for k, v in fields["input_shapes"].items()}
        return {"bundle": bundle, **fields, **{k: v for k, v in more.items() if v is not None}}

    def deadline(self) -> float:
        """Warmup and timed phases are each bounded by ``max_duration_s``; plus import/load/verify slack."""
        return 2 * float(self.max_duration_s or 120.0) + DEADLINE_SLACK_S


def settings_for(bundle: str | os.PathLike[str], *, threads: int | None = None, warmup: int | None = None,
                 runs: int | None = None, min_duration_s: float | None = None, batch: int | None = None,
                 input_shapes: Mapping[str, Sequence[int]] | None = None, profile: bool | int | None = None,
                 ) -> BenchSettings:
    """The settings: what the caller gives, else the bundle target's declared protocol, else the defaults."""
    manifest = Manifest.read(Path(bundle))
    proto = BenchProtocol()
    if manifest.target:
        with contextlib.suppress(EdgeifyError):  # a user target not installed here: the default protocol
            proto = load_registry().get(manifest.target).bench
    return BenchSettings(warmup=proto.warmup if warmup is None else warmup,
                         runs=proto.runs if runs is None else runs,
                         min_duration_s=proto.min_duration_s if min_duration_s is None else min_duration_s,
                         max_duration_s=proto.max_duration_s,
                         threads=proto.threads if threads is None else threads,
                         batch=batch, input_shapes=dict(input_shapes) if input_shapes else None, profile=profile)


def measure(site: DeviceSite, bundle_path: str, settings: BenchSettings, *, timeout: float | None = None,
            runtime_path: str | None = None, **request: Any) -> BenchResult:
    """The agent on ``site`` for the bundle at ``bundle_path`` there: its result as a BenchResult."""
    reply = run_module(site, AGENT_MODULE, request=settings.request(bundle_path, **request),
                       timeout=timeout or settings.deadline(), runtime_path=runtime_path,
                       what="the benchmark agent")
    return BenchResult.from_dict(reply).replace(device=site.name)


def bench_local(bundle: str | os.PathLike[str], settings: BenchSettings | None = None, *,
                timeout: float | None = None) -> BenchResult:
    """This machine, directly: the agent over ``DeviceSite.local()``, no devices file, no fleet, nothing stored
    (a build's quick latency check). Raises the agent's error."""
    bundle = Path(bundle).resolve()
    return bench_here(bundle, settings or settings_for(bundle), timeout=timeout)


def bench_here(bundle: Path, settings: BenchSettings, *, timeout: float | None) -> BenchResult:
    """:func:`bench_local` with the settings resolved and the bundle path absolute."""
    result = measure(DeviceSite.local(), str(bundle), settings, timeout=timeout)
    return result.replace(warnings=result.warnings + tuple(host_warnings(result, local=True)))


# -- host-side facts ---------------------------------------------------------------------------------------------
def host_warnings(result: BenchResult, *, local: bool) -> list[str]:
    """What makes these figures less than they look: another machine's bundle, too many threads, a thin p99."""
    out = []
    fp = result.fingerprint or {}
    cpu = fp.get("cpu") or {}
    if local and result.target:
        spec = _target_spec(result.target)
        host_arch = fp.get("arch") or platform.machine()
        if spec is not None and (spec.arch != host_arch or spec.os != "linux"):
            out.append(f"this bundle is for {result.target} ({spec.arch}, {spec.os}) but ran on this host "
                       f"({host_arch}, {cpu.get('model') or 'unknown CPU'}): these are this host's figures, not "
                       f"the device's; benchmark on the device with --device NAME")
        isa = set(cpu.get("isa") or ())
        if spec is not None and spec.name == "x86-avx2" and {"avx512f", "avx512_vnni"} <= isa:
            out.append("this host has AVX-512 VNNI, and the bundle is for x86-avx2 (what `--target x86` picks): "
                       "a build for --target x86-avx512 may be faster here")
    cores = cpu.get("usable_cores") or cpu.get("logical_cores")
    threads = result.protocol.threads
    if isinstance(cores, int) and isinstance(threads, int) and threads > cores:
        out.append(f"--threads {threads} is more than the {cores} cores {result.device} may use: the threads "
                   "share cores and the latency suffers")
    n = len(result.samples_ms) or (result.protocol.runs_done or 0)
    if 0 < n < MIN_SAMPLES_P99:
        out.append(f"p99 from {n} samples (fewer than {MIN_SAMPLES_P99}) is mostly the slowest run or two: "
                   "raise --runs or --min-duration")
    return out


def _target_spec(name: str) -> Any:
    try:
        return load_registry().get(name)
    except EdgeifyError:
        return None


__all__ = ["AGENT_MODULE", "MIN_SAMPLES_P99", "BenchSettings", "bench_here", "bench_local", "host_warnings", "measure",
           "settings_for"]
