"""MobileNetV2 and ResNet-18 for x86: every engine x precision vs torch eager fp32, in one run.

    python benchmarks/x86_engines.py [--models mobilenet_v2 resnet18] [--threads 2] [--runs 100]

Each artifact is built with `edgeify.build` (parity-checked as usual) and benchmarked by the device-side agent in
its own process; torch eager runs in its own process too (engines sharing a process distort each other). Prints a
table and writes JSON to benchmarks/results/. Compare ratios within one run: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODELS = {
    "mobilenet_v2": REPO / "examples" / "models" / "mobilenetv2.py",
    "resnet18": REPO / "examples" / "models" / "resnet18.py",
}
VARIANTS = [(e, p) for e in ("onnxruntime", "openvino") for p in ("fp32", "fp16", "int8", "int8-dynamic")]
SHAPE = (1, 3, 224, 224)

TORCH_EAGER = r"""
import importlib.util, json, sys, time, torch
path, factory, threads, warmup, runs, min_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
    int(sys.argv[5]), float(sys.argv[6])
torch.set_num_threads(threads)
spec = importlib.util.spec_from_file_location("m", path); mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
model = getattr(mod, factory)().eval()
x = torch.randn(1, 3, 224, 224)
samples = []
with torch.inference_mode():
    for _ in range(warmup):
        model(x)
    t_end = time.perf_counter() + min_s
    while len(samples) < runs or time.perf_counter() < t_end:
        t = time.perf_counter_ns(); model(x); samples.append((time.perf_counter_ns() - t) / 1e6)
print(json.dumps({"samples_ms": samples}))
"""


def _stats(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)), "mean": float(a.mean()),
            "n": len(a)}


def torch_eager(model: str, threads: int, warmup: int, runs: int, min_s: float) -> dict:
    out = subprocess.run([sys.executable, "-c", TORCH_EAGER, str(MODELS[model]), model, str(threads), str(warmup),
                          str(runs), str(min_s)], capture_output=True, text=True, check=True)
    return _stats(json.loads(out.stdout.strip().splitlines()[-1])["samples_ms"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--min-duration", type=float, default=3.0)
    ap.add_argument("--calib-samples", type=int, default=64)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()

    from edgeify.bench import BenchSettings, bench
    from edgeify.build import build
    from edgeify.targets import load_registry

    spec = load_registry().get("x86-avx2")
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="edgeify-bench-"))
    rng = np.random.default_rng(0)
    calib = work / "calib.npz"
    np.savez(calib, x=rng.standard_normal((args.calib_samples, *SHAPE[1:])).astype(np.float32))
    rows = []
    for model in args.models:
        print(f"[{model}] torch eager fp32 ...", file=sys.stderr, flush=True)
        eager = torch_eager(model, args.threads, args.warmup, args.runs, args.min_duration)
        rows.append({"model": model, "engine": "torch-eager", "precision": "fp32", "size_mb": None,
                     "latency": eager, "ratio_vs_eager": 1.0, "build_s": None, "parity": None})
        for engine, precision in VARIANTS:
            print(f"[{model}] build {engine} {precision} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            res = build(f"{MODELS[model]}:{model}", target="x86-avx2", precision=precision, engine=engine,
                        calib=calib if precision == "int8" else None, input_shapes=[",".join(map(str, SHAPE))],
                        out=work / f"{model}-{engine}-{precision}", measure_latency=False)
            build_s = time.perf_counter() - t0
            settings = BenchSettings(threads=args.threads, warmup=args.warmup, runs=args.runs,
                                     min_duration_s=args.min_duration)
            r = bench(res.out, "local", settings=settings, store=False)[0].unwrap().to_dict()
            lat = r["latency_ms"]
            weights = sum(f["size"] for f in res.manifest.files.values())
            gated = [o for o in res.validation.outputs if o.gated]
            rows.append({"model": model, "engine": engine, "precision": precision, "size_mb": weights / 1e6,
                         "latency": {"p50": lat["p50"], "p95": lat["p95"], "mean": lat["mean"],
                                     "n": r["protocol"]["runs_done"]},
                         "ratio_vs_eager": eager["p50"] / lat["p50"], "build_s": build_s,
                         "quantization": res.quantization.to_dict(),
                         "parity": [{k: getattr(o, k) for k in ("inputs", "max_abs", "cosine", "top1_agreement")}
                                    for o in gated]})
    fp32_size = {r["model"]: r["size_mb"] for r in rows if r["engine"] == "onnxruntime" and r["precision"] == "fp32"}
    print()
    head = f"{'model':<13} {'engine':<12} {'precision':<13} {'size MB':>8} {'% fp32':>7} {'p50 ms':>8} " \
           f"{'p95 ms':>8} {'x eager':>8} {'cosine':>8} {'build s':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        size = f"{r['size_mb']:.2f}" if r["size_mb"] else "-"
        pct = f"{100 * r['size_mb'] / fp32_size[r['model']]:.0f}%" if r["size_mb"] else "-"
        cos = min((p["cosine"] for p in r["parity"] or []), default=None)
        cos_s = f"{cos:.4f}" if cos is not None else "-"
        build_s = f"{r['build_s']:.1f}" if r["build_s"] else "-"
        print(f"{r['model']:<13} {r['engine']:<12} {r['precision']:<13} {size:>8} {pct:>7} "
              f"{r['latency']['p50']:>8.2f} {r['latency']['p95']:>8.2f} {r['ratio_vs_eager']:>7.2f}x "
              f"{cos_s:>8} {build_s:>8}")
    summary = {}
    for model in args.models:
        int8 = [r for r in rows if r["model"] == model and r["precision"] == "int8"]
        best = min(int8, key=lambda r: r["latency"]["p50"])
        summary[model] = {"fastest_int8_engine": best["engine"], "fastest_int8_ratio_vs_eager": best["ratio_vs_eager"],
                          "default_int8_engine": spec.default_engine["int8"]}
        print(f"{model}: fastest int8 = {best['engine']} ({best['ratio_vs_eager']:.2f}x eager); "
              f"x86-avx2 default int8 engine = {spec.default_engine['int8']}")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"x86_engines-{stamp}.json"
    path.write_text(json.dumps({"when": stamp, "threads": args.threads, "protocol": vars(args) | {"out": str(args.out)},
                                "rows": rows, "summary": summary}, indent=2, default=str))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
