"""edgeify's overhead against each engine's own benchmark tool, on the same artifact, in one run (issue 28, item 6).

Builds (or takes with --bundle) an OpenVINO fp32 IR bundle of MobileNetV2 (examples/models/mobilenetv2.py), then
runs, interleaved over --rounds rounds (the order rotates each round), each in its own process:
  * ``edgeify bench BUNDLE --threads T`` (the agent: Model.run in a timed loop);
  * OpenVINO's ``benchmark_app`` on the bundle's model.xml, same threads (``-hint none -nthreads T``; with
    ``-hint none`` the CPU plugin applies its internal default, LATENCY with 1 stream and 1 infer request), the
    inference precision the bundle pins (``-infer_precision f32`` for fp32), f32 input (``-ip f32``: otherwise
    benchmark_app feeds u8 and adds a conversion), in three forms:
      - ``static``: ``-shape x[1,...]`` reshapes the model to a static batch of 1 (benchmark_app's usual way);
      - ``dynamic``: ``-data_shape x[1,...]`` keeps the IR's dynamic batch, as edgeify compiles it;
      - ``dynamic_sync``: the same with ``-api sync`` (benchmark_app's default API is async, 1 request);
  * two minimal Python loops on raw OpenVINO with edgeify's compile config, one InferRequest, the input set once:
    ``openvino_python`` (sync ``infer()``, like Model.run) and ``openvino_python_async`` (``start_async(); wait()``,
    like benchmark_app). They split edgeify's own cost from the cost of calling OpenVINO from Python;
    ``openvino_python_async_static`` is the async loop on the IR reshaped static for batch 1 (benchmark_app -shape's
    model from Python).
ONNX Runtime's own perf tool (onnxruntime_perf_test) is looked for on PATH; the onnxruntime wheel does not ship it
(only ``onnxruntime.tools.onnxruntime_test``, a Python loop that reports a mean, has no thread setting and cannot read
an OpenVINO IR), so it is reported as not run unless found.
``edgeify_dynamic`` is ``edgeify bench`` on a copy of the bundle with the OpenVINO option ``static_shapes: 0``
(one compile of the IR's dynamic batch, as the adapter compiled before session 5; it runs start_async + wait like
the default): the share of the static compile.
Then, in one process (--blocks), edgeify's Model.run against bare InferRequest calls on the same compiled model and
the IR reshaped to a static batch, in alternating blocks: what edgeify adds per call, and what the dynamic batch costs.
Writes benchmarks/engine_overhead.{json,md}: per-round medians, per-round ratios (edgeify / tool) and the medians
over rounds, with the CPU and the load (``uptime``) before every round.

    python benchmarks/engine_overhead.py [--bundle DIR] [--rounds 5] [--threads 2] [--seconds 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from edgeify_runtime.fingerprint import cpu_summary

REPO = Path(__file__).resolve().parents[1]
_UNIT = {"ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1e3}


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def build_bundle(out: Path) -> Path:
    cmd = [sys.executable, "-m", "edgeify", "build", "examples/models/mobilenetv2.py:mobilenet_v2",
           "-t", "x86-avx512", "--engine", "openvino", "-p", "fp32", "--input-shape", "1,3,224,224",
           "--no-latency", "-o", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        sys.exit(f"build failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return out


def with_options(bundle: Path, dest: Path, options: dict) -> Path:
    """A copy of ``bundle`` whose manifest ``engine.options`` add ``options`` (same files, as optimize does)."""
    from edgeify_runtime.manifest import Manifest

    if not dest.exists():
        shutil.copytree(bundle, dest)
        m = Manifest.read(dest)
        m.updated(engine={**m.raw["engine"], "options": {**m.engine.options, **options}}).write(dest)
    return dest


def run_edgeify(bundle: Path, threads: int, seconds: float) -> dict:
    cmd = [sys.executable, "-m", "edgeify", "bench", str(bundle), "--threads", str(threads), "--warmup", "10",
           "--runs", "1", "--min-duration", str(seconds), "--no-store", "--format", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr[-800:], "command": cmd}
    res = json.loads(proc.stdout)
    res = res[0] if isinstance(res, list) else res
    lat = res["latency_ms"]
    return {"p50_ms": lat["p50"], "mean_ms": lat["mean"], "p90_ms": lat["p90"], "count": res["protocol"]["runs_done"],
            "command": cmd}


#: the floor for a Python caller: raw OpenVINO, the same compile config as edgeify's adapter, one InferRequest, the
#: input tensor set once (no per-call wrapping), a synchronous infer() per sample timed like the agent times Model.run
_RAW = """
import statistics, sys, time, numpy as np, openvino as ov
xml, threads, prec, seconds, api = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
static = sys.argv[6] == "static"
core = ov.Core(); model = core.read_model(xml)
cfg = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
if prec != "-": cfg["INFERENCE_PRECISION_HINT"] = prec
shape = [d.get_length() if d.is_static else 1 for d in model.inputs[0].get_partial_shape()]
if static:  # the IR reshaped to the batch of 1 before compiling, as benchmark_app -shape does
    model.reshape({model.inputs[0]: ov.PartialShape(shape)})
