"""The device service's throughput over the Open Inference Protocol, REST and gRPC, against the engine alone.

    python benchmarks/serve_throughput.py [--models digits mobilenet_v2] [--clients 1 4 16] [--seconds 8]
                                          [--warmup 1] [--threads 1] [--max-batch 16] [--work DIR]

For each model it builds an fp32 bundle for x86-avx2 (ONNX Runtime; the digits CNN, trained first when
examples/digits/model.pt2 is missing; MobileNetV2 from examples/models with random weights, 1x3x224x224, a dynamic
batch axis), starts ``python -m edgeify_runtime.serve --port 0 --grpc-port 0`` on 127.0.0.1 (default
micro-batching: ``--max-batch 16``, ``--max-wait-ms 0``) and drives it with tritonclient 2.73 (the real client,
from a venv of its own, ``benchmarks/serve_throughput_client.py``): at each concurrency level C, C threads with
a client each send one sample per request in a closed loop, REST (binary tensors) and then gRPC. Per cell:
requests/s, samples/s, p50/p95 latency at the client, the batch sizes the micro-batcher formed (the service's
/metrics, histogram deltas) and the CPU seconds of service and load generator. Then, with the service stopped,
the engine alone: ``edgeify_runtime.load(bundle).run`` samples/s at batch 1 (what the clients send) and at the
mean batch sizes the batcher formed. Ratio = service samples/s / Model.run samples/s at batch 1 (and at the
formed batch: how close the service gets to the engine's ceiling at that batch).

Writes benchmarks/serve_throughput.md (table) and .json (everything), with the CPU (lscpu model and flags) and
the load average before and after. The load generator, the HTTP/gRPC layer and the engine share this machine's
cores: run it on a quiet machine, and compare within one run. Every server is stopped by its PID; every loop
and client is bounded in time. Bundles are reused from ``--work`` when given.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import serve_load  # noqa: E402  (start/stop a real service)

TRITONCLIENT = "tritonclient[http,grpc]==2.73.0"
CLIENT = HERE / "serve_throughput_client.py"
MODELS = ("digits", "mobilenet_v2")


def client_python() -> Path:
    """The tritonclient venv the tests use (tests/oip), made when missing (about 30 s)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeify-tests" / "tritonclient-2.73.0"
    py = cache / "bin" / "python"
    marker = cache / ".installed"
    if not marker.is_file():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(cache)], check=True, timeout=120)
        subprocess.run([str(py), "-m", "pip", "install", "-q", TRITONCLIENT], check=True, timeout=600)
        marker.write_text(TRITONCLIENT + "\n")
    return py


def build_bundle(model: str, work: Path) -> tuple[Path, np.ndarray]:
    """(bundle dir, a few inputs of one sample each); reused when ``work`` already holds it."""
    from edgeify.build import build

    if model == "digits":
        src = REPO / "examples" / "digits"
        if not (src / "model.pt2").is_file():
            src = work / "digits"
            if not (src / "model.pt2").is_file():
                import importlib.util

                spec = importlib.util.spec_from_file_location("edgeify_digits_train", REPO / "examples" / "digits" /
                                                              "train.py")
                train = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(train)
                train.main(out_dir=src)
        out = work / "digits-fp32"
        if not (out / "manifest.json").is_file():
            build(src / "model.pt2", target="x86-avx2", precision="fp32", engine="onnxruntime", out=out,
                  measure_latency=False)
        with np.load(src / "eval.npz") as z:
            return out, z["x"][:32].astype(np.float32)
    if model == "mobilenet_v2":
        out = work / "mnv2-fp32"
        if not (out / "manifest.json").is_file():
            build(f"{REPO}/examples/models/mobilenetv2.py:mobilenet_v2", target="x86-avx2", precision="fp32",
                  engine="onnxruntime", input_shapes=["1,3,224,224"], out=out, measure_latency=False)
        return out, np.random.default_rng(0).standard_normal((8, 3, 224, 224)).astype(np.float32)
    raise SystemExit(f"unknown model {model!r}; choose from {', '.join(MODELS)}")


# -- measurements ---------------------------------------------------------------------------------------------

