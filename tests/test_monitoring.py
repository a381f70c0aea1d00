"""The shipped monitoring (issue 15.3): ``promtool check rules`` on examples/apps/monitoring/prometheus-rules.yml,
then a real Prometheus (Debian's package) scraping a live ``python -m edgeify_runtime.serve`` on 127.0.0.1 under
load: every Grafana panel's PromQL returns data, and the latency alert fires while the service is slower than its
budget and resolves once it is not. The rules run with their windows and ``for`` durations shortened to seconds
(the expressions are the shipped ones); the timings are printed for the notes."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from _tiers import starting

pytestmark = pytest.mark.prometheus
REPO = Path(__file__).resolve().parents[1]
MON = REPO / "examples" / "apps" / "monitoring"
sys.path.insert(0, str(REPO / "benchmarks"))
import serve_load  # noqa: E402  (start/stop a real service; the tiny real bundle)


def _tool(name: str) -> str:
    starting("prometheus")
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (apt-get install prometheus; install.sh --dev does)")
    return path


def test_rules_pass_promtool() -> None:
    proc = subprocess.run([_tool("promtool"), "check", "rules", str(MON / "prometheus-rules.yml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "SUCCESS: 5 rules found" in proc.stdout, proc.stdout + proc.stderr
    import yaml

    rules = yaml.safe_load((MON / "prometheus-rules.yml").read_text())["groups"][0]["rules"]
    for rule in rules:  # every alert says what to check and which edgeify command helps
        assert "edgeify " in rule["annotations"]["runbook"], rule["alert"]
        assert "device" in rule["annotations"]["summary"], rule["alert"]
    exprs = {r["alert"]: r["expr"] for r in rules}
    assert 'code=~"5.."' in exprs["EdgeifyServerErrors"] and 'code=~"4.."' in exprs["EdgeifyClientErrors"]
    dash = json.loads((MON / "grafana-dashboard.json").read_text())
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"device", "instance"} <= names
    for panel in dash["panels"]:  # per device, never a sum over the fleet
        for t in panel["targets"]:
            assert '$device' in t["expr"] and '$instance' in t["expr"], t["expr"]
            assert "sum(" not in t["expr"].replace(" ", ""), t["expr"]
    cfg = subprocess.run([_tool("promtool"), "check", "config", str(MON / "prometheus.yml")], capture_output=True,
                         text=True, timeout=60, cwd=MON)
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr


def _query(port: int, expr: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        doc = json.loads(resp.read())
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def _alerts(port: int) -> dict[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=10) as resp:
        doc = json.loads(resp.read())
    return {a["labels"]["alertname"]: a["state"] for a in doc["data"]["alerts"]}


def _wait(cond: Callable[[], bool], timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.5)
    raise AssertionError(f"condition not met within {timeout} s")


def test_live_prometheus_scrapes_the_service_and_the_latency_alert_fires_and_resolves(tmp_path: Path) -> None:
    """No --latency-budget-ms: the service measures its bundle at startup and exports that budget; latency is
    injected by making the device busy: the service's threads are pinned to one CPU at the lowest priority beside a
    process spinning on it (SIGSTOP pauses were tried and are not enough: requests that arrive while the process is
    stopped start their clock after it resumes, so too few of them were slow); the alert fires naming the device,
    and resolves once the CPU is free again. The HPA's adapter query returns the live p95."""
    from edgeify.deploy.k8s import render_adapter_query

    prometheus = _tool("prometheus")
    bundle = serve_load._bundle(tmp_path)
    svc, port = serve_load.start(serve_load.serve_argv(bundle), env=dict(os.environ))
    # the same query the HPA's adapter rule runs, its 2-minute window shortened as the alert rules' are below
    # (with 2 minutes, the fast requests from before the slowdown outnumber the slow ones for over a minute)
    adapter_query = render_adapter_query('job="edgeify-serve"', "instance")
    assert "[2m]" in adapter_query
    adapter_query = adapter_query.replace("[2m]", "[10s]")
    rules = (MON / "prometheus-rules.yml").read_text()
    rules = re.sub(r"\[(1m|5m)\]", "[5s]", rules)
    rules = re.sub(r"for: \d+m", "for: 1s", rules)
    (tmp_path / "rules.yml").write_text(rules)
    prom_port = serve_load_free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\nrule_files: [rules.yml]\n"
        f"scrape_configs:\n  - job_name: edgeify-serve\n    static_configs: [{{targets: ['127.0.0.1:{port}'], "
        "labels: {device: cam-7}}]\n")
    prom = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = threading.Event()

    def load() -> None:
        body = json.dumps({"inputs": {"x": [[0.5] * 16] * 4}})
        v2 = json.dumps({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]})
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            while not stop.is_set():
                for path, data in (("/v1/predict", body), ("/v2/models/model/infer", v2)):
                    conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
                    conn.getresponse().read()
                time.sleep(0.01)
        finally:
            conn.close()

    loaders = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    hog: list[subprocess.Popen[bytes]] = []
    try:
        _wait(lambda: _up(prom_port), 30)
        budget = _query(prom_port, 'edgeify_latency_budget_seconds{job="edgeify-serve"}')
        assert len(budget) == 1 and budget[0]["metric"]["source"] == "measured"
        assert float(budget[0]["value"][1]) >= 0.020  # max(3 x p95, p95 + 20 ms)
        for t in loaders:
            t.start()
        _wait(lambda: bool(_query(prom_port, adapter_query)), 30)
        assert "EdgeifyLatencyOverBudget" not in _alerts(prom_port)  # not busy: within the measured budget
        hpa_sees = float(_query(prom_port, adapter_query)[0]["value"][1])
        assert 0 < hpa_sees < float(budget[0]["value"][1])
        _busy(svc.pid, hog, True)
        t0 = time.monotonic()
        fired = _wait(lambda: _alerts(prom_port).get("EdgeifyLatencyOverBudget") == "firing", 60)
        alert = next(a for a in _alerts_full(prom_port) if a["labels"]["alertname"] == "EdgeifyLatencyOverBudget")
        assert alert["labels"]["device"] == "cam-7" and "edgeify bench" in alert["annotations"]["runbook"]
        def hpa_metric() -> float:
            return float(_query(prom_port, adapter_query)[0]["value"][1])

        # the metric the HPA scales on sees the slowdown too
        _wait(lambda: hpa_metric() > float(budget[0]["value"][1]), 120)
        busy_p95 = hpa_metric()
        dash = json.loads((MON / "grafana-dashboard.json").read_text())
        assert dash["panels"] and all(p["targets"] for p in dash["panels"])
        exprs = [t["expr"].replace("$device", ".*").replace("$instance", ".*") for p in dash["panels"]
                 for t in p["targets"]]
        empty = [e for e in exprs if not _query(prom_port, e)]
        assert not empty, empty  # every panel's PromQL returns data from the live service
        assert "EdgeifyServiceDown" not in _alerts(prom_port)
        _busy(svc.pid, hog, False)
        resolved = _wait(lambda: "EdgeifyLatencyOverBudget" not in _alerts(prom_port), 60)
        print(f"\nalert (no budget given, measured {float(budget[0]['value'][1]) * 1e3:.1f} ms): firing "
              f"{fired:.1f} s after the CPU became busy, resolved {resolved:.1f} s after it was free; HPA metric "
              f"{hpa_sees * 1e3:.2f} ms before, {busy_p95 * 1e3:.0f} ms busy; "
              f"total {time.monotonic() - t0:.1f} s")
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            _busy(svc.pid, hog, False)
        prom.send_signal(signal.SIGTERM)
        try:
            prom.wait(timeout=20)
        except subprocess.TimeoutExpired:
            prom.kill()
        serve_load.stop(svc)


def _busy(pid: int, hog: list[subprocess.Popen[bytes]], on: bool) -> None:
    """A busy device: every thread of ``pid`` pinned to CPU 0 at nice 19 beside a process spinning on CPU 0
    (``on``), or the spinner gone and the threads free to run anywhere again."""
    cpu0, every = {min(os.sched_getaffinity(0))}, os.sched_getaffinity(0)
    if on:
        spin = f"import os\nos.sched_setaffinity(0, {cpu0})\nwhile True: pass"
        hog.append(subprocess.Popen([sys.executable, "-c", spin]))
    else:
        for proc in hog:
            proc.kill()
            proc.wait(timeout=10)
        hog.clear()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(tid), cpu0 if on else every)
            with contextlib.suppress(PermissionError):  # lowering nice again needs root; the spinner is gone anyway
                os.setpriority(os.PRIO_PROCESS, int(tid), 19 if on else 0)


def _alerts_full(port: int) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=10) as resp:
        return json.loads(resp.read())["data"]["alerts"]


def _up(port: int) -> bool:
    try:
        return any(r["value"][1] == "1" for r in _query(port, 'up{job="edgeify-serve"}'))
    except OSError:
        return False


def serve_load_free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
