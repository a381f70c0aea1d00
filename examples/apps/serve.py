"""edgeify example app: an HTTP inference service for one bundle, with dynamic micro-batching and metrics.

Run it (device or host; Python 3.8+, numpy + edgeify-runtime + one engine + ``requirements-serve.txt``)::

    python examples/apps/serve.py --bundle build/digits-x86 --port 8080            # by path
    cd examples/apps && python -m serve --bundle ../../build/digits-x86 --port 8080  # as a module

Once the model is loaded, warmed up and the socket listens, it prints one JSON line on stdout,
``{"event": "ready", "url": "http://127.0.0.1:8080", "port": 8080, ...}`` (``--port 0`` picks a free port;
read it from that line). SIGTERM or SIGINT stops it cleanly: no new connections, requests in flight and
queued are answered, the engine is closed, ``{"event": "stopped"}`` is printed and the exit code is 0.

Endpoints
  ``GET  /healthz``     200 ``{"status": "ok", ...}`` while serving (the model has run once at startup);
                        503 ``{"status": "stopping"}`` during shutdown or when the batcher died.
  ``GET  /v1/model``    the signature (names, shapes, dtypes, layouts), labels, preprocessing, engine,
                        accelerator and the batching settings.
  ``POST /v1/predict``  JSON in, JSON out (below).
  ``GET  /metrics``     Prometheus text format: ``edgeify_requests_total{endpoint,code}``,
                        ``edgeify_request_duration_seconds`` (histogram, per endpoint),
                        ``edgeify_batch_size`` (histogram of samples per engine batch),
                        ``edgeify_queue_wait_seconds``, ``edgeify_inference_duration_seconds`` (histograms),
                        ``edgeify_queue_depth`` (gauge), ``edgeify_model_info`` (labels), process metrics.

Request (``POST /v1/predict``)::

    {"inputs": {"x": [[[[0.0, ...], ...]]]}}       # one array per input name; samples stacked on axis 0
    {"inputs": [[[[0.0, ...]]]]}                    # a single-input model may pass the array alone
    {"inputs": {"x": {"b64": "<base64 of the raw little-endian bytes>", "dtype": "float32",
                      "shape": [1, 3, 224, 224]}}, "encoding": "b64"}    # compact form for large tensors

A request holds n >= 1 samples (axis 0); values are cast to the input's dtype when numpy's ``same_kind``
casting allows it. Response: ``{"outputs": {name: nested lists (or the b64 form when the request said
"encoding": "b64")}, "predictions": [{"index", "label", "score"}, ...] (one per sample, when the bundle or
``--labels`` names the classes of a single (batch, classes) output), "batch": {"size", "queue_ms",
"inference_ms"}}``. Errors are ``{"error": {"type", "message"}}`` with 400 (not JSON, wrong structure,
ragged or non-numeric arrays), 413 (body or sample count over the limits), 422 (does not match the model's
signature: names, ranks, fixed dimensions, dtypes), 503 (queue full, or shutting down; ``Retry-After``),
500 (the engine failed on that batch).

Batching: requests wait in one queue; the engine thread takes the oldest and adds the next ones with the
same per-sample shapes until ``--max-batch`` samples or until the oldest has waited ``--max-wait-ms``, then
runs them as ONE engine call on the stacked tensor and splits the outputs. A bundle with a fixed batch size
B runs in calls of exactly B samples (the last one padded; the padding is discarded). ``--max-batch 1``
turns batching off (each request is one engine call). The default ``--max-wait-ms 0`` never holds a request
back: a batch is what queued while the engine ran the previous one, which measured best on CPUs
(``benchmarks/serve_batching.py``: a fixed wait costs latency at low load and bought no throughput there);
a wait pays where the engine runs big batches much faster per sample (GPUs, NPUs). One engine thread runs batches one
after another: ``Model`` is not thread-safe, and the engine's own threads (``--threads``) use the cores.

Exit codes: 0 clean shutdown; 2 usage error or missing dependency; 5/11/12 the edgeify-runtime errors
(input signature, engine missing or too old, bundle invalid), e.g. from the warmup run; 1 anything else
(e.g. the port is in use).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import os
import signal
import socket
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import edgeify_runtime as er
import numpy as np

log = logging.getLogger("edgeify.serve")

#: request latency buckets (seconds): sub-millisecond (tiny models) up to 10 s (large models on small boards)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
REQUIREMENTS = "pip install -r examples/apps/requirements-serve.txt (starlette, uvicorn, prometheus-client)"


class HTTPError(Exception):
    """An error answered to the client: status code, error type and a message that says what to fix."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = headers or {}


