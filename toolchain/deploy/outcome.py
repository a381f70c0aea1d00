"""One outcome per device, and the parallel runner that produces them: the fleet layer's value type, below the
deployer and everything that runs on devices (``bench``, ``deploy``, ``devices``, rollouts) and the CLI's printers.

Never all-or-nothing: a device that fails (unreachable, auth, disk full...) gives an error outcome and the
others carry on. ``run_fleet`` returns outcomes in the order of the devices given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..errors import EdgeifyError

T = TypeVar("T")
MAX_WORKERS = 16


@dataclass
class Outcome(Generic[T]):
    device: str
    result: T | None = None
    error: BaseException | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def exit_code(self) -> int:
        if self.error is None:
            return 0
        return int(getattr(self.error, "exit_code", 1))

    def error_dict(self) -> dict[str, Any] | None:
        if self.error is None:
            return None
        e = self.error
        if isinstance(e, EdgeifyError):
            return {"type": type(e).__name__, "exit_code": e.exit_code, "message": e.message, "hint": e.hint}
        return {"type": type(e).__name__, "exit_code": 1, "message": str(e), "hint": "rerun with EDGEIFY_DEBUG=1"}

    def unwrap(self) -> T:
        """The result, or raise this device's error."""
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]

    def to_dict(self, **result_options: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"device": self.device, "ok": self.ok, "seconds": round(self.seconds, 3)}
        if self.ok:
            res = self.result
            out["result"] = res.to_dict(**result_options) if hasattr(res, "to_dict") else res
        else:
            out["error"] = self.error_dict()
        return out


def attempt(name: str, fn: Callable[[], T]) -> Outcome[T]:
    """``fn()`` as the outcome for ``name``: its result, or the exception it raised, and how long it took."""
    t0 = time.perf_counter()
    try:
        return Outcome(name, result=fn(), seconds=time.perf_counter() - t0)
    except Exception as exc:  # one device's failure, whatever it is, must not stop the others
        return Outcome(name, error=exc, seconds=time.perf_counter() - t0)


def run_fleet(devices: Sequence[Any], fn: Callable[[Any], T], *,
              max_workers: int | None = None) -> list[Outcome[T]]:
    """``fn(device)`` for every device (anything with a ``name``: a Device, a DeviceSite) in a thread pool;
    exceptions become that device's outcome."""

    def one(device: Any) -> Outcome[T]:
        return attempt(device.name, lambda: fn(device))

    if not devices:
        return []
    workers = max(1, min(max_workers or MAX_WORKERS, len(devices)))
    if workers == 1:
        return [one(d) for d in devices]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgeify-fleet") as pool:
        return list(pool.map(one, devices))


def first_failure(outcomes: Sequence[Outcome[Any]]) -> Outcome[Any] | None:
    return next((o for o in outcomes if not o.ok), None)


__all__ = ["MAX_WORKERS", "Outcome", "attempt", "first_failure", "run_fleet"]
