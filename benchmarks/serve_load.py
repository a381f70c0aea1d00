"""Large request bodies against the HTTP service: does ``/healthz`` stay answered, does memory stay bounded?

    python benchmarks/serve_load.py [--clients 4] [--body-mb 16] [--rounds 2] [--before REV]

Starts ``python -m edgeify_runtime.serve`` on 127.0.0.1 for a tiny real bundle (a Gemm, ONNX Runtime), then
``--clients`` concurrent clients each POST ``--rounds`` JSON bodies of about ``--body-mb`` MiB to /v1/predict
while one more client polls /healthz every 20 ms. Reports the /healthz latency (p50/p99/max, ms), the peak RSS
of the service with its decode workers (sampled every 10 ms), and the predict status codes. ``--before REV``
runs the same load against ``examples/apps/serve.py`` of that git revision too (the service before its bodies
were decoded off the event loop). Bounded: every request has a timeout, every server is stopped by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def body_of(mb: float, features: int = 16) -> bytes:
    """A /v1/predict JSON body of about ``mb`` MiB for a (batch, features) float input."""
    import numpy as np

    per_sample = len(json.dumps([[0.123457] * features])) - 2
    n = max(1, int(mb * (1 << 20) / per_sample))
    x = np.random.default_rng(0).random((n, features)).round(6)
    return json.dumps({"inputs": {"x": x.tolist()}}).encode()


def start(argv: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 90
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        event = json.loads(line)
        if event.get("event") == "ready":
            proc.ready = event  # type: ignore[attr-defined]  (the service's ready line: port, grpc_port, model)
            return proc, int(event["port"])
    proc.kill()
    raise RuntimeError(f"the service did not start: {proc.stderr.read() if proc.stderr else ''}")


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _rss_tree(pid: int) -> int:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for q in procs:
        with contextlib.suppress(psutil.Error):
            total += q.memory_info().rss
    return total


def load(port: int, pid: int, body: bytes, *, clients: int, rounds: int, headers: dict[str, str] | None = None,
         timeout: float = 120.0) -> dict[str, Any]:
    """The load (see the module docstring); returns the figures."""
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    codes: list[int] = []
    errors: list[str] = []
    health_ms: list[float] = []
    health_codes: list[int] = []
    done = threading.Event()
    peak = [_rss_tree(pid)]

    def client() -> None:
        for _ in range(rounds):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            try:
                conn.request("POST", "/v1/predict", body=body, headers=hdrs)
                resp = conn.getresponse()
                resp.read()
                codes.append(resp.status)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                conn.close()

    def health() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            while not done.is_set():
                t0 = time.perf_counter()
                conn.request("GET", "/healthz", headers=headers or {})
                resp = conn.getresponse()
                resp.read()
                health_ms.append((time.perf_counter() - t0) * 1e3)
                health_codes.append(resp.status)
                time.sleep(0.02)
        except Exception as exc:
            errors.append(f"healthz: {type(exc).__name__}: {exc}")
        finally:
            conn.close()

    def memory() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_tree(pid))
            time.sleep(0.01)

    t0 = time.perf_counter()
    watchers = [threading.Thread(target=health, daemon=True), threading.Thread(target=memory, daemon=True)]
    for t in watchers:
        t.start()
    workers = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout * rounds + 30)
    done.set()
    for t in watchers:
        t.join(timeout + 5)
    ordered = sorted(health_ms) or [float("nan")]
    return {"clients": clients, "rounds": rounds, "body_mib": round(len(body) / (1 << 20), 2),
            "seconds": round(time.perf_counter() - t0, 2), "predict_codes": sorted(codes), "errors": errors[:5],
            "healthz": {"count": len(health_ms), "codes": sorted(set(health_codes)),
                        "p50_ms": round(statistics.median(ordered), 2),
                        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
                        "max_ms": round(ordered[-1], 2)},
            "peak_rss_mib": round(peak[0] / (1 << 20), 1)}


def _bundle(work: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests" / "ssh"))
    import sshlab

    return sshlab.make_bundle(work / "bundle" / "model", seed=1)


def serve_argv(bundle: Path, *extra: str, script: Path | None = None) -> list[str]:
    program = [str(script)] if script else ["-m", "edgeify_runtime.serve"]
    return [sys.executable, *program, "--bundle", str(bundle), "--host", "127.0.0.1", "--port", "0", "--threads",
            "1", "--max-request-samples", "1000000", "--max-queue", "4000000", "--max-body-mb", "64", *extra]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--body-mb", type=float, default=16.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--before", help="also run examples/apps/serve.py of this git revision")
    args = ap.parse_args(argv)
    out: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundle = _bundle(work)
        body = body_of(args.body_mb)
        runs = {"now": serve_argv(bundle)}
        if args.before:
            old = work / "serve_before.py"
            old.write_bytes(subprocess.run(["git", "-C", str(REPO), "show", f"{args.before}:examples/apps/serve.py"],
                                           capture_output=True, check=True).stdout)
            runs["before"] = serve_argv(bundle, script=old)
        for name, cmd in runs.items():
            proc, port = start(cmd, env=dict(os.environ))
            try:
                out[name] = load(port, proc.pid, body, clients=args.clients, rounds=args.rounds)
            finally:
                stop(proc)
            print(name, json.dumps(out[name]))
    results = REPO / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / "serve_load.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
