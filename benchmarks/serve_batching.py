"""The example HTTP service (examples/apps/serve.py) with dynamic micro-batching on vs. off, same load, one run.

    python benchmarks/serve_batching.py [--models digits mobilenet_v2] [--seconds 5] [--rounds 2] [--threads 1]

For each model it builds an fp32 ONNX Runtime bundle for x86 (the digits CNN, trained first when
examples/digits/model.pt2 is missing; MobileNetV2 from examples/models with random weights, 1x3x224x224 and a
dynamic batch axis) and starts three services side by side on 127.0.0.1: batching off (``--max-batch 1``),
on (``--max-batch B --max-wait-ms W``) and on without waiting (``--max-wait-ms 0``: a batch is whatever
queued while the engine was busy). Each gets the same closed-loop load: C concurrent clients (one keep-alive
connection each, the next request as soon as the answer is in) for T seconds after a warmup, at every
concurrency level, R rounds in alternating order so that drift on a shared machine hits all alike. Latency
is end to end at the client; the mean batch size comes from the service's own /metrics (histogram deltas).

"At the latency budget": the highest requests/s over the concurrency levels whose p95 stays within the
budget, per configuration. Prints a table and writes JSON to benchmarks/results/. The load generator, the
HTTP layer and the engine share this machine's cores (the engine gets ``--threads``, default 1): compare the
configurations within one run, not across machines. Every server is stopped (SIGTERM, then kill) before the
script exits; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import http.client
import importlib.util
import json
import os
import platform
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SERVE = REPO / "examples" / "apps" / "serve.py"

#: per model: concurrency levels, batching settings, latency budget (p95, ms), request encoding
PLANS: dict[str, dict[str, Any]] = {
    "digits": {"clients": [1, 4, 16, 32], "max_batch": 16, "max_wait_ms": 2.0, "budget_ms": 25.0,
               "encoding": "json"},
    "mobilenet_v2": {"clients": [1, 4, 8, 16], "max_batch": 8, "max_wait_ms": 10.0, "budget_ms": 400.0,
                     "encoding": "b64"},
}


# -- bundles --------------------------------------------------------------------------------------------------

def build_bundle(model: str, work: Path) -> tuple[Path, np.ndarray]:
    """(bundle dir, a few real-looking inputs of one sample each)."""
    from edgeify.build import build

    if model == "digits":
        src = REPO / "examples" / "digits"
        if not (src / "model.pt2").is_file():
            spec = importlib.util.spec_from_file_location("edgeify_digits_train", src / "train.py")
            train = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(train)
            src = work / "digits"
            train.main(out_dir=src)
        out = build(src / "model.pt2", target="x86", precision="fp32", engine="onnxruntime",
                    out=work / "digits-fp32", measure_latency=False).out
        with np.load(src / "eval.npz") as z:
            return out, z["x"][:32].astype(np.float32)
    if model == "mobilenet_v2":
        out = build(f"{REPO}/examples/models/mobilenetv2.py:mobilenet_v2", target="x86", precision="fp32",
                    engine="onnxruntime", input_shapes=["1,3,224,224"], out=work / "mnv2-fp32",
                    measure_latency=False).out
        return out, np.random.default_rng(0).standard_normal((8, 3, 224, 224)).astype(np.float32)
    raise SystemExit(f"unknown model {model!r}; choose from {', '.join(PLANS)}")


def request_bodies(x: np.ndarray, encoding: str) -> list[bytes]:
    bodies = []
    for i in range(len(x)):
        one = x[i:i + 1]
        if encoding == "b64":
            tensor: Any = {"b64": base64.b64encode(one.astype("<f4").tobytes()).decode(), "dtype": "float32",
                           "shape": list(one.shape)}
            bodies.append(json.dumps({"inputs": tensor, "encoding": "b64"}).encode())
        else:
            bodies.append(json.dumps({"inputs": one.tolist()}).encode())
    return bodies


# -- the service ----------------------------------------------------------------------------------------------

class Service:
    def __init__(self, bundle: Path, name: str, *args: str) -> None:
        self.name = name
        self.proc = subprocess.Popen([sys.executable, str(SERVE), "--bundle", str(bundle), "--host", "127.0.0.1",
                                      "--port", "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(ln) for ln in self.proc.stdout], daemon=True).start()
        self.stderr: list[str] = []
        threading.Thread(target=lambda: [self.stderr.append(ln) for ln in self.proc.stderr], daemon=True).start()
        try:
            ready = json.loads(lines.get(timeout=120))
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"{name}: serve.py did not start: {''.join(self.stderr)[-2000:]}") from None
        self.port = int(ready["port"])

    def metrics(self) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", "/metrics")
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode


def _hist(text: str, name: str) -> tuple[float, float]:
    """(sum, count) of an unlabelled Prometheus histogram."""
    s = re.search(rf"^{name}_sum (\S+)$", text, re.M)
    c = re.search(rf"^{name}_count (\S+)$", text, re.M)
    return (float(s.group(1)) if s else 0.0), (float(c.group(1)) if c else 0.0)


# -- the load -------------------------------------------------------------------------------------------------

def closed_loop(port: int, bodies: list[bytes], clients: int, warmup_s: float, seconds: float) -> dict[str, Any]:
    """C clients, each: send, wait for the answer, send again; the latencies (ms) of the requests that started
    and ended inside the measured window."""
    t_start = time.perf_counter() + 0.2
    t_measure = t_start + warmup_s
    t_end = t_measure + seconds
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = k
        try:
            while time.perf_counter() < t_start:
                time.sleep(0.001)
            while True:
                t0 = time.perf_counter()
                if t0 >= t_end:
                    return
                conn.request("POST", "/v1/predict", body=bodies[i % len(bodies)],
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                t1 = time.perf_counter()
                if resp.status != 200:
                    errors.append(str(resp.status))
                elif t0 >= t_measure and t1 <= t_end:
                    lat[k].append((t1 - t0) * 1e3)
                i += clients
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=warmup_s + seconds + 120)
    return {"clients": clients, "errors": len(errors), "error_examples": errors[:3],
            "_lat": [v for per in lat for v in per]}


def _merge(parts: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    lat = np.asarray([v for p in parts for v in p.pop("_lat")])
    out: dict[str, Any] = {"clients": parts[0]["clients"], "requests": int(lat.size),
                           "errors": sum(p["errors"] for p in parts),
                           "error_examples": [e for p in parts for e in p["error_examples"]][:3]}
    if lat.size:
        out.update(rps=lat.size / (seconds * len(parts)), p50_ms=float(np.percentile(lat, 50)),
                   p95_ms=float(np.percentile(lat, 95)), p99_ms=float(np.percentile(lat, 99)),
                   mean_ms=float(lat.mean()))
    return out


def run_model(model: str, plan: dict[str, Any], work: Path, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    bundle, x = build_bundle(model, work)
    print(f"[{model}] bundle built in {time.perf_counter() - t0:.0f}s: {bundle}", flush=True)
    bodies = request_bodies(x, plan["encoding"])
    threads = ["--threads", str(args.threads)]
    configs = {
        "off": ["--max-batch", "1", *threads],
        "on": ["--max-batch", str(plan["max_batch"]), "--max-wait-ms", str(plan["max_wait_ms"]), *threads],
        "on-nowait": ["--max-batch", str(plan["max_batch"]), "--max-wait-ms", "0", *threads],
    }
    services: dict[str, Service] = {}
    rows: list[dict[str, Any]] = []
    try:
        for name, flags in configs.items():
            services[name] = Service(bundle, name, *flags)
        for clients in plan["clients"]:
            parts: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
            batch = {name: [0.0, 0.0] for name in configs}
            for rnd in range(args.rounds):  # alternate the order, so drift on a shared machine hits all alike
                order = list(configs) if rnd % 2 == 0 else list(reversed(configs))
                for name in order:
                    svc = services[name]
                    before = _hist(svc.metrics(), "edgeify_batch_size")
                    part = closed_loop(svc.port, bodies, clients, args.warmup, args.seconds)
                    after = _hist(svc.metrics(), "edgeify_batch_size")
                    batch[name][0] += after[0] - before[0]
                    batch[name][1] += after[1] - before[1]
                    parts[name].append(part)
            for name in configs:
                res = _merge(parts[name], args.seconds)
                s_sum, s_count = batch[name]
                res.update(model=model, batching=name, mean_batch=s_sum / s_count if s_count else None)
                rows.append(res)
                print(f"[{model}] {name:9s} clients {clients:3d}: {res.get('rps', 0):8.1f} req/s  "
                      f"p95 {res.get('p95_ms', float('nan')):8.2f} ms  mean batch {res['mean_batch'] or 0:5.2f}  "
                      f"errors {res['errors']}", flush=True)
                if not res["requests"]:
                    raise RuntimeError(f"{model}, batching {name}, {clients} clients: no request succeeded "
                                       f"({res['errors']} errors, e.g. {res['error_examples']})")
    finally:
        codes = {name: svc.stop() for name, svc in services.items()}
    budget = plan["budget_ms"]
    at_budget = {}
    for name in configs:
        ok = [r for r in rows if r["batching"] == name and r.get("p95_ms") is not None and r["p95_ms"] <= budget
              and r["errors"] == 0]
        best = max(ok, key=lambda r: r["rps"]) if ok else None
        at_budget[name] = None if best is None else {"rps": best["rps"], "p95_ms": best["p95_ms"],
                                                     "clients": best["clients"]}
    return {"model": model, "bundle": str(bundle), "settings": dict(plan), "configs": configs,
            "rows": rows, "at_budget": at_budget, "exit_codes": codes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(PLANS), choices=list(PLANS))
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per round, level and configuration")
    ap.add_argument("--warmup", type=float, default=1.5, help="unmeasured seconds before each measurement")
    ap.add_argument("--rounds", type=int, default=2, help="measurements per level and configuration, in "
                                                          "alternating order (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="engine threads per service (default 1: the load "
                                                           "generator and the HTTP layer need the other cores)")
    ap.add_argument("--clients", type=int, nargs="+", help="concurrency levels (default: per model)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="edgeify-serve-bench-") as tmp:
        for model in args.models:
            plan = dict(PLANS[model])
            if args.clients:
                plan["clients"] = args.clients
            results.append(run_model(model, plan, Path(tmp), args))

    print()
    names = list(results[0]["configs"]) if results else []
    head = " | ".join(f"{n + ' req/s':>15s} {'p95 ms':>8s}" for n in names)
    print(f"{'model':13s} {'clients':>7s} | {head} | {'on batch':>8s} | {'on/off':>6s}")
    for res in results:
        by = {(r["batching"], r["clients"]): r for r in res["rows"]}
        for c in res["settings"]["clients"]:
            cells = " | ".join(f"{by[(n, c)].get('rps', 0):15.1f} {by[(n, c)].get('p95_ms', float('nan')):8.2f}"
                               for n in names)
            off, on = by[("off", c)], by[("on", c)]
            ratio = on.get("rps", 0) / off["rps"] if off.get("rps") else float("nan")
            print(f"{res['model']:13s} {c:7d} | {cells} | {on['mean_batch'] or 0:8.2f} | {ratio:5.2f}x")
        parts = []
        for n in names:
            best = res["at_budget"][n]
            parts.append(f"{n} {best['rps']:.1f} req/s (p95 {best['p95_ms']:.1f} ms, {best['clients']} clients)"
                         if best else f"{n}: no level within budget")
        print(f"  {res['model']} at p95 <= {res['settings']['budget_ms']:g} ms: " + "; ".join(parts))
    print("  on = --max-batch B --max-wait-ms W (per model: " +
          ", ".join(f"{r['model']} B={r['settings']['max_batch']} W={r['settings']['max_wait_ms']:g}"
                    for r in results) + "); on-nowait = same B, --max-wait-ms 0; off = --max-batch 1")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"serve_batching-{stamp}.json"
    path.write_text(json.dumps({
        "when": stamp, "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                                "python": platform.python_version()},
        "protocol": {"seconds": args.seconds, "warmup": args.warmup, "rounds": args.rounds, "threads": args.threads,
                     "load": "closed loop, one keep-alive connection per client, latency end to end at the client"},
        "results": results}, indent=2) + "\n")
    print(f"\nwrote {path}")
    failed = [r["model"] for r in results if any(c != 0 for c in r["exit_codes"].values())]
    if failed:
        print(f"services did not stop cleanly: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
