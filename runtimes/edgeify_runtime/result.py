"""The benchmark result: one typed record shared by the agent, the host's store, printers and budget check.

The agent (``python -m edgeify_runtime.bench``) builds a :class:`BenchResult` on the device and prints
``to_dict()``; the host reads it back with :meth:`BenchResult.from_dict`, adds what only the host knows
(``device``, ``result_id``, ``budget``, ``deploy``, ``run_id``) with :meth:`BenchResult.replace`, stores it and
prints it. ``bench --format json``, ``bench --devices`` and ``results --format json`` all print this shape.

Standard library only (the device side runs on Python 3.8+ with numpy and one engine).

>>> r = BenchResult.from_dict({"bundle_digest": "ab" * 32, "engine": {"name": "onnxruntime", "version": "1.2"},
...                            "latency_ms": {"p50": 1.0, "p95": 2.0}, "samples_ms": [1.0, 2.0]})
>>> r.latency_ms.p95, r.engine.name, r.schema_version == RESULT_SCHEMA_VERSION
(2.0, 'onnxruntime', True)
>>> "samples_ms" in r.to_dict(), "samples_ms" in r.to_dict(samples=True)
(False, True)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import BundleError

RESULT_SCHEMA = "edgeify-bench-result"
#: 1: the agent's untyped dict (no ``schema_version`` key); 2: this record. Version 1 reads by migration.
RESULT_SCHEMA_VERSION = 2

PERCENTILE_KEYS = ("p50", "p90", "p95", "p99")


class ResultSchemaError(BundleError):
    """A benchmark result written by a newer edgeify, or not a result at all."""

    hint = "upgrade edgeify on this machine (and redeploy the runtime: edgeify deploy BUNDLE --device NAME)"


def _pick(cls: Any, raw: dict[str, Any] | None) -> Any:
    raw = raw or {}
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in raw.items() if k in names})


@dataclass(frozen=True)
class EngineInfo:
    name: str | None = None
    version: str | None = None
    module: str | None = None
    accelerator: str | None = None


@dataclass(frozen=True)
class Latency:
    """Milliseconds over the timed samples (see :func:`edgeify_runtime.stats.summarize`)."""

    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    cv: float | None = None

    def get(self, key: str) -> float | None:
        return getattr(self, key)


@dataclass(frozen=True)
class Protocol:
    """How the samples were taken (TVM's contract: warmup discarded, bounds and threads recorded)."""

    warmup: int | None = None
    warmup_done: int | None = None
    runs: int | None = None
    runs_done: int | None = None
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    stopped_by: str | None = None
    threads: int | None = None
    batch: int | None = None
    seed: int | None = None
    input_shapes: dict[str, list[int]] | None = None
    #: the dynamic dimensions and the size each ran at: {input: {axis name: size}} (``bench --input-shape``)
    dynamic_axes: dict[str, dict[str, int]] | None = None
    verify: bool | None = None
    timer: str | None = None
    timed: str | None = None
    gc_disabled: bool | None = None
    timed_phase_s: float | None = None


@dataclass(frozen=True)
class Budget:
    """The latency budget verdict (``bench --max-latency-ms``); ``met`` False means exit 13."""

    percentile: str
    max_ms: float
    value_ms: float | None
    met: bool


@dataclass(frozen=True)
class Fallback:
    """The engine did not run where the bundle asked (e.g. TensorRT/CUDA providers missing: ran on the CPU)."""

    used: bool = False
    requested: tuple[str, ...] = ()
    active: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    reason: str | None = None


@dataclass(frozen=True)
class BenchResult:
    bundle_digest: str
    #: the bundle's identity: files digest + engine + precision + engine options (``edgeify_runtime.identity``);
    #: None on results written before it existed (their identity is unknown: ``identity`` falls back to the digest)
    bundle_id: str | None = None
    ok: bool = True
    schema: str = RESULT_SCHEMA
    schema_version: int = RESULT_SCHEMA_VERSION
    result_id: int | None = None
    device: str = "local"
    bundle: str | None = None
    target: str | None = None
    precision: str | None = None
    engine: EngineInfo = field(default_factory=EngineInfo)
    latency_ms: Latency = field(default_factory=Latency)
    samples_ms: tuple[float, ...] = ()
    throughput_ips: float | None = None
    load_ms: float | None = None
    first_inference_ms: float | None = None
    verify_ms: float | None = None
    import_ms: float | None = None
    peak_rss_mb: float | None = None
    protocol: Protocol = field(default_factory=Protocol)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    temperatures_after_c: dict[str, Any] | None = None
    started_at: str | None = None
    duration_s: float | None = None
    agent_version: str | None = None
    fallback: Fallback | None = None
    budget: Budget | None = None
    #: per-operator profile (``bench --profile``): {"ops": [...], "placement": {...}, "overhead": ...}
    profile: dict[str, Any] | None = None
    warnings: tuple[str, ...] = ()
    #: what the deployer did before a remote run (status, uploaded bytes, phases)
    deploy: dict[str, Any] | None = None
    #: the optimize run this result belongs to, if any
    run_id: str | None = None
    #: one of several interleaved runs (``bench --repeat N``, ``compare --runs N``): {"id", "index", "count"}
    series: dict[str, Any] | None = None
    #: the device's state during the run (``edgeify_runtime.device_state``): clocks, governor, throttling,
    #: temperatures, load, steal, pressure, energy; null fields where not readable; ``disturbed`` and why
    device_state: dict[str, Any] | None = None
    #: engine-specific extras: ``parity`` (host-vs-device outputs), ``engine_build``, ``trtexec``
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def identity(self) -> str:
        """What compare, gate and ``--bundle`` match on: ``bundle_id``, else (older results) ``bundle_digest``."""
        return self.bundle_id or self.bundle_digest

    @property
    def disturbed(self) -> bool:
        return bool((self.device_state or {}).get("disturbed"))

    # -- reading ----------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: Any) -> BenchResult:
        """Read a result of this schema version, or migrate an older one; refuse a newer one."""
        if not isinstance(raw, dict):
            raise ResultSchemaError(f"a benchmark result must be a JSON object, not {type(raw).__name__}")
        version = raw.get("schema_version", 1)
        if not isinstance(version, int) or version > RESULT_SCHEMA_VERSION or version < 1:
            raise ResultSchemaError(f"benchmark result schema version {version!r} is not one this edgeify reads "
                                    f"(1..{RESULT_SCHEMA_VERSION})")
        if not raw.get("bundle_digest"):
            raise ResultSchemaError("the benchmark result has no bundle_digest")
        names = {f.name for f in dataclasses.fields(cls)}
        extra = dict(raw.get("extra") or {})
        derived = {"sample_count"}  # written by to_dict, recomputed from samples_ms
        extra.update({k: v for k, v in raw.items() if k not in names and k not in derived})  # v1: parity/trtexec
        fb = raw.get("fallback")
        budget = raw.get("budget")
        values = {k: v for k, v in raw.items() if k in names}
        values.update(
            schema=RESULT_SCHEMA, schema_version=RESULT_SCHEMA_VERSION,
            engine=_pick(EngineInfo, raw.get("engine") if isinstance(raw.get("engine"), dict)
                         else {"name": raw.get("engine")}),
            latency_ms=_pick(Latency, raw.get("latency_ms")),
            protocol=_pick(Protocol, raw.get("protocol")),
            samples_ms=tuple(raw.get("samples_ms") or ()),
            warnings=tuple(raw.get("warnings") or ()),
            fallback=None if not fb else Fallback(
                used=bool(fb.get("used")), requested=tuple(fb.get("requested") or ()),
                active=tuple(fb.get("active") or ()), skipped=tuple(fb.get("skipped") or ()),
                reason=fb.get("reason")),
            budget=None if not budget else _pick(Budget, budget),
            fingerprint=dict(raw.get("fingerprint") or {}),
            extra=extra,
        )
        return cls(**values)

    # -- writing ----------------------------------------------------------------------------------------------
    def to_dict(self, *, samples: bool = False) -> dict[str, Any]:
        """The JSON shape; raw samples only when asked (``--samples``), the rest always."""
        out = dataclasses.asdict(self)
        if not samples:
            out.pop("samples_ms")
        else:
            out["samples_ms"] = list(self.samples_ms)
        out["sample_count"] = len(self.samples_ms)
        return out

    def replace(self, **changes: Any) -> BenchResult:
        return dataclasses.replace(self, **changes)

    def with_budget(self, max_ms: float | None, percentile: str) -> BenchResult:
        """The verdict of a latency budget on this result (unchanged when there is no budget)."""
        if max_ms is None:
            return self
        value = self.latency_ms.get(percentile)
        return self.replace(budget=Budget(percentile=percentile, max_ms=float(max_ms), value_ms=value,
                                          met=value is not None and value <= max_ms))


__all__ = ["PERCENTILE_KEYS", "RESULT_SCHEMA", "RESULT_SCHEMA_VERSION", "BenchResult", "Budget", "EngineInfo",
           "Fallback", "Latency", "Protocol", "ResultSchemaError"]
