"""The service: a loaded Model, its signature checks, the batcher and the Prometheus metrics (no HTTP here)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict

import numpy as np

from ..manifest import TensorSpec
from ..session import Model
from .batcher import Batcher
from .codec import HTTPError, decode_request, non_finite, render

#: request latency buckets (seconds): sub-millisecond (tiny models) up to 10 s (large models on small boards)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

Feeds = Dict[str, np.ndarray]


def read_labels(path: str | None) -> list[str] | None:
    if not path:
        return None
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    return [ln for ln in lines if ln]


#: engine calls measured at startup for the default latency budget (no --latency-budget-ms, none in the bundle)
DEFAULT_BUDGET_RUNS = 30

class Service:
    """Everything the HTTP layer needs; usable without HTTP (tests, other servers)."""

    def __init__(self, model: Model, *, max_batch: int = 8, max_wait_ms: float = 0.0, max_queue: int = 1024,
                 max_request_samples: int = 256, labels: list[str] | None = None,
                 registry: Any = None, name: str | None = None, latency_budget_ms: float | None = None,
                 budget_source: str = "given") -> None:
        self.model = model
        self.max_queue = max_queue
        #: the p95 latency the alert rules hold the service to (``--latency-budget-ms``), exported as a gauge
        self.latency_budget_ms = latency_budget_ms
        self.budget_source = budget_source
        #: the name the model is served under (Open Inference Protocol)
        self.name = name or model.bundle_dir.absolute().name
        self.labels = labels if labels is not None else model.labels
        self.max_request_samples = max_request_samples
        self.started_at = time.time()
        self.inputs = list(model.inputs)
        self.outputs = list(model.outputs)
        self.fixed_batch, self.batchable = self._batch_axis()
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self._init_metrics(registry)
        self.batcher = Batcher(self.infer, max_batch=max_batch, max_wait_s=max_wait_ms / 1e3, max_queue=max_queue,
                               on_batch=self._observe_batch, batchable=self.batchable)

    def _batch_axis(self) -> tuple[int | None, bool]:
        """(fixed batch size or None when dynamic, whether requests can be stacked on axis 0)."""
        specs = self.inputs + self.outputs
        if not specs or any(len(t.shape) == 0 for t in specs):
            return None, False
        first = {t.shape[0] for t in self.inputs}
        if len(first) != 1 or {t.shape[0] for t in self.outputs} != first:
            return None, False
        dim = next(iter(first))
        return (dim if isinstance(dim, int) else None), True

    # metrics
    def _init_metrics(self, registry: Any) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

        if registry is None:
            registry = CollectorRegistry(auto_describe=True)
            ProcessCollector(registry=registry)
        self.registry = registry
        self.m_requests = Counter("edgeify_requests", "HTTP requests by endpoint and status code",
                                  ["endpoint", "code"], registry=registry)
        self.m_latency = Histogram("edgeify_request_duration_seconds", "Time from request received to response "
                                   "ready, by endpoint", ["endpoint"], buckets=LATENCY_BUCKETS, registry=registry)
        self.m_batch = Histogram("edgeify_batch_size", "Samples per engine batch", buckets=BATCH_BUCKETS,
                                 registry=registry)
        self.m_infer = Histogram("edgeify_inference_duration_seconds", "Engine time per batch",
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.m_wait = Histogram("edgeify_queue_wait_seconds", "Longest queue wait of the requests in a batch",
                                buckets=LATENCY_BUCKETS, registry=registry)
        self.m_queue = Gauge("edgeify_queue_depth", "Samples waiting for a batch", registry=registry)
        self.m_queue.set_function(lambda: self.batcher.queued_samples)
        Gauge("edgeify_queue_capacity", "Samples the queue holds before it answers 503 (--max-queue)",
              registry=registry).set(self.max_queue)
        #: source label: "given" (--latency-budget-ms), "manifest" (the bundle's budget) or "measured" (at startup)
        self.m_budget = Gauge("edgeify_latency_budget_seconds", "The p95 request latency this service must stay "
                              "within: --latency-budget-ms, else the bundle's budget, else measured at startup",
                              ["source"], registry=registry)
        if self.latency_budget_ms is not None:
            self.m_budget.labels(self.budget_source).set(self.latency_budget_ms / 1e3)
        m = self.model
        info = Gauge("edgeify_model_info", "The loaded bundle (value 1)",
                     ["bundle_digest", "target", "engine", "engine_version", "precision", "accelerator",
                      "max_batch", "max_wait_ms"], registry=registry)
        info.labels(m.manifest.bundle_digest, m.manifest.target or "", m.engine_name, m.engine_version,
                    m.precision, m.accelerator, str(self.max_batch), str(self.max_wait_ms)).set(1)

    def _observe_batch(self, size: int, infer_s: float, wait_s: float) -> None:
        self.m_batch.observe(size)
        self.m_infer.observe(infer_s)
        self.m_wait.observe(wait_s)

    # inference (engine thread)
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        b = self.fixed_batch
        n = len(next(iter(feeds.values())))
        if b is None or not self.batchable or n == b:
            return self.model.run(feeds)
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, n, b):  # a fixed-shape engine: calls of exactly b samples, the last one padded
            chunk = {k: v[start:start + b] for k, v in feeds.items()}
            real = len(next(iter(chunk.values())))
            if real < b:
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], b - real, axis=0)]) for k, v in chunk.items()}
            out = self.model.run(chunk)
            parts.append({k: v[:real] for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def warmup(self) -> None:
        """One real inference on zeros (dynamic dimensions: 1), so that /healthz means "the model runs"."""
        self.infer(self._zeros())

    def _zeros(self) -> Feeds:
        feeds = {}
        for t in self.inputs:
            shape = [d if isinstance(d, int) else 1 for d in t.shape]
            feeds[t.name] = np.zeros(shape, np.dtype(t.dtype))
        return feeds

    def budget_from_measurement(self, runs: int = DEFAULT_BUDGET_RUNS) -> float:
        """With no budget given: the alert threshold from this bundle's own p95 on this device, measured now
        (``runs`` engine calls at batch 1): max(3 x p95, p95 + 20 ms), the 20 ms covering HTTP, decoding and
        queueing. Exported with ``source="measured"``; returns the threshold in ms."""
        feeds = self._zeros()
        times = []
        for _ in range(max(5, runs)):
            t0 = time.perf_counter()
            self.model.run(feeds)
            times.append((time.perf_counter() - t0) * 1e3)
        p95 = float(np.percentile(times, 95))
        self.latency_budget_ms = max(3.0 * p95, p95 + 20.0)
        self.budget_source = "measured"
        self.m_budget.labels("measured").set(self.latency_budget_ms / 1e3)
        return self.latency_budget_ms

    # requests
    def parse(self, body: bytes) -> tuple[Feeds, int, Any, bool]:
        """Validate a /v1/predict body; return (feeds, samples, batching key, b64 output)."""
        return self.check(*self.decode(body))

    def decode(self, body: bytes) -> tuple[Feeds, str]:
        """The body's arrays and encoding (:func:`codec.decode_request`, with the model's inputs in errors)."""
        try:
            return decode_request(body, [t.name for t in self.inputs])
        except HTTPError as err:
            err.message = f"{err.message}; the model's inputs: {self.describe_inputs()}"
            raise

    def check(self, raw: Feeds, encoding: str, exact_dtype: bool = False) -> tuple[Feeds, int, Any, bool]:
        """Conform decoded arrays to the signature; return (feeds, samples, batching key, b64 output).
        ``exact_dtype``: refuse another dtype instead of casting it (the Open Inference Protocol's datatypes)."""
        feeds: Feeds = {}
        counts = set()
        for t in self.inputs:
            arr = raw[t.name]
            feeds[t.name] = self._conform(t, arr, exact_dtype)
            if self.batchable:
                counts.add(arr.shape[0])
        if len(counts) > 1:
            raise HTTPError(422, "signature_mismatch", f"inputs hold different sample counts {sorted(counts)} on "
                                                       "axis 0; every input needs the same number of samples")
        n = counts.pop() if counts else 1
        if self.batchable and n < 1:
            raise HTTPError(422, "signature_mismatch", "a request needs at least one sample (axis 0 is 0)")
        if n > self.max_request_samples:
            raise HTTPError(413, "too_large", f"{n} samples in one request; the limit is "
                                              f"{self.max_request_samples} (--max-request-samples)")
        key = tuple((k, v.shape[1:], v.dtype.str) for k, v in feeds.items())
        return feeds, n, key, encoding == "b64"

    def _conform(self, spec: TensorSpec, arr: np.ndarray, exact_dtype: bool = False) -> np.ndarray:
        name, shape = spec.name, spec.shape
        if arr.ndim != len(shape):
            raise HTTPError(422, "signature_mismatch", f"input {name!r}: expected rank {len(shape)} (shape "
                                                       f"{list(shape)}, samples on axis 0), got shape "
                                                       f"{list(arr.shape)}")
        for axis, dim in enumerate(shape):
            if isinstance(dim, int) and (axis > 0 or not self.batchable) and arr.shape[axis] != dim:
                raise HTTPError(422, "signature_mismatch", f"input {name!r}: dimension {axis} must be {dim} "
                                                           f"(shape {list(shape)}), got shape {list(arr.shape)}")
        want = np.dtype(spec.dtype)
        if exact_dtype and arr.dtype.newbyteorder("=") != want:
            raise HTTPError(422, "signature_mismatch", f"input {name!r}: expected datatype {want.name}, got "
                                                       f"{arr.dtype.name}")
        if arr.dtype != want:
            if not np.can_cast(arr.dtype, want, casting="same_kind"):
                raise HTTPError(422, "signature_mismatch", f"input {name!r}: expected {want.name}, got "
                                                           f"{arr.dtype.name} values that cannot be cast safely")
            with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below
                cast = arr.astype(want)
            if want.kind == "f" and non_finite(cast) and not non_finite(arr):
                raise HTTPError(422, "signature_mismatch", f"input {name!r}: values out of the range of "
                                                           f"{want.name} (they would become infinite)")
            arr = cast
        return np.ascontiguousarray(arr)

    def describe_inputs(self) -> str:
        return ", ".join(f"{t.name} {list(t.shape)} {t.dtype}" for t in self.inputs)

    def render(self, outputs: dict[str, np.ndarray], meta: dict[str, Any], b64: bool) -> dict[str, Any]:
        return render(outputs, meta, b64, self.labels)

    def describe(self) -> dict[str, Any]:
        m = self.model
        return {
            "bundle": self.name, "bundle_digest": m.manifest.bundle_digest, "target": m.manifest.target,
            "engine": m.engine_name, "engine_version": m.engine_version, "accelerator": m.accelerator,
            "fallback": m.fallback, "precision": m.precision, "threads": m.threads,
            "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
            "labels": self.labels, "preprocessing": m.preprocessing,
            "batching": {"enabled": self.batchable and self.max_batch > 1, "max_batch": self.max_batch,
                         "max_wait_ms": self.max_wait_ms, "fixed_batch": self.fixed_batch,
                         "max_request_samples": self.max_request_samples},
        }


__all__ = ["BATCH_BUCKETS", "LATENCY_BUCKETS", "Service", "read_labels"]
