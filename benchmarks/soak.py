"""Soak: the HTTP service under a steady load for a long time. Do memory, open files and threads stay flat, and
the p95 latency stable?

    python benchmarks/soak.py [--duration 600] [--rate 200] [--clients 4] [--window 30] [--out benchmarks/soak]

Starts ``python -m edgeify_runtime.serve`` on 127.0.0.1 for a tiny real bundle (a Gemm, ONNX Runtime, the one
``benchmarks/serve_load.py`` uses) with ``--grpc-port 0``, then ``--clients`` threads send ``--rate`` requests per
second in total, paced (not as fast as possible): mostly ``/v1/predict`` (1-4 samples), every 4th an Open
Inference Protocol REST infer (every 8th of those with binary tensors), every 50th ``/healthz`` and
``/metrics``; every 20th request of a client opens a new connection (connection churn: a leaked socket shows as
open files). Every ``--window`` seconds it samples the service process (RSS with its decode workers, open file
descriptors, threads) and the requests of that window (count, errors, p50/p95/p99 latency in ms). Writes
``<out>.json`` (every window) and ``<out>.md`` (the table and the drift: last window against the first after
warm-up). Bounded: every request has a timeout; the service is stopped by its PID at the end or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _serve_load() -> Any:
    spec = importlib.util.spec_from_file_location("edgeify_serve_load", REPO / "benchmarks" / "serve_load.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 3)


def sample_process(pid: int) -> dict[str, Any]:
    import psutil

    p = psutil.Process(pid)
    procs = [p, *p.children(recursive=True)]
    rss = 0
    for q in procs:
        with contextlib.suppress(psutil.Error):
            rss += q.memory_info().rss
    return {"rss_mib": round(rss / (1 << 20), 1), "main_rss_mib": round(p.memory_info().rss / (1 << 20), 1),
            "fds": p.num_fds(), "threads": p.num_threads(), "children": len(procs) - 1}


class Load:
    """The paced clients and their per-window records."""

    def __init__(self, port: int, rate: float, clients: int, timeout: float = 30.0) -> None:
        self.port, self.rate, self.clients, self.timeout = port, rate, clients, timeout
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.codes: dict[int, int] = {}
        self.stop = threading.Event()
        self._bodies = self._make_bodies()

    @staticmethod
    def _make_bodies() -> dict[str, tuple[str, bytes, dict[str, str]]]:
        import numpy as np

        rng = np.random.default_rng(0)
        out = {}
        for n in (1, 2, 4):
            x = rng.standard_normal((n, 16)).astype(np.float32)
            out[f"v1-{n}"] = ("/v1/predict", json.dumps({"inputs": {"x": x.tolist()}}).encode(),
                              {"Content-Type": "application/json"})
        x = rng.standard_normal((2, 16)).astype(np.float32)
        out["v2"] = ("/v2/models/model/infer", json.dumps({"inputs": [{"name": "x", "shape": [2, 16], "datatype":
                                                                       "FP32", "data": x.ravel().tolist()}]}).encode(),
                     {"Content-Type": "application/json"})
        head = json.dumps({"inputs": [{"name": "x", "shape": [2, 16], "datatype": "FP32",
                                       "parameters": {"binary_data_size": x.nbytes}}],
                           "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
        out["v2-bin"] = ("/v2/models/model/infer", head + x.tobytes(),
                         {"Inference-Header-Content-Length": str(len(head))})
        return out

    def _pick(self, i: int) -> tuple[str, str, bytes | None, dict[str, str]]:
        if i % 50 == 0:
            return ("GET", "/healthz", None, {}) if i % 100 == 0 else ("GET", "/metrics", None, {})
        if i % 4 == 0:
            path, body, headers = self._bodies["v2-bin" if i % 32 == 0 else "v2"]
            return "POST", path, body, headers
        path, body, headers = self._bodies[f"v1-{(1, 2, 4)[i % 3]}"]
        return "POST", path, body, headers

    def client(self, k: int) -> None:
        interval = self.clients / self.rate
        conn: http.client.HTTPConnection | None = None
        i, next_t = k, time.monotonic() + k * interval / self.clients
        while not self.stop.is_set():
            now = time.monotonic()
            if now < next_t:
                time.sleep(min(next_t - now, 0.5))
                continue
            next_t += interval
            if next_t < now - 1.0:  # fell behind by more than a second: do not burst to catch up
                next_t = now
            method, path, body, headers = self._pick(i)
            i += self.clients
            if conn is None or i % 20 < self.clients:
                if conn is not None:
                    conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            t0 = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                ms = (time.perf_counter() - t0) * 1e3
                with self.lock:
                    self.latencies.append(ms)
                    self.codes[resp.status] = self.codes.get(resp.status, 0) + 1
                    if resp.status != 200:
                        self.errors.append(f"{path}: HTTP {resp.status}")
            except Exception as exc:
                with self.lock:
                    self.errors.append(f"{path}: {type(exc).__name__}: {exc}")
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def window(self) -> dict[str, Any]:
        with self.lock:
            lat, errs, codes = self.latencies, self.errors, self.codes
            self.latencies, self.errors, self.codes = [], [], {}
        return {"requests": len(lat), "errors": len(errs), "error_samples": errs[:3], "codes": codes,
                "p50_ms": _pct(lat, 0.50), "p95_ms": _pct(lat, 0.95), "p99_ms": _pct(lat, 0.99)}


def soak(duration: float, rate: float, clients: int, window: float) -> dict[str, Any]:
    sl = _serve_load()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = sl._bundle(Path(tmp))
        proc, port = sl.start(sl.serve_argv(bundle, "--grpc-port", "0"), env=dict(os.environ))
        windows: list[dict[str, Any]] = []
        load = Load(port, rate, clients)
        threads = [threading.Thread(target=load.client, args=(k,), daemon=True) for k in range(clients)]
        try:
            start = time.monotonic()
            windows.append({"t_s": 0.0, **sample_process(proc.pid), "requests": 0, "errors": 0})
            for t in threads:
                t.start()
            while time.monotonic() - start < duration:
                time.sleep(min(window, max(0.0, duration - (time.monotonic() - start))))
                w = {"t_s": round(time.monotonic() - start, 1), **sample_process(proc.pid), **load.window()}
                w["rate_per_s"] = round(w["requests"] / window, 1)
                windows.append(w)
                print(json.dumps({k: w[k] for k in ("t_s", "rss_mib", "fds", "threads", "requests", "errors",
                                                    "p95_ms")}), flush=True)
        finally:
            load.stop.set()
            for t in threads:
                t.join(load.timeout + 5)
            sl.stop(proc)
    return {"windows": windows, "port": port}


def drift(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Last window against the first one after warm-up (the second window)."""
    live = [w for w in windows if w.get("requests")]
    if len(live) < 2:
        return {}
    first, last = live[1] if len(live) > 2 else live[0], live[-1]
    out = {}
    for key in ("rss_mib", "fds", "threads", "p95_ms"):
        a, b = first.get(key), last.get(key)
        if a is not None and b is not None:
            out[key] = {"first": a, "last": b, "change": round(b - a, 3),
                        "max": max(w[key] for w in live if w.get(key) is not None)}
    return out


