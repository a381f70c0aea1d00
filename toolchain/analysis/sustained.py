"""``edgeify bench --sustained 60s``: latency over a long timed run, the first and the last seconds compared, so a
device that heats up and throttles (a Raspberry Pi without a fan, a Jetson in a closed box) shows it.

The agent times every run in order; the time each sample ended is the running sum of the samples, scaled to the
timed phase's wall time (``protocol.timed_phase_s``: the loop's own few µs per run included). From it: p50/p95 of
the first and of the last ``edge_s`` seconds (10 s; a quarter of the run when it is shorter than 40 s), their
ratio, and p50 per step over the whole run. The device state recorded with the result (CPU clock and temperature
at start and end, throttling events) is quoted beside it: a slowdown with a falling clock or throttle events is
thermal, one without is something else (load, memory).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from edgeify.errors import UsageError

#: the first and last window (s)
EDGE_S = 10.0
#: a last-window p50 this much above the first window's is called a slowdown
SLOWDOWN = 1.10
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(s|m|h)?\s*$")


def parse_duration(text: str) -> float:
    """``60s`` / ``2m`` / ``90`` (seconds) -> seconds."""

    m = _DURATION.match(str(text or ""))
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--sustained {text!r} is not a duration", hint="e.g. --sustained 60s, 5m")
    return float(m.group(1)) * {"s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2) or "s"]


def _stats(x: np.ndarray) -> dict[str, Any]:
    if not x.size:
        return {"n": 0, "p50_ms": None, "p95_ms": None}
    return {"n": int(x.size), "p50_ms": round(float(np.percentile(x, 50)), 6),
            "p95_ms": round(float(np.percentile(x, 95)), 6)}


def summarize(samples_ms: Any, timed_phase_s: float | None, device_state: dict[str, Any] | None = None,
              edge_s: float = EDGE_S, steps: int = 12) -> dict[str, Any]:
    """The sustained-run record (``extra.sustained``): first / last window, their ratio, the timeline."""
    x = np.asarray(samples_ms, dtype=float)
    total = float(x.sum()) / 1000.0
    wall = float(timed_phase_s) if timed_phase_s and timed_phase_s >= total else total
    ends = np.cumsum(x) / 1000.0 * (wall / total if total else 1.0)
    starts = ends - x / 1000.0 * (wall / total if total else 1.0)
    edge = min(edge_s, wall / 4.0)
    first, last = _stats(x[ends <= edge]), _stats(x[starts >= wall - edge])
    ratio = (round(last["p50_ms"] / first["p50_ms"], 4)
             if first["p50_ms"] and last["p50_ms"] else None)
    step = wall / steps if wall else 0.0
    timeline = []
    for k in range(steps if step else 0):
        sel = x[(starts >= k * step) & (starts < (k + 1) * step)]
        timeline.append({"t_s": round(k * step, 2), "n": int(sel.size),
                         "p50_ms": round(float(np.percentile(sel, 50)), 6) if sel.size else None})
    state = device_state or {}
    freq, temp, thr = (state.get(k) or {} for k in ("cpu_freq_mhz", "temperature_c", "throttling"))
    out = {"duration_s": round(wall, 3), "edge_s": round(edge, 3), "first": first, "last": last,
           "last_over_first_p50": ratio, "slowdown": ratio is not None and ratio > SLOWDOWN,
           "rule": f"slowdown: last {edge:g} s p50 > {SLOWDOWN:.2f}x the first {edge:g} s", "timeline": timeline,
           "cpu_freq_mhz": {k: freq.get(k) for k in ("start", "end", "max")} if freq else None,
           "temperature_c": {k: temp.get(k) for k in ("start", "end")} if temp else None,
           "throttling": thr or None}
    out["cause"] = _cause(out)
    return out


def _cause(s: dict[str, Any]) -> str:
    if not s["slowdown"]:
        return "no slowdown"
    freq, temp, thr = s["cpu_freq_mhz"] or {}, s["temperature_c"] or {}, s["throttling"] or {}
    signs = []
    if thr.get("events") or thr.get("flags"):
        signs.append(f"throttling {thr.get('events', thr.get('flags'))} ({thr.get('source')})")
    if freq.get("start") and freq.get("end") and freq["end"] < 0.95 * freq["start"]:
        signs.append(f"CPU clock {freq['start']} -> {freq['end']} MHz")
    if temp.get("start") is not None and temp.get("end") is not None and temp["end"] - temp["start"] >= 5:
        signs.append(f"temperature {temp['start']} -> {temp['end']} °C")
    return ("thermal: " + ", ".join(signs)) if signs else \
        "not thermal as far as recorded (no throttling, clock or temperature change): load or memory"


def lines(s: dict[str, Any]) -> list[str]:
    """The sustained record for the terminal."""
    f, la = s["first"], s["last"]

    def ms(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}"

    out = [f"sustained {s['duration_s']:.1f} s: first {s['edge_s']:.3g} s p50 {ms(f['p50_ms'])} ms (p95 "
           f"{ms(f['p95_ms'])}, {f['n']} runs) · last {s['edge_s']:.3g} s p50 {ms(la['p50_ms'])} ms (p95 "
           f"{ms(la['p95_ms'])}, {la['n']} runs) · last/first "
           + ("-" if s["last_over_first_p50"] is None else f"{s['last_over_first_p50']:.3f}x")
           + (" [yellow]slowdown[/]" if s["slowdown"] else "")]
    out.append("p50 over time: " + " ".join(f"{t['t_s']:g}s:{ms(t['p50_ms'])}" for t in s["timeline"]))
    freq, temp = s["cpu_freq_mhz"] or {}, s["temperature_c"] or {}
    out.append(f"clock {freq.get('start', 'n/a')} -> {freq.get('end', 'n/a')} MHz · temperature "
               f"{temp.get('start', 'n/a')} -> {temp.get('end', 'n/a')} °C · {s['cause']}")
    return out


__all__ = ["EDGE_S", "SLOWDOWN", "lines", "parse_duration", "summarize"]
