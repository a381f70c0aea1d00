"""Dynamic micro-batching in front of one engine: one queue, one engine thread, one engine call per batch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from .codec import HTTPError

log = logging.getLogger("edgeify.serve")


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


__all__ = ["Batcher"]