# -- requests: JSON -> validated arrays ----------------------------------------------------------------------

def _numeric(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise HTTPError(400, "bad_request", f"{where}: expected numbers, got {arr.dtype.name} values")
    return arr


def decode_array(value: Any, where: str) -> np.ndarray:
    """A nested list of numbers, or ``{"b64", "dtype", "shape"}`` (raw little-endian bytes), as an array."""
    if isinstance(value, dict):
        missing = [k for k in ("b64", "dtype", "shape") if k not in value]
        if missing:
            raise HTTPError(400, "bad_request", f"{where}: an encoded tensor needs the keys b64, dtype and shape "
                                                f"(missing {', '.join(missing)})")
        try:
            dtype = np.dtype(str(value["dtype"])).newbyteorder("<")
        except TypeError:
            raise HTTPError(400, "bad_request", f"{where}: unknown dtype {value['dtype']!r}") from None
        shape = value["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise HTTPError(400, "bad_request", f"{where}: shape must be a list of non-negative ints, not {shape!r}")
        try:
            raw = base64.b64decode(str(value["b64"]), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise HTTPError(400, "bad_request", f"{where}: b64 is not valid base64 ({exc})") from None
        want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if len(raw) != want:
            raise HTTPError(400, "bad_request", f"{where}: b64 holds {len(raw)} bytes; dtype {dtype.name} and shape "
                                                f"{shape} need {want}")
        return _numeric(np.frombuffer(raw, dtype=dtype).reshape(shape), where)
    if not isinstance(value, (list, int, float)):
        raise HTTPError(400, "bad_request", f"{where}: expected a (nested) list of numbers, not "
                                            f"{type(value).__name__}")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise HTTPError(400, "bad_request", f"{where}: not a rectangular array (ragged nested lists?): {exc}") \
            from None
    return _numeric(arr, where)


def encode_array(arr: np.ndarray, b64: bool) -> Any:
    if b64:
        a = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        return {"b64": base64.b64encode(a.tobytes()).decode("ascii"), "dtype": a.dtype.name, "shape": list(a.shape)}
    return arr.tolist()


def read_labels(path: str | None) -> list[str] | None:
    if not path:
        return None
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    return [ln for ln in lines if ln]


def scores_of(row: np.ndarray) -> np.ndarray:
    """Class scores of one output row: the row itself when it already is a distribution, else its softmax."""
    row = row.astype(np.float64, copy=False)
    if row.size and row.min() >= 0.0 and abs(float(row.sum()) - 1.0) <= 1e-3:
        return row
    e = np.exp(row - row.max())
    return e / e.sum()


# -- the batcher ---------------------------------------------------------------------------------------------

class _Item:
    __slots__ = ("feeds", "future", "key", "n", "t_in")

    def __init__(self, feeds: dict[str, np.ndarray], n: int, key: Any, future: asyncio.Future) -> None:
        self.feeds = feeds
        self.n = n
        self.key = key
        self.future = future
        self.t_in = time.perf_counter()


class Batcher:
    """Dynamic micro-batching in front of one Model: one queue, one engine thread, one engine call per batch.

    ``submit`` (on the event loop) queues a request of ``n`` samples and resolves to its slice of the outputs.
    The batch loop waits for the oldest request, then adds queued requests with the same ``key`` (per-sample
    shapes and dtypes) while the batch has room (``max_batch`` samples) and the oldest has waited less than
    ``max_wait_s``; it runs ``infer(stacked feeds)`` in the engine thread and splits the outputs on axis 0.
    """

    def __init__(self, infer: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], *, max_batch: int,
                 max_wait_s: float, max_queue: int, on_batch: Callable[[int, float, float], None] | None = None,
                 batchable: bool = True) -> None:
        self.infer = infer
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s if max_batch > 1 else 0.0
        self.max_queue = max_queue
        self.batchable = batchable
        self.on_batch = on_batch
        self.queued_samples = 0
        self._items: deque[_Item] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgeify-engine")

    # lifetime (call both on the event loop)
    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self, drain_timeout: float = 30.0) -> None:
        """Answer what is queued (up to ``drain_timeout`` s; later ones get 503), then stop the engine thread."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), drain_timeout)
            except asyncio.TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        while self._items:
            item = self._items.popleft()
            if not item.future.done():
                item.future.set_exception(HTTPError(503, "unavailable", "the service is shutting down",
                                                    {"Retry-After": "1"}))
        self._executor.shutdown(wait=True)

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closing

    async def submit(self, feeds: dict[str, np.ndarray], n: int, key: Any) -> tuple[dict[str, np.ndarray], dict]:
        if self._closing or self._wake is None:
            raise HTTPError(503, "unavailable", "the service is shutting down", {"Retry-After": "1"})
        if self.queued_samples + n > self.max_queue:
            raise HTTPError(503, "overloaded", f"queue full ({self.queued_samples} samples waiting, limit "
                                               f"{self.max_queue}); retry later", {"Retry-After": "1"})
        future = asyncio.get_running_loop().create_future()
        self._items.append(_Item(feeds, n, key, future))
        self.queued_samples += n
        self._wake.set()
        return await future

    def _take(self, batch: list[_Item], total: int) -> int:
        """Move queued requests that fit the batch (same key, room left) into it; return the new total."""
        first = batch[0]
        while self._items and self.batchable:
            item = self._items[0]
            if item.future.done():  # its client went away
                self._items.popleft()
                self.queued_samples -= item.n
                continue
            if item.key != first.key or total + item.n > self.max_batch:
                break
            self._items.popleft()
            self.queued_samples -= item.n
            batch.append(item)
            total += item.n
        return total

    async def _next_batch(self) -> list[_Item] | None:
        assert self._wake is not None
        while True:
            while self._items and self._items[0].future.done():
                self.queued_samples -= self._items.popleft().n
            if self._items:
                break
            if self._closing:
                return None
            self._wake.clear()
            await self._wake.wait()
        first = self._items.popleft()
        self.queued_samples -= first.n
        batch, total = [first], first.n
        deadline = first.t_in + self.max_wait_s
        while self.batchable and total < self.max_batch:
            total = self._take(batch, total)
            remaining = deadline - time.perf_counter()
            if total >= self.max_batch or remaining <= 0 or self._closing or \
                    (self._items and self._items[0].key != first.key) or \
                    (self._items and total + self._items[0].n > self.max_batch):
                break
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if batch is None:
                return
            t0 = time.perf_counter()
            names = list(batch[0].feeds)
            stacked = batch[0].feeds if len(batch) == 1 else \
                {k: np.concatenate([it.feeds[k] for it in batch], axis=0) for k in names}
            total = sum(it.n for it in batch)
            try:
                outputs = await loop.run_in_executor(self._executor, self.infer, stacked)
            except Exception as exc:  # one failed batch fails its requests, never the service
                log.error("engine call failed on a batch of %d samples: %s: %s", total, type(exc).__name__, exc)
                err = HTTPError(500, "engine_error", f"the engine failed: {type(exc).__name__}: {exc}")
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(err)
                continue
            t1 = time.perf_counter()
            meta = {"size": total, "inference_ms": round((t1 - t0) * 1e3, 3)}
            if self.on_batch is not None:
                self.on_batch(total, t1 - t0, max(t0 - it.t_in for it in batch))
            offset = 0
            for it in batch:
                if not it.future.done():
                    part = {k: v[offset:offset + it.n] for k, v in outputs.items()} if len(batch) > 1 else outputs
                    it.future.set_result((part, dict(meta, queue_ms=round((t0 - it.t_in) * 1e3, 3))))
                offset += it.n


# -- the service: model + signature checks + batcher + metrics ------------------------------------------------

class Service:
    """Everything the HTTP layer needs; usable without HTTP (tests, other servers)."""

    def __init__(self, model: er.Model, *, max_batch: int = 8, max_wait_ms: float = 0.0, max_queue: int = 1024,
                 max_request_samples: int = 256, labels: list[str] | None = None,
                 registry: Any = None) -> None:
        self.model = model
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
        feeds = {}
        for t in self.inputs:
            shape = [d if isinstance(d, int) else 1 for d in t.shape]
            feeds[t.name] = np.zeros(shape, np.dtype(t.dtype))
        self.infer(feeds)

    # requests
    def parse(self, body: bytes) -> tuple[dict[str, np.ndarray], int, Any, bool]:
        """Validate a /v1/predict body; return (feeds, samples, batching key, b64 output)."""
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise HTTPError(400, "bad_request", f"the body is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or "inputs" not in doc:
            raise HTTPError(400, "bad_request", 'expected a JSON object {"inputs": {name: array, ...}}; '
                                                f"the model's inputs: {self.describe_inputs()}")
        encoding = doc.get("encoding", "json")
        if encoding not in ("json", "b64"):
            raise HTTPError(400, "bad_request", f'"encoding" must be "json" or "b64", not {encoding!r}')
        raw = doc["inputs"]
        names = [t.name for t in self.inputs]
        single = not isinstance(raw, dict) or ("b64" in raw and "b64" not in names)  # one tensor, not a map
        if single:
            if len(names) != 1:
                raise HTTPError(422, "signature_mismatch", f"this model has {len(names)} inputs; pass "
                                                           f'"inputs" as an object {{name: array}}: '
                                                           f"{self.describe_inputs()}")
            raw = {names[0]: raw}
        unknown = [k for k in raw if k not in names]
        missing = [n for n in names if n not in raw]
        if unknown or missing:
            parts = ([f"unknown input(s) {unknown}"] if unknown else []) + \
                    ([f"missing input(s) {missing}"] if missing else [])
            raise HTTPError(422, "signature_mismatch", "; ".join(parts) + f"; the model's inputs: "
                                                                          f"{self.describe_inputs()}")
        feeds: dict[str, np.ndarray] = {}
        counts = set()
        for t in self.inputs:
            arr = decode_array(raw[t.name], f"input {t.name!r}")
            feeds[t.name] = self._conform(t, arr)
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

    def _conform(self, spec: er.TensorSpec, arr: np.ndarray) -> np.ndarray:
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
        if arr.dtype != want:
            if not np.can_cast(arr.dtype, want, casting="same_kind"):
                raise HTTPError(422, "signature_mismatch", f"input {name!r}: expected {want.name}, got "
                                                           f"{arr.dtype.name} values that cannot be cast safely")
            arr = arr.astype(want)
        return np.ascontiguousarray(arr)

    def describe_inputs(self) -> str:
        return ", ".join(f"{t.name} {list(t.shape)} {t.dtype}" for t in self.inputs)

    def render(self, outputs: dict[str, np.ndarray], meta: dict[str, Any], b64: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {"outputs": {k: encode_array(v, b64) for k, v in outputs.items()}}
        labels = self.labels
        if labels and len(outputs) == 1:
            out = next(iter(outputs.values()))
            if out.ndim == 2 and out.shape[1] == len(labels):
                preds = []
                for row in out:
                    s = scores_of(row)
                    i = int(np.argmax(s))
                    preds.append({"index": i, "label": labels[i], "score": round(float(s[i]), 6)})
                doc["predictions"] = preds
        doc["batch"] = meta
        return doc

    def describe(self) -> dict[str, Any]:
        m = self.model
        return {
            "bundle": str(m.bundle_dir), "bundle_digest": m.manifest.bundle_digest, "target": m.manifest.target,
            "engine": m.engine_name, "engine_version": m.engine_version, "accelerator": m.accelerator,
            "fallback": m.fallback, "precision": m.precision, "threads": m.threads,
            "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
            "labels": self.labels, "preprocessing": m.preprocessing,
            "batching": {"enabled": self.batchable and self.max_batch > 1, "max_batch": self.max_batch,
                         "max_wait_ms": self.max_wait_ms, "fixed_batch": self.fixed_batch,
                         "max_request_samples": self.max_request_samples},
        }


# -- HTTP (Starlette on uvicorn) -----------------------------------------------------------------------------

def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import Response

    return Response(json.dumps(doc), status_code=status, media_type="application/json", headers=headers)


async def _read_body(request: Any, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise HTTPError(413, "too_large", f"body of {length} bytes; the limit is {limit} (--max-body-mb)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, "too_large", f"body over {limit} bytes (--max-body-mb)")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(service: Service, *, max_body_bytes: int = 32 << 20, drain_timeout: float = 30.0) -> Any:
    """The Starlette app: routes, and a lifespan that starts the batcher and drains it on shutdown."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    def timed(endpoint: str, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        async def wrapped(request: Any) -> Any:
            t0 = time.perf_counter()
            code = 500
            try:
                response = await handler(request)
            except HTTPError as err:
                response = _json({"error": {"type": err.kind, "message": err.message}}, err.status, err.headers)
            except Exception as exc:  # pragma: no cover - a bug in this app; answer, log, keep serving
                log.exception("%s failed", endpoint)
                response = _json({"error": {"type": "internal", "message": f"{type(exc).__name__}: {exc}"}}, 500)
            code = response.status_code
            service.m_requests.labels(endpoint, str(code)).inc()
            service.m_latency.labels(endpoint).observe(time.perf_counter() - t0)
            return response
        return wrapped

    async def healthz(request: Any) -> Any:
        if not service.batcher.alive:
            return _json({"status": "stopping"}, 503, {"Retry-After": "1"})
        return _json({"status": "ok", "bundle_digest": service.model.manifest.bundle_digest,
                      "engine": service.model.engine_name, "accelerator": service.model.accelerator,
                      "uptime_s": round(time.time() - service.started_at, 3),
                      "queue_depth": service.batcher.queued_samples})

    async def model_info(request: Any) -> Any:
        return _json(service.describe())

    async def predict(request: Any) -> Any:
        feeds, n, key, b64 = service.parse(await _read_body(request, max_body_bytes))
        outputs, meta = await service.batcher.submit(feeds, n, key)
        return _json(service.render(outputs, meta, b64))

    async def metrics(request: Any) -> Any:
        return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        service.batcher.start()
        try:
            yield
        finally:
            await service.batcher.stop(drain_timeout)

    routes = [Route("/healthz", timed("/healthz", healthz), methods=["GET"]),
              Route("/v1/model", timed("/v1/model", model_info), methods=["GET"]),
              Route("/v1/predict", timed("/v1/predict", predict), methods=["POST"]),
              Route("/metrics", metrics, methods=["GET"])]
    return Starlette(routes=routes, lifespan=lifespan)


# -- command line ---------------------------------------------------------------------------------------------

def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)  # JSON values: lists, numbers, objects; never eval
    except ValueError:
        return key, value  # a plain string, e.g. device=GPU


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="serve", description="HTTP inference service for an edgeify bundle "
                                "(micro-batching, /healthz, /v1/predict, /metrics).")
    p.add_argument("--bundle", required=True, help="bundle directory (edgeify build -o DIR)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for "
                                                       "every interface)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080; 0 picks a free one)")
    p.add_argument("--max-batch", type=int, default=8, help="samples per engine call at most (default 8; 1 "
                                                           "turns batching off)")
    p.add_argument("--max-wait-ms", type=float, default=0.0, help="how long the oldest queued request may wait "
                   "for others (default 0: a batch is what queued while the engine was busy, the best setting "
                   "measured on CPUs by benchmarks/serve_batching.py; raise it where bigger batches pay, e.g. "
                   "accelerators)")
    p.add_argument("--max-queue", type=int, default=1024, help="queued samples before 503 (default 1024)")
    p.add_argument("--max-request-samples", type=int, default=256, help="samples in one request (default 256)")
    p.add_argument("--max-body-mb", type=float, default=32.0, help="request body limit in MiB (default 32)")
    p.add_argument("--threads", type=int, default=None, help="engine threads (default: physical cores)")
    p.add_argument("--option", action="append", type=_parse_option, default=[], metavar="KEY=VALUE",
                   help="engine load option (JSON value or string), e.g. providers='[\"CUDAExecutionProvider\"]' "
                        "or device=GPU; repeatable")
    p.add_argument("--cpu-fallback", action="store_true", help="run on the CPU when the accelerator the options "
                                                               "ask for is missing (logged, in /v1/model)")
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the bundle files")
    p.add_argument("--no-warmup", action="store_true", help="skip the startup inference on zeros")
    p.add_argument("--labels", help="class names file, one per line (default: the manifest's labels)")
    p.add_argument("--shutdown-timeout", type=float, default=10.0, help="seconds to finish requests on SIGTERM")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument("--access-log", action="store_true", help="log every request (uvicorn access log)")
    return p


