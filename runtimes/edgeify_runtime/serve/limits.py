"""Connection limits of the HTTP service against slow or idle clients (slowloris): a bounded number of open
connections, a deadline for a request's headers, and an open-file limit that is never reached.

uvicorn on its own bounds none of this: ``timeout_keep_alive`` only runs between two requests of a connection
(a new connection, or one that sent half a request line, waits forever), h11's ``max_incomplete_event_size``
bounds the header *bytes* but not the time, and ``limit_concurrency`` answers 503 to every request (``/healthz``
too) once that many connections are open, and only after their headers arrived. With the 1,024 open files of a
default process limit, 1,100 connections that send half a request line made ``accept()`` fail ("Too many open
files") and ``/healthz`` time out for as long as they stayed open. Here:

* :class:`GuardedH11Protocol` (uvicorn's h11 protocol) closes a connection that has not sent complete request
  headers within ``header_timeout`` seconds of its first byte (or of connecting, or of its previous response);
* when more than ``max_connections`` are open, a new connection first closes the oldest one that is idle
  (waiting for headers, nothing in flight), so a health check always gets in and is answered;
* :func:`fit_connections` keeps ``max_connections`` below the process's open-file limit (raising the soft limit
  to the hard one first), and asyncio accepts at most :data:`ACCEPT_BURST` connections at a time, so the server
  never reaches ``EMFILE``.
"""

from __future__ import annotations

import resource
from typing import Any

#: file descriptors kept for everything but client connections (the engine, decode workers, gRPC, logs); more
#: than ACCEPT_BURST, so connections accepted in one burst never reach the limit before they are counted
FD_RESERVE = 96
#: connections asyncio accepts per readiness event (uvicorn's ``backlog`` is also its accept-loop count; the
#: kernel's listen backlog is set back to LISTEN_BACKLOG once the server runs). asyncio accepts a whole burst
#: before any protocol sees a connection: with 2048 per burst, 1,100 connections reached EMFILE first, and
#: asyncio then logs the failed accept in a loop (thousands of tracebacks a second)
ACCEPT_BURST = 16
LISTEN_BACKLOG = 2048


def fit_connections(wanted: int) -> int:
    """``wanted`` connections, or fewer when the open-file limit (raised to its hard limit) cannot hold them
    plus :data:`FD_RESERVE`; at least 8."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(8, min(wanted, soft - FD_RESERVE))


def guarded_protocol(max_connections: int, header_timeout: float) -> type:
    """uvicorn's h11 protocol with the limits above (a class for ``uvicorn.Config(http=...)``)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._header_timer: Any = None
            self._arm()
            if len(self.connections) > max_connections:
                self._evict()

        def _waiting(self) -> bool:
            """Waiting for request headers, nothing in flight (closing it loses no request)."""
            return self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._header_deadline)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_deadline(self) -> None:
            self._header_timer = None
            if self._waiting() and not self.transport.is_closing():
                self.transport.close()

        def _evict(self) -> None:
            idle = [c for c in self.connections if c is not self and isinstance(c, GuardedH11Protocol)
                    and c._waiting() and not c.transport.is_closing()]
            if idle:
                oldest = min(idle, key=lambda c: c._since)
                oldest.transport.close()

        @property
        def _since(self) -> float:
            timer = self._header_timer
            return timer.when() if timer is not None else float("inf")

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:  # headers still incomplete: the deadline keeps running
                self._arm()
            else:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # between requests uvicorn's keep-alive timeout applies; the header deadline restarts with the next
            # request's first byte (data_received) or, at the latest, now
            self._disarm()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol


__all__ = ["ACCEPT_BURST", "FD_RESERVE", "LISTEN_BACKLOG", "fit_connections", "guarded_protocol"]
