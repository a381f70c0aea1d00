"""The HTTP layer (Starlette on uvicorn): routes, the bearer token, request bodies read with limits and
decoded off the event loop, errors as JSON.

Bodies up to ``inline_bytes`` are decoded on the event loop (a few ms), and so are binary-tensor bodies (the
Open Inference Protocol's binary extension, what tritonclient sends) whose JSON header is that small and whose
total is at most ``raw_inline_bytes``: their tensors are copied, not parsed. Larger ones wait for one of
``max_large_bodies`` slots before they are even read (so at most that many large bodies are in memory at
once) and are decoded in a worker process, so that ``/healthz`` and small requests keep being answered while a
32 MiB JSON body is parsed. The gRPC server (``grpc_server``) shares the slots and the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from typing import Any, Awaitable, Callable

from .codec import HTTPError, decode_request, render_bytes
from .oip import oip_routes
from .responses import json_response
from .service import Service

log = logging.getLogger("edgeify.serve")

Handler = Callable[[Any], Awaitable[Any]]


class Bodies:
    """Reads request bodies within the limits and decodes them (large ones in a worker process)."""

    def __init__(self, *, max_body_bytes: int, inline_bytes: int = 256 << 10, max_large_bodies: int = 2,
                 wait_s: float = 30.0, raw_inline_bytes: int = 4 << 20, body_timeout: float = 30.0) -> None:
        self.max_body_bytes = max_body_bytes
        #: seconds a request body may go without sending a byte (``--body-timeout``), then 408
        self.body_timeout = body_timeout
        self.inline_bytes = inline_bytes
        self.raw_inline_bytes = raw_inline_bytes
        self.max_large = max_large_bodies
        self.wait_s = wait_s
        self._slots: asyncio.Semaphore | None = None
        self._pool: Any = None

    def _executor(self) -> Any:
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: the engine's and the server's threads must not be forked mid-flight
            self._pool = ProcessPoolExecutor(max_workers=self.max_large,
                                             mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    async def read(self, request: Any) -> bytes:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > self.max_body_bytes:
            raise HTTPError(413, "too_large", f"body of {length} bytes; the limit is {self.max_body_bytes} "
                                              "(--max-body-mb)")
        chunks, size = [], 0
        stream = request.stream().__aiter__()
        while True:
            try:
                chunk = await asyncio.wait_for(stream.__anext__(), self.body_timeout)
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                raise HTTPError(408, "timeout", f"no body bytes for {self.body_timeout:g} s (--body-timeout); "
                                                f"{size} bytes read", {"Connection": "close"}) from None
            size += len(chunk)
            if size > self.max_body_bytes:
                raise HTTPError(413, "too_large", f"body over {self.max_body_bytes} bytes (--max-body-mb)")
            chunks.append(chunk)
        return b"".join(chunks)

    def small(self, size: int, parsed: int | None = None) -> bool:
        """Whether a body of ``size`` bytes, ``parsed`` of which need parsing (the rest raw tensor bytes; None:
        all), is decoded on the event loop."""
        if size <= self.inline_bytes:
            return True
        return parsed is not None and parsed <= self.inline_bytes and size <= self.raw_inline_bytes

    @staticmethod
    def _length(request: Any, header: str) -> int | None:
        value = request.headers.get(header)
        return int(value) if value and value.isdigit() else None

    def _large(self, request: Any, parsed_header: str | None) -> bool:
        length = self._length(request, "content-length")
        return length is None or not self.small(length, self._length(request, parsed_header) if parsed_header
                                                else None)

    @contextlib.asynccontextmanager
    async def large_slot(self) -> Any:
        """One of the ``max_large_bodies`` slots for the block; 503 after ``wait_s``."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_large)
        try:
            await asyncio.wait_for(self._slots.acquire(), self.wait_s)
        except asyncio.TimeoutError:
            raise HTTPError(503, "overloaded", f"{self.max_large} large request bodies are being processed; retry "
                                               "later", {"Retry-After": "1"}) from None
        try:
            yield
        finally:
            self._slots.release()

    @contextlib.asynccontextmanager
    async def slot(self, request: Any, parsed_header: str | None = None) -> Any:
        """A large-body slot for the block (none needed for a small body); 503 after ``wait_s``.
        ``parsed_header``: the request header that says how much of the body needs parsing (the rest is raw)."""
        if not self._large(request, parsed_header):
            yield False
            return
        async with self.large_slot():
            yield True

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a decode worker process (``fn`` and its arguments must be picklable)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(), fn, *args)

    async def offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a decode worker, holding a large-body slot (the gRPC server's large messages)."""
        async with self.large_slot():
            return await self.run(fn, *args)

    async def decode(self, request: Any, decode: Callable[..., Any], *args: Any,
                     parsed_header: str | None = None) -> Any:
        """Read the body and run ``decode(body, *args)``: inline for a small body, in a worker for a large one."""
        async with self.slot(request, parsed_header) as large:
            body = await self.read(request)
            parsed = self._length(request, parsed_header) if parsed_header else None
            if not large or self.small(len(body), parsed):
                return decode(body, *args)
            return await self.run(decode, body, *args)

    async def encode(self, nbytes: int, render: Callable[..., Any], *args: Any,
                     rendered_nbytes: int | None = None) -> Any:
        """``render(*args)``: inline for a small response (``nbytes`` of arrays), in a worker for a large one
        (turning millions of numbers into JSON holds the interpreter lock for seconds). ``rendered_nbytes``: how
        many of the ``nbytes`` become JSON numbers (the rest is copied as binary tensor data; None: all)."""
        if nbytes <= self.inline_bytes // 4 or (rendered_nbytes is not None and rendered_nbytes <= self.inline_bytes
                                                 // 4 and nbytes <= self.raw_inline_bytes):
            return render(*args)
        return await self.run(render, *args)


class Guard:
    """The optional bearer token (``Authorization: Bearer <token>``), compared in constant time."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def check(self, request: Any) -> None:
        if self._token is None:
            return
        got = request.headers.get("authorization", "")
        scheme, _, value = got.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self._token):
            raise HTTPError(401, "unauthorized", "missing or wrong bearer token (Authorization: Bearer <token>)",
                            {"WWW-Authenticate": "Bearer"})


def v1_error(err: HTTPError) -> Any:
    return json_response({"error": {"type": err.kind, "message": err.message}}, err.status, err.headers)


def v2_error(err: HTTPError) -> Any:
    """The Open Inference Protocol's error body: ``{"error": "<message>"}``."""
    return json_response({"error": err.message}, err.status, err.headers)


def endpoint(service: Service, guard: Guard, name: str, handler: Handler,
             render_error: Callable[[HTTPError], Any] = v1_error) -> Handler:
    """``handler`` behind the token, with its errors rendered and its requests counted and timed."""

    async def wrapped(request: Any) -> Any:
        t0 = time.perf_counter()
        try:
            guard.check(request)
            response = await handler(request)
        except HTTPError as err:
            response = render_error(err)
        except Exception as exc:  # a bug in this app: answer, log, keep serving
            log.exception("%s failed", name)
            response = render_error(HTTPError(500, "internal", f"{type(exc).__name__}: {exc}"))
        service.m_requests.labels(name, str(response.status_code)).inc()
        service.m_latency.labels(name).observe(time.perf_counter() - t0)
        return response

    return wrapped


def create_app(service: Service, *, max_body_bytes: int = 32 << 20, drain_timeout: float = 30.0,
               token: str | None = None, max_large_bodies: int = 2, inline_body_bytes: int = 256 << 10,
               bodies: Bodies | None = None) -> Any:
    """The Starlette app: /healthz, /v1, /metrics and the Open Inference Protocol's /v2; a lifespan that starts
    the batcher and drains it on shutdown. ``bodies``: the body reader to use (shared with the gRPC server; its
    caller then closes it), else one of its own, closed with the app."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    guard = Guard(token)
    own_bodies = bodies is None
    if bodies is None:
        bodies = Bodies(max_body_bytes=max_body_bytes, inline_bytes=inline_body_bytes,
                        max_large_bodies=max_large_bodies)
    names = [t.name for t in service.inputs]

    async def healthz(request: Any) -> Any:
        if not service.batcher.alive:
            return json_response({"status": "stopping"}, 503, {"Retry-After": "1"})
        return json_response({"status": "ok", "bundle_digest": service.model.manifest.bundle_digest,
                              "engine": service.model.engine_name, "accelerator": service.model.accelerator,
                              "uptime_s": round(time.time() - service.started_at, 3),
                              "queue_depth": service.batcher.queued_samples})

    async def model_info(request: Any) -> Any:
        return json_response(service.describe())

    async def predict(request: Any) -> Any:
        try:
            raw, encoding = await bodies.decode(request, decode_request, names)
        except HTTPError as err:
            if err.status == 422:
                err.message = f"{err.message}; the model's inputs: {service.describe_inputs()}"
            raise
        feeds, n, key, b64 = service.check(raw, encoding)
        outputs, meta = await service.batcher.submit(feeds, n, key)
        nbytes = sum(v.nbytes for v in outputs.values())
        body = await bodies.encode(nbytes, render_bytes, outputs, meta, b64, service.labels)
        return Response(body, media_type="application/json")

    async def metrics(request: Any) -> Any:
        return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        service.batcher.start()
        try:
            yield
        finally:
            await service.batcher.stop(drain_timeout)
            if own_bodies:
                bodies.close()

    def route(path: str, handler: Handler, methods: list[str], counted: bool = True) -> Any:
        return Route(path, endpoint(service, guard, path, handler) if counted else _guarded(guard, handler),
                     methods=methods)

    routes = [route("/healthz", healthz, ["GET"]),
              route("/v1/model", model_info, ["GET"]),
              route("/v1/predict", predict, ["POST"]),
              route("/metrics", metrics, ["GET"], counted=False),
              *oip_routes(service, bodies, lambda name, h: endpoint(service, guard, name, h, v2_error))]
    return Starlette(routes=routes, lifespan=lifespan)


def _guarded(guard: Guard, handler: Handler) -> Handler:
    async def wrapped(request: Any) -> Any:
        try:
            guard.check(request)
        except HTTPError as err:
            return v1_error(err)
        return await handler(request)

    return wrapped


__all__ = ["Bodies", "Guard", "create_app", "endpoint", "json_response", "v1_error", "v2_error"]