def metrics(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def batch_histogram(text: str) -> dict[str, float]:
    """The edgeify_batch_size histogram: {"sum", "count", "le=B": cumulative count}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r'edgeify_batch_size_(sum|count|bucket)(?:\{le="([^"]+)"\})? (\S+)$', line)
        if m:
            out[m.group(1) if m.group(1) != "bucket" else f"le={m.group(2)}"] = float(m.group(3))
    return out


def formed_batches(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Engine calls and their sizes during a cell (from the histogram's deltas)."""
    calls = after.get("count", 0) - before.get("count", 0)
    samples = after.get("sum", 0) - before.get("sum", 0)
    les = sorted((k for k in after if k.startswith("le=") and k != "le=+Inf"), key=lambda k: float(k[3:]))
    dist, prev = {}, 0.0
    for k in les:
        cum = after[k] - before.get(k, 0)
        if cum - prev > 0:
            dist[f"<={int(float(k[3:]))}"] = int(cum - prev)
        prev = cum
    return {"engine_calls": int(calls), "mean_batch": round(samples / calls, 2) if calls else None,
            "distribution": dist}


def cpu_seconds(pid: int) -> float:
    import psutil

    p = psutil.Process(pid)
    total = 0.0
    for q in [p, *p.children(recursive=True)]:
        try:
            t = q.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def run_cell(py: Path, protocol: str, address: str, model: str, npy: Path, clients: int, seconds: float,
             warmup: float, name: str) -> dict[str, Any]:
    proc = subprocess.run([str(py), str(CLIENT), protocol, address, model, str(npy), str(clients), str(seconds),
                           str(warmup), name], capture_output=True, text=True, timeout=seconds + warmup + 180)
    if proc.returncode != 0:
        raise RuntimeError(f"the load generator failed ({protocol}, {clients} clients): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def engine_alone(bundle: Path, x: np.ndarray, batches: list[int], threads: int, seconds: float) -> dict[int, Any]:
    """``Model.run`` samples/s per batch size (each at least ``seconds`` after 5 warmup calls)."""
    import edgeify_runtime as er

    out: dict[int, Any] = {}
    with er.load(bundle, threads=threads) as m:
        name = m.inputs[0].name
        for b in batches:
            feed = {name: np.concatenate([x] * math.ceil(b / len(x)))[:b]}
            for _ in range(5):
                m.run(feed)
            calls, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                m.run(feed)
                calls += 1
            elapsed = time.perf_counter() - t0
            out[b] = {"calls": calls, "samples_per_s": round(calls * b / elapsed, 1),
                      "ms_per_call": round(elapsed / calls * 1e3, 3)}
    return out


# -- the machine ----------------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "cores": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        lscpu = ""
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    info["cpu"] = fields.get("Model name", platform.processor()).strip()
    flags = set(fields.get("Flags", "").split())
    info["flags"] = sorted(f for f in ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni",
                                       "amx_tile") if f in flags)
    return info


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return ""


# -- the run --------------------------------------------------------------------------------------------------

def bench_model(model: str, args: argparse.Namespace, work: Path, py: Path) -> dict[str, Any]:
    bundle, x = build_bundle(model, work)
    npy = work / f"{model}-x.npy"
    np.save(npy, x)
    import edgeify_runtime as er

    with er.load(bundle, threads=args.threads) as m:
        name = m.inputs[0].name
    argv = serve_load.serve_argv(bundle, "--grpc-port", "0", "--max-batch", str(args.max_batch))
    argv[argv.index("--threads") + 1] = str(args.threads)
    proc, port = serve_load.start(argv, env=dict(os.environ))
    cells: list[dict[str, Any]] = []
    try:
        ready = proc.ready  # type: ignore[attr-defined]
        grpc_port = int(ready["grpc_port"])
        for clients in args.clients:
            for protocol in args.protocols:
                address = f"127.0.0.1:{port if protocol == 'http' else grpc_port}"
                before, cpu0 = batch_histogram(metrics(port)), cpu_seconds(proc.pid)
                cell = run_cell(py, protocol, address, ready["model"], npy, clients, args.seconds, args.warmup, name)
                cell["service_cpu_s"] = round(cpu_seconds(proc.pid) - cpu0, 2)
                cell["batches"] = formed_batches(before, batch_histogram(metrics(port)))  # warmup included
                cell["requests_per_s"] = round(cell["requests"] / args.seconds, 1)
                cell["samples_per_s"] = round(cell["samples"] / args.seconds, 1)
                cells.append(cell)
                print(f"{model} {protocol:4} c={clients:<3} {cell['requests_per_s']:8.1f} req/s  p95 "
                      f"{cell['p95_ms']:8.2f} ms  mean batch {cell['batches']['mean_batch']}"
                      + (f"  errors {cell['errors']}" if cell["errors"] else ""), flush=True)
    finally:
        serve_load.stop(proc)
    formed = sorted({max(1, round(c["batches"]["mean_batch"] or 1)) for c in cells})
    engine = engine_alone(bundle, x, sorted({1, *formed}), args.threads, args.engine_seconds)
    for c in cells:
        b = max(1, round(c["batches"]["mean_batch"] or 1))
        c["ratio_vs_batch1"] = round(c["samples_per_s"] / engine[1]["samples_per_s"], 3)
        c["formed_batch"] = b
        c["ratio_vs_formed_batch"] = round(c["samples_per_s"] / engine[b]["samples_per_s"], 3)
    return {"bundle": str(bundle), "input_shape": [1, *x.shape[1:]], "cells": cells,
            "engine": {str(k): v for k, v in engine.items()}}


def markdown(out: dict[str, Any]) -> str:
    m = out["machine"]
    lines = [f"# Service throughput: Open Inference Protocol (REST, gRPC) vs. the engine alone ({out['date']})", "",
             f"CPU: {m['cpu']} ({m['cores']} cores; flags: {', '.join(m['flags'])}). Load before: "
             f"`{out['uptime_before']}`; after: `{out['uptime_after']}`.", "",
             f"Service: `python -m edgeify_runtime.serve --threads {out['args']['threads']} --max-batch "
             f"{out['args']['max_batch']} --max-wait-ms 0`; client: tritonclient 2.73 (one client per thread, one "
             f"sample per request, closed loop; binary tensors over REST); {out['args']['seconds']} s per cell after "
             f"{out['args']['warmup']} s warmup. Engine alone: `Model.run` with {out['args']['threads']} thread(s). "
             "Ratio = service samples/s / Model.run samples/s at batch 1 (and at the mean batch the micro-batcher "
             "formed).", "",
             "| model | protocol | clients | req/s | samples/s | p50 ms | p95 ms | mean batch formed | "
             "Model.run samples/s b=1 | ratio b=1 | Model.run samples/s at formed batch | ratio formed | "
             "CPU s service / client |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, r in out["models"].items():
        e1 = r["engine"]["1"]["samples_per_s"]
        for c in r["cells"]:
            ef = r["engine"][str(c["formed_batch"])]["samples_per_s"]
            lines.append(f"| {model} | {'REST' if c['protocol'] == 'http' else 'gRPC'} | {c['clients']} | "
                         f"{c['requests_per_s']} | {c['samples_per_s']} | {c['p50_ms']} | {c['p95_ms']} | "
                         f"{c['batches']['mean_batch']} | {e1} | {c['ratio_vs_batch1']} | {ef} (b={c['formed_batch']}) "
                         f"| {c['ratio_vs_formed_batch']} | {c['service_cpu_s']} / {c['client_cpu_s']} |")
    lines += ["", "Engine alone (`Model.run`):", "", "| model | batch | samples/s | ms per call |", "|---|---|---|---|"]
    for model, r in out["models"].items():
        for b, e in r["engine"].items():
            lines.append(f"| {model} | {b} | {e['samples_per_s']} | {e['ms_per_call']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--clients", nargs="+", type=int, default=[1, 4, 16])
    ap.add_argument("--protocols", nargs="+", default=["http", "grpc"], choices=["http", "grpc"])
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds per cell")
    ap.add_argument("--warmup", type=float, default=1.0, help="discarded seconds before each cell")
    ap.add_argument("--engine-seconds", type=float, default=3.0, help="seconds per batch size, engine alone")
    ap.add_argument("--threads", type=int, default=1, help="engine threads (service and Model.run alike)")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--work", help="keep bundles here and reuse them (default: a temporary directory)")
    ap.add_argument("--out", default=str(HERE / "serve_throughput"), help="output path without extension")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    py = client_python()
    out: dict[str, Any] = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                           "machine": machine(), "uptime_before": uptime(), "args": vars(args), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for model in args.models:
            out["models"][model] = bench_model(model, args, work, py)
    out["uptime_after"] = uptime()
    out["seconds"] = round(time.monotonic() - t0, 1)
    Path(args.out + ".json").write_text(json.dumps(out, indent=2) + "\n")
    Path(args.out + ".md").write_text(markdown(out))
    print(markdown(out))
    print(f"wrote {args.out}.md and .json in {out['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