def markdown(result: dict[str, Any]) -> str:
    rows = ["| t (s) | RSS MiB (with workers) | open fds | threads | requests | errors | p50 ms | p95 ms | p99 ms |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for w in result["windows"]:
        rows.append(f"| {w['t_s']:.0f} | {w['rss_mib']} | {w['fds']} | {w['threads']} | {w.get('requests', 0)} | "
                    f"{w.get('errors', 0)} | {w.get('p50_ms') or '-'} | {w.get('p95_ms') or '-'} | "
                    f"{w.get('p99_ms') or '-'} |")
    d = result["drift"]
    lines = [f"# Soak: `python benchmarks/soak.py --duration {result['duration_s']:g} --rate {result['rate']:g} "
             f"--clients {result['clients']}`", "",
             f"{result['when']}; {result['cpu']}, {result['cores']} cores; load average before {result['load_before']}"
             f", after {result['load_after']} (a machine shared with other work: latency figures include that).",
             "", f"{result['total_requests']} requests, {result['total_errors']} errors.", "",
             "Drift, last window against the first after warm-up: " + ", ".join(
                 f"{k} {v['first']} -> {v['last']} (max {v['max']})" for k, v in d.items()) + ".", "", *rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second in total (default 200)")
    ap.add_argument("--clients", type=int, default=4, help="client threads (default 4)")
    ap.add_argument("--window", type=float, default=30.0, help="seconds per sample window (default 30)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "soak"), help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    run = soak(args.duration, args.rate, args.clients, args.window)
    result = {"duration_s": args.duration, "rate": args.rate, "clients": args.clients, "window_s": args.window,
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "python": platform.python_version(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "load_before": [round(x, 2) for x in load_before],
              "load_after": [round(x, 2) for x in os.getloadavg()], **run}
    result["total_requests"] = sum(w.get("requests", 0) for w in run["windows"])
    result["total_errors"] = sum(w.get("errors", 0) for w in run["windows"])
    result["drift"] = drift(run["windows"])
    Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    Path(args.out + ".md").write_text(md)
    print(md)
    return 0 if result["total_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
