"""The soak's parts that need no service: durations, windows, and its PromQL against the shipped alert rules
(same metrics, endpoints, thresholds and grouping per device; the live check is tests/ssh/test_rollout_apps.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from edgeify.errors import UsageError
from edgeify.rollout import soak

RULES = Path(__file__).resolve().parents[1] / "examples" / "apps" / "monitoring" / "prometheus-rules.yml"


@pytest.mark.parametrize(("text", "seconds"), [("5m", 300.0), ("30s", 30.0), ("90", 90.0), ("1h", 3600.0),
                                               ("1.5m", 90.0)])
def test_durations(text: str, seconds: float) -> None:
    assert soak.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "-3s", "0", "m5"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="--soak"):
        soak.parse_duration(text)


def test_windows_follow_the_soak_within_the_rules_bounds() -> None:
    assert soak.window_s(300) == 60 and soak.window_s(20) == 5 and soak.window_s(3600) == 60
    assert soak.interval_s(300) == 15 and soak.interval_s(20) == 2 and soak.interval_s(5) == 1


def test_queries_are_the_shipped_rules_per_device() -> None:
    rules = {r["alert"]: r["expr"] for r in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]}
    q = soak.queries(["cam-01", "cam.02"], 60)
    # the device names become one RE2 alternation PromQL accepts (no "\-"), with dots escaped
    assert 'device=~"cam-01|cam\\\\.02"' in q["up"]
    latency = rules["EdgeifyLatencyOverBudget"]
    endpoint = re.search(r'endpoint=~"([^"]+)"', latency).group(1)
    assert f'endpoint=~"{endpoint}"' in q["p95"] and "histogram_quantile(0.95" in q["p95"]
    assert "edgeify_request_duration_seconds_bucket" in q["p95"] and "[60s]" in q["p95"]
    assert "edgeify_latency_budget_seconds" in latency and "edgeify_latency_budget_seconds" in q["budget"]
    server = rules["EdgeifyServerErrors"]
    assert 'code=~"5.."' in server and 'code=~"5.."' in q["server_errors"]
    assert f"> {soak.MAX_SERVER_ERRORS:g}" in server.replace("\n", " ")
    assert "up{" in rules["EdgeifyServiceDown"] and q["up"].startswith("min by (device) (up{")


def test_an_unreachable_prometheus_is_exit_18() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(Exception) as err:
        soak.check(f"http://127.0.0.1:{port}")
    assert err.value.exit_code == 18 and "cannot be queried" in err.value.message
