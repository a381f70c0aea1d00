"""A rollout's plan: which devices, in which waves, under which gate. Pure values, no I/O.

``parse_waves("1,10%,50%,100%", 20)`` gives cumulative device counts ``(1, 2, 10, 20)``: the first wave is the
canary; a wave that would add no device (rounding on a small fleet) is dropped. Devices are ordered
deterministically: devices tagged ``canary`` first (by name), then the rest by a hash of the bundle digest and
their name, so the same rollout of the same bundle always picks the same canaries and waves, and a different
bundle spreads its first waves over different devices.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import UsageError

CANARY_TAG = "canary"
METRICS = ("p50", "p90", "p95", "p99", "mean")
_GATE_RE = re.compile(r"^\s*(p50|p90|p95|p99|mean)\s*<=\s*([0-9]*\.?[0-9]+)\s*x\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Gate:
    """``p95<=1.05x``: the new bundle's ``metric`` on a device may be at most ``max_ratio`` times the replaced
    bundle's on the same device (run-level statistics decide "at most", see :mod:`edgeify.rollout.judge`)."""

    metric: str = "p95"
    max_ratio: float = 1.05

    @classmethod
    def parse(cls, text: str) -> Gate:
        m = _GATE_RE.match(text or "")
        if not m:
            raise UsageError(f"--gate {text!r}: expected METRIC<=RATIOx with METRIC one of {', '.join(METRICS)}",
                             hint='e.g. --gate "p95<=1.05x" (the new p95 at most 5% above the old one)')
        ratio = float(m.group(2))
        if not 1.0 <= ratio <= 10.0:
            raise UsageError(f"--gate {text!r}: the ratio must be between 1.0 and 10.0",
                             hint='e.g. --gate "p95<=1.05x"')
        return cls(metric=m.group(1).lower(), max_ratio=ratio)

    def describe(self) -> str:
        return f"{self.metric}<={self.max_ratio:g}x"


def parse_waves(text: str, n_devices: int) -> tuple[int, ...]:
    """Cumulative device counts for ``--waves`` over ``n_devices`` (each item a count or a percentage)."""
    if n_devices < 1:
        raise UsageError("the rollout selects no device", hint="check --devices (edgeify devices list)")
    items = [s.strip() for s in (text or "").split(",") if s.strip()]
    if not items:
        raise UsageError("--waves is empty", hint="e.g. --waves 1,10%,50%,100%")
    counts: list[int] = []
    for item in items:
        try:
            if item.endswith("%"):
                pct = float(item[:-1])
                if not 0 < pct <= 100:
                    raise ValueError
                n = max(1, math.ceil(pct / 100.0 * n_devices - 1e-9))
            else:
                n = int(item)
                if n < 1:
                    raise ValueError
        except ValueError:
            raise UsageError(f"--waves: {item!r} is neither a device count (1, 2, ...) nor a percentage (10%)",
                             hint="e.g. --waves 1,10%,50%,100%") from None
        n = min(n, n_devices)
        if counts and n < counts[-1]:
            raise UsageError(f"--waves {text!r}: waves are cumulative and must not shrink ({item} after "
                             f"{counts[-1]} device(s))", hint="e.g. --waves 1,10%,50%,100%")
        if not counts or n > counts[-1]:
            counts.append(n)
    if counts[-1] != n_devices:
        raise UsageError(f"--waves {text!r} reaches {counts[-1]} of the {n_devices} selected devices",
                         hint="end the waves with 100% (or select fewer devices)")
    return tuple(counts)


def order_devices(devices: Sequence[Any], *, seed: str) -> list[Any]:
    """Canary-tagged devices first (by name), then the others in a deterministic per-bundle order."""
    def key(d: Any) -> tuple[int, str]:
        pinned = CANARY_TAG in tuple(getattr(d, "tags", ()) or ())
        return (0, d.name) if pinned else (1, hashlib.sha256(f"{seed}\0{d.name}".encode()).hexdigest())

    return sorted(devices, key=key)


def split_waves(names: Sequence[str], counts: Sequence[int]) -> tuple[tuple[str, ...], ...]:
    out, start = [], 0
    for c in counts:
        out.append(tuple(names[start:c]))
        start = c
    return tuple(out)


@dataclass(frozen=True)
class Plan:
    """Everything a rollout needs to run again after a crash (stored with it)."""

    bundle: str                 #: the local bundle directory (absolute)
    bundle_digest: str
    name: str                   #: the bundle's name on the devices
    selector: str
    waves: tuple[tuple[str, ...], ...]
    gate: Gate = field(default_factory=Gate)
    #: interleaved benchmark runs per bundle per device (previous, new, previous, new, ...)
    runs: int = 3
    #: after a failed wave, roll back that wave ("wave") or every wave so far ("all")
    rollback: str = "wave"
    force: bool = False
    eval_data: str | None = None
    max_accuracy_drop: float | None = None
    #: samples per benchmark run (None: the target's protocol)
    samples: int | None = None
    retries: int = 2
    #: the device app (``serve``, or an app file's kind) restarted on the new bundle after the gate, and on the
    #: previous one at rollback; its health is part of each device's verdict (None: bundles only)
    app: str | None = None
    #: seconds each wave is watched on live traffic through Prometheus after its gate (None: no soak)
    soak_s: float | None = None
    prometheus: str | None = None

    def wave_of(self, device: str) -> int:
        for i, names in enumerate(self.waves):
            if device in names:
                return i
        raise KeyError(device)

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(n for w in self.waves for n in w)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["waves"] = [list(w) for w in self.waves]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        d = dict(d)
        d["waves"] = tuple(tuple(w) for w in d["waves"])
        d["gate"] = Gate(**d["gate"])
        return cls(**d)


__all__ = ["CANARY_TAG", "METRICS", "Gate", "Plan", "order_devices", "parse_waves", "split_waves"]