req = core.compile_model(model, "CPU", cfg).create_infer_request()
req.set_input_tensor(ov.Tensor(np.random.default_rng(0).random(shape, dtype=np.float32), shared_memory=True))
def run():
    if api == "async":  # as benchmark_app's default API: the stream's own thread runs it, this one waits
        req.start_async(); req.wait()
    else:
        req.infer()
for _ in range(10): run()
s = []; end = time.perf_counter() + seconds
while time.perf_counter() < end:
    t = time.perf_counter_ns(); run(); s.append(time.perf_counter_ns() - t)
print(statistics.median(s) / 1e6, statistics.mean(s) / 1e6, len(s))
"""


def run_raw_openvino(xml: Path, threads: int, seconds: float, precision: str | None, api: str = "sync",
                     static: bool = False) -> dict:
    cmd = [sys.executable, "-c", _RAW, str(xml), str(threads), precision or "-", str(seconds), api,
           "static" if static else "as-read"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr[-800:], "command": ["python", "-c", "<raw OpenVINO loop>", *cmd[3:]]}
    p50, mean, count = proc.stdout.split()
    return {"p50_ms": round(float(p50), 6), "mean_ms": round(float(mean), 6), "count": int(count),
            "command": ["python", "-c", "<raw OpenVINO loop, benchmarks/engine_overhead.py _RAW>", *cmd[3:]]}


#: one process, one compiled model: edgeify's Model.run against bare InferRequest calls on the same request, and the
#: same IR reshaped to a static batch, in alternating blocks (so load drift hits every variant alike)
_BLOCKS = """
import json, statistics, sys, time, numpy as np, openvino as ov
from edgeify_runtime import load
bundle, threads, prec, rounds, per = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
m = load(bundle, threads=threads); a = m._adapter; req = a._request; port = a._in_ports[0][1]
d = load(bundle, threads=threads, options={"static_shapes": 0})
spec = m.inputs[0]; shape = [d if isinstance(d, int) else 1 for d in spec.shape]
x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32); feeds = {spec.name: x}
def preset():
    req.set_tensor(port, ov.Tensor(x, shared_memory=True))
    def f():
        req.start_async(); req.wait()
    return f
variants = {"Model.run": lambda: lambda: m.run(feeds),
            "Model.run, static_shapes 0 (dynamic-batch compile)": lambda: lambda: d.run(feeds),
            "sync infer(inputs) on the same request (the adapter before session 5)":
                lambda: lambda: req.infer({port: x}, share_inputs=True, share_outputs=False),
            "start_async + wait, input set once": preset}
S = {k: [] for k in variants}
for _ in range(rounds):
    for k, make in variants.items():
        f = make()
        for _ in range(5): f()
        for _ in range(per):
            t = time.perf_counter_ns(); f(); S[k].append(time.perf_counter_ns() - t)
