"""Soak a wave on live traffic (``--soak 5m --prometheus URL``): after a wave's gate passed and its devices' services
run the new bundle, watch those devices through Prometheus for the soak duration with the queries of the shipped
alert rules (``examples/apps/monitoring/prometheus-rules.yml``), per ``device`` label (the label the shipped
``prometheus.yml`` puts on each target):

- **latency over budget** (EdgeifyLatencyOverBudget): the p95 of inference requests
  (``edgeify_request_duration_seconds``) above the service's ``edgeify_latency_budget_seconds``
  (``--latency-budget-ms``, the bundle's budget, or the one the service measured at startup);
- **server errors** (EdgeifyServerErrors): more than 5% of requests answered 5xx;
- **down** (EdgeifyServiceDown): ``up == 0``.

A device fails when one of these holds at :data:`CONSECUTIVE` checks in a row (the rules' ``for:``), and the soak
stops at the first failure (the wave is then rolled back at once). A device Prometheus does not scrape at all (no
``up{device=NAME}``) fails too: it was not watched, so it is not counted as passing. A device with no inference
traffic during the soak passes with a note that says so. The rate window is a quarter of the soak, between 5 s and
the rules' 1 minute; checks run every tenth of the soak, between 1 s and 15 s.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from ..deploy.k8s import INFER_ENDPOINTS
from ..errors import PrometheusError, UsageError

#: the Prometheus label that carries the edgeify device name (examples/apps/monitoring/prometheus.yml)
DEVICE_LABEL = "device"
#: the share of 5xx answers above which a device fails (EdgeifyServerErrors)
MAX_SERVER_ERRORS = 0.05
#: checks in a row a condition must hold before the device fails (the rules' ``for:``)
CONSECUTIVE = 2
QUERY_TIMEOUT_S = 10.0
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*$")


def parse_duration(text: str) -> float:
    """``"5m"`` / ``"90s"`` / ``"90"`` (seconds) / ``"1h"`` -> seconds."""
    m = _DURATION.match(str(text or ""))
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--soak {text!r}: expected a duration such as 30s, 5m or 1h", hint="e.g. --soak 5m")
    return float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2) or "s"]


def window_s(soak_s: float) -> int:
    return int(min(60.0, max(5.0, soak_s / 4.0)))


def interval_s(soak_s: float) -> float:
    return min(15.0, max(1.0, soak_s / 10.0))


def _regex_literal(name: str) -> str:
    """``name`` as an RE2 literal inside a PromQL string (``re.escape`` writes ``\\-``, which PromQL refuses)."""
    escaped = "".join("\\" + c if c in ".+*?()[]{}|^$\\" else c for c in name)
    return escaped.replace("\\", "\\\\").replace('"', '\\"')


def queries(names: Sequence[str], window: int) -> dict[str, str]:
    """The PromQL of the shipped rules, for these devices, over ``window`` seconds (one series per device)."""
    sel = f'{DEVICE_LABEL}=~"{"|".join(_regex_literal(n) for n in names)}"'
    w = f"[{window}s]"
    by = f"({DEVICE_LABEL})"
    return {
        "p95": (f"max by {by} (histogram_quantile(0.95, sum by (instance, {DEVICE_LABEL}, le) ("
                f'rate(edgeify_request_duration_seconds_bucket{{{sel}, endpoint=~"{INFER_ENDPOINTS}"}}{w}))))'),
        "budget": f"max by {by} (edgeify_latency_budget_seconds{{{sel}}})",
        "server_errors": (f'sum by {by} (rate(edgeify_requests_total{{{sel}, code=~"5.."}}{w})) '
                          f"/ sum by {by} (rate(edgeify_requests_total{{{sel}}}{w}))"),
        "requests": (f"sum by {by} (increase(edgeify_requests_total{{{sel}, "
                     f'endpoint=~"{INFER_ENDPOINTS}"}}{w}))'),
        "up": f"min by {by} (up{{{sel}}})",
    }


def query(url: str, expr: str) -> dict[str, float]:
    """``{device: value}`` of an instant query (NaN values dropped)."""
    full = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(full, timeout=QUERY_TIMEOUT_S) as resp:
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read(2000).decode("utf-8", "replace")
        raise PrometheusError(f"Prometheus at {url} refused the query ({exc.code}): {body[:300]}",
                              hint="check --prometheus (the server's base URL, e.g. http://127.0.0.1:9090)") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PrometheusError(f"Prometheus at {url} cannot be queried: {getattr(exc, 'reason', exc)}",
                              hint="is it running? check --prometheus (e.g. http://127.0.0.1:9090)") from None
    if doc.get("status") != "success":
        raise PrometheusError(f"Prometheus at {url}: {doc.get('error', 'query failed')}")
    out = {}
    for r in doc["data"]["result"]:
        value = float(r["value"][1])
        if value == value:  # not NaN (a histogram with no requests in the window)
            out[str(r["metric"].get(DEVICE_LABEL))] = value
    return out


def check(url: str) -> None:
    """Fail early (exit 18) when ``url`` does not answer a query."""
    query(url, "vector(1)")


def soak(url: str, names: Sequence[str], soak_s: float, *, progress: Callable[[str], None] | None = None,
         sleep: Callable[[float], None] = time.sleep) -> dict[str, dict[str, Any]]:
    """Watch ``names`` for ``soak_s`` seconds; ``{device: {"verdict": "pass"|"fail", "reason", ...}}``. Stops at the
    first device that fails."""
    window, every = window_s(soak_s), interval_s(soak_s)
    q = queries(names, window)
    state: dict[str, dict[str, Any]] = {n: {"verdict": "pass", "checks": 0, "seen": False, "requests": 0.0,
                                            "window_s": window, "soak_s": soak_s} for n in names}
    streak = {n: 0 for n in names}
    t0 = time.monotonic()
    while True:
        values = {k: query(url, e) for k, e in q.items()}
        failed = None
        for n in names:
            st = state[n]
            st["checks"] += 1
            up, p95, budget = values["up"].get(n), values["p95"].get(n), values["budget"].get(n)
            errors = values["server_errors"].get(n)
            st["seen"] = st["seen"] or up is not None
            st["requests"] = max(st["requests"], values["requests"].get(n, 0.0))
            if p95 is not None:
                st["p95_ms"] = round(p95 * 1e3, 3)
            if budget is not None:
                st["budget_ms"] = round(budget * 1e3, 3)
            if errors is not None:
                st["server_errors"] = round(errors, 4)
            reason = None
            if up == 0:
                reason = "down: Prometheus cannot scrape the service (up == 0)"
            elif p95 is not None and budget is not None and p95 > budget:
                reason = f"p95 {p95 * 1e3:.1f} ms over its budget {budget * 1e3:.1f} ms"
            elif errors is not None and errors > MAX_SERVER_ERRORS:
                reason = f"{errors:.1%} of requests answered 5xx (over {MAX_SERVER_ERRORS:.0%})"
            streak[n] = streak[n] + 1 if reason else 0
            if reason and streak[n] >= CONSECUTIVE:
                st.update(verdict="fail", reason=f"{reason} at {CONSECUTIVE} checks in a row, "
                                                 f"{time.monotonic() - t0:.0f} s into the soak")
                failed = n
        if failed is not None:
            break
        elapsed = time.monotonic() - t0
        if elapsed >= soak_s:
            break
        if progress and state[names[0]]["checks"] % 5 == 1:
            progress(f"  soak: {elapsed:.0f}/{soak_s:.0f} s, " + ", ".join(
                f"{n} p95 {state[n].get('p95_ms', float('nan')):.1f}/{state[n].get('budget_ms', float('nan')):.1f} ms"
                for n in names[:4]))
        sleep(min(every, max(0.0, soak_s - elapsed)))
    for n in names:
        st = state[n]
        if st["verdict"] == "fail":
            continue
        if not st["seen"] and failed is None:
            st.update(verdict="fail", reason=f"not watched: Prometheus has no up{{{DEVICE_LABEL}=\"{n}\"}} (add the "
                                             f"service to its scrape config with labels {{{DEVICE_LABEL}: {n}}})")
        elif not st["seen"]:
            st.update(verdict="stopped", reason="the soak stopped at another device's failure")
        elif st["requests"] <= 0:
            st["note"] = "no inference traffic during the soak: only up and errors were watched"
    return state


__all__ = ["CONSECUTIVE", "DEVICE_LABEL", "MAX_SERVER_ERRORS", "check", "interval_s", "parse_duration", "queries",
           "query", "soak", "window_s"]