def listen(host: str, port: int, family: int) -> socket.socket:
    """A listening TCP socket. Its protocol must be IPPROTO_TCP (not 0, as ``socket.create_server`` leaves it):
    asyncio sets TCP_NODELAY only on connections from such sockets, and without it every keep-alive response
    written in two parts waits ~40 ms for the client's delayed ACK."""
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


def _fail(message: str, hint: str = "", code: int = 1) -> int:
    print(f"serve: error: {message}", file=sys.stderr)
    if hint:
        print(f"fix: {hint}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for flag, value in (("--max-batch", args.max_batch), ("--max-queue", args.max_queue),
                        ("--max-request-samples", args.max_request_samples)):
        if value < 1:
            return _fail(f"{flag} must be >= 1, not {value}", code=2)
    if not (args.max_wait_ms >= 0 and math.isfinite(args.max_wait_ms)):
        return _fail(f"--max-wait-ms must be >= 0, not {args.max_wait_ms}", code=2)
    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as exc:
        return _fail(f"missing dependency: {exc}", REQUIREMENTS, code=2)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    with warnings_to_log():
        try:
            model = er.load(args.bundle, threads=args.threads, verify=not args.no_verify,
                            options=dict(args.option) or None, cpu_fallback=args.cpu_fallback)
        except er.EdgeifyRuntimeError as err:
            return _fail(err.message, err.hint, err.exit_code)
        except (OSError, ValueError) as exc:
            return _fail(str(exc), code=2)
    try:
        labels = read_labels(args.labels)
        service = Service(model, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                          max_request_samples=args.max_request_samples, labels=labels)
        if not args.no_warmup:
            service.warmup()
    except er.EdgeifyRuntimeError as err:
        model.close()
        return _fail(f"warmup inference failed: {err.message}", err.hint or "pass --no-warmup to skip it",
                     err.exit_code)
    except Exception as exc:
        model.close()
        return _fail(f"startup failed: {type(exc).__name__}: {exc}")
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    try:
        sock = listen(args.host, args.port, family)
    except OSError as exc:
        model.close()
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc}", "pick another --port, or stop the "
                                                                        "process that holds it")
    port = sock.getsockname()[1]
    app = create_app(service, max_body_bytes=int(args.max_body_mb * (1 << 20)),
                     drain_timeout=args.shutdown_timeout)
    config = uvicorn.Config(app, lifespan="on", log_level=args.log_level, access_log=args.access_log,
                            timeout_graceful_shutdown=args.shutdown_timeout, server_header=False)
    server = uvicorn.Server(config)
    host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    ready = {"event": "ready", "url": f"http://{host}:{port}", "port": port, "pid": os.getpid(),
             "bundle_digest": model.manifest.bundle_digest, "engine": model.engine_name,
             "accelerator": model.accelerator, "fallback": model.fallback, "max_batch": args.max_batch,
             "max_wait_ms": args.max_wait_ms}

    async def run() -> None:
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            print(json.dumps(ready), flush=True)
        await task

    # uvicorn handles SIGINT/SIGTERM while serving and re-raises them afterwards: these no-op handlers take
    # that re-raise, so a clean shutdown exits 0 instead of dying by the signal
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        asyncio.run(run())
    finally:
        sock.close()
        model.close()
    print(json.dumps({"event": "stopped", "pid": os.getpid()}), flush=True)
    return 0


@contextlib.contextmanager
def warnings_to_log() -> Any:
    """Print warnings raised while loading (the runtime's CPUFallbackWarning) as one stderr line each."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", er.CPUFallbackWarning)
        yield
    for w in caught:
        print(f"serve: warning: {w.category.__name__}: {w.message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