print(json.dumps({k: round(statistics.median(v) / 1e6, 4) for k, v in S.items()}))
"""


def run_blocks(bundle: Path, threads: int, precision: str | None, rounds: int, per: int) -> dict:
    cmd = [sys.executable, "-c", _BLOCKS, str(bundle), str(threads), precision or "-", str(rounds), str(per)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr[-800:]}
    p50 = json.loads(proc.stdout.strip().splitlines()[-1])
    base = p50["Model.run"]
    return {"p50_ms": p50, "ratio_model_run_to": {k: round(base / v, 4) for k, v in p50.items()},
            "blocks": rounds, "runs_per_block": per, "uptime_after": uptime()}


def parse_benchmark_app(text: str) -> dict:
    out: dict = {}
    for key in ("Median", "Average", "Min", "Max"):
        m = re.search(rf"^\[ INFO \]\s+{key}:\s+([\d.]+)\s*(ms|us|µs|s)\b", text, re.M)
        if m:
            out[f"{key.lower()}_ms"] = round(float(m.group(1)) * _UNIT[m.group(2)], 6)
    m = re.search(r"Count:\s+(\d+) iterations", text)
    out["count"] = int(m.group(1)) if m else None
    m = re.search(r"(\d+) inference requests", text)
    out["infer_requests"] = int(m.group(1)) if m else None
    return out


def run_benchmark_app(exe: str, xml: Path, threads: int, seconds: float, precision: str | None, shape_flag: str,
                      shape: str, api: str = "async") -> dict:
    cmd = [exe, "-m", str(xml), "-d", "CPU", "-hint", "none", "-nthreads", str(threads), "-ip", "f32",
           shape_flag, shape, "-t", str(max(1, round(seconds))), "-api", api]
    if precision:
        cmd += ["-infer_precision", precision]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    parsed = parse_benchmark_app(proc.stdout + proc.stderr)
    if proc.returncode != 0 or "median_ms" not in parsed:
        return {"error": (proc.stdout + proc.stderr)[-800:], "command": cmd}
    return {"p50_ms": parsed["median_ms"], "mean_ms": parsed.get("average_ms"), "count": parsed["count"],
            "infer_requests": parsed["infer_requests"], "command": cmd}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, help="OpenVINO IR bundle (default: build MobileNetV2 fp32 x86-avx512)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0, help="timed seconds per process")
    ap.add_argument("--blocks", type=int, default=8, help="in-process alternating blocks per variant (0: skip)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "engine_overhead")
    args = ap.parse_args()

    tmp = None
    bundle = args.bundle
    if bundle is None:
        tmp = Path(tempfile.mkdtemp(prefix="edgeify-overhead-"))
        bundle = build_bundle(tmp / "mobilenetv2-openvino-fp32")
    manifest = json.loads((bundle / "manifest.json").read_text())
    if manifest["engine"]["name"] != "openvino":
        sys.exit(f"{bundle} is not an OpenVINO bundle")
    xml = bundle / manifest["engine"]["artifact"]
    prec = {"fp32": "f32", "bf16": "bf16"}.get(manifest["precision"])
    inp = manifest["inputs"][0]
    dims = [d if isinstance(d, int) else 1 for d in inp["shape"]]
    shape = f"{inp['name']}[{','.join(map(str, dims))}]"
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).parent / "benchmark_app")
    ort_tool = shutil.which("onnxruntime_perf_test")

    tmp = tmp or Path(tempfile.mkdtemp(prefix="edgeify-overhead-"))
    dynamic = with_options(bundle, tmp / f"{bundle.name}-static_shapes0", {"static_shapes": 0})
    runners = {
        "edgeify": lambda: run_edgeify(bundle, args.threads, args.seconds),
        # the adapter before it compiled static shapes: one compile of the IR's dynamic batch
        "edgeify_dynamic": lambda: run_edgeify(dynamic, args.threads, args.seconds),
        "benchmark_app_static": lambda: run_benchmark_app(exe, xml, args.threads, args.seconds, prec, "-shape", shape),
        "benchmark_app_dynamic": lambda: run_benchmark_app(exe, xml, args.threads, args.seconds, prec,
                                                           "-data_shape", shape),
        "benchmark_app_dynamic_sync": lambda: run_benchmark_app(exe, xml, args.threads, args.seconds, prec,
                                                                "-data_shape", shape, api="sync"),
        "openvino_python": lambda: run_raw_openvino(xml, args.threads, args.seconds, prec),
        "openvino_python_async": lambda: run_raw_openvino(xml, args.threads, args.seconds, prec, api="async"),
        # the same loop on the IR reshaped static for batch 1: splits "a Python caller" from "a static compile"
        "openvino_python_async_static": lambda: run_raw_openvino(xml, args.threads, args.seconds, prec,
                                                                 api="async", static=True),
    }
    names = list(runners)
    rounds = []
    started = dt.datetime.now(dt.timezone.utc)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        row: dict = {"round": r + 1, "order": order, "uptime_before": uptime()}
        for name in order:
            row[name] = runners[name]()
            print(f"round {r + 1} {name}: {row[name].get('p50_ms', row[name].get('error'))}", file=sys.stderr,
                  flush=True)
        e = row["edgeify"].get("p50_ms")
        for tool in names[1:]:
            t = row[tool].get("p50_ms")
            row[f"ratio_vs_{tool}"] = round(e / t, 4) if e and t else None
        rounds.append(row)

    def med(key: str) -> float | None:
        vals = [row[key] if key.startswith("ratio") else row[key].get("p50_ms") for row in rounds]
        vals = [v for v in vals if v is not None]
        return round(statistics.median(vals), 4) if vals else None

    in_process = run_blocks(bundle, args.threads, prec, args.blocks, 60) if args.blocks else None
    summary = {n: med(n) for n in names}
    summary.update({f"ratio_vs_{t}": med(f"ratio_vs_{t}") for t in names[1:]})
    result = {
        "what": "edgeify bench vs the engine's own tool on the same OpenVINO IR (issue 28 item 6)",
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "cpu": cpu_summary(), "cores": os.cpu_count(),
        "threads": args.threads, "seconds_per_process": args.seconds, "rounds": args.rounds,
        "bundle": str(bundle), "precision": manifest["precision"], "target": manifest["target"]["name"],
        "benchmark_app_infer_precision": prec, "input_shape": shape, "uptime_after": uptime(),
        "onnxruntime_perf_test": ort_tool or ("not run: the onnxruntime wheel ships no onnxruntime_perf_test "
                                              "(only onnxruntime.tools.onnxruntime_test: a Python loop, mean only, "
                                              "no thread setting, cannot read an OpenVINO IR)"),
        "median_over_rounds": summary, "per_round": rounds, "in_process": in_process,
    }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# benchmarks/engine_overhead.py — {result['started_at']}", "",
             f"CPU: {result['cpu']}, {result['cores']} cores; {args.threads} threads; {manifest['precision']} "
             f"OpenVINO IR of MobileNetV2 ({shape}); {args.seconds:g} s timed per process; each tool its own process, "
             f"{args.rounds} interleaved rounds (order rotates). p50 ms per round; ratio = edgeify / tool.", "",
             "| round | load (1/5/15 min) before | " + " | ".join(names) + " | " +
             " | ".join(f"edgeify/{n}" for n in names[1:]) + " |", "|---" * (2 + 2 * len(names) - 1) + "|"]
    for row in rounds:
        load = row["uptime_before"].split("load average:")[-1].strip()
        cells = [row[n].get("p50_ms", "err") for n in names]
        lines.append(f"| {row['round']} | {load} | " + " | ".join(str(c) for c in cells) + " | " +
                     " | ".join(str(row[f"ratio_vs_{n}"]) for n in names[1:]) + " |")
    lines.append("| median | | " + " | ".join(str(summary[n]) for n in names) + " | " +
                 " | ".join(str(summary[f"ratio_vs_{n}"]) for n in names[1:]) + " |")
    if in_process and "p50_ms" in in_process:
        lines += ["", f"In one process, {in_process['blocks']} alternating blocks of {in_process['runs_per_block']} "
                  "runs per variant (same compiled model; p50 ms; Model.run / variant):", ""]
        lines += [f"- {k}: {v} ms ({in_process['ratio_model_run_to'][k]})" for k, v in in_process["p50_ms"].items()]
    lines += ["", f"Load after: {result['uptime_after']}", "",
              f"ONNX Runtime's perf tool: {result['onnxruntime_perf_test']}.", "",
              "Commands (round 1): " + "; ".join("`" + " ".join(rounds[0][n]["command"]) + "`" for n in names)]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(json.dumps(summary, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
