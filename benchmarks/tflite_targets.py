"""The TFLite (rpi5) builds of the digits CNN, and optionally MobileNetV2, in every precision from both a PyTorch
(.pt2) and an ONNX source: conversion time, size, parity, digits accuracy and local LiteRT latency, in one run.

    python benchmarks/tflite_targets.py [--mobilenet] [--threads 2]

Every build runs with a fresh step cache (so the conversion is timed; onnx2tf converts every variant in one run,
timed once and shown on the fp32 row, the other ONNX rows only pick their variant), parity-checked as usual, then
benchmarked with `edgeify bench` (the device-side agent in its own process, LiteRT + XNNPACK). The latency is
this x86 host's, not a Raspberry Pi's. Prints a table and writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8", "int16x8")


def _sources(work: Path, mobilenet: bool) -> dict[str, dict]:
    import importlib.util
    import warnings

    import torch

    spec = importlib.util.spec_from_file_location("digits_train", REPO / "examples" / "digits" / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    digits_dir = work / "digits"
    train.main(out_dir=digits_dir)
    models = {"digits": {"pt2": digits_dir / "model.pt2", "calib": digits_dir / "calib.npz",
                         "eval": digits_dir / "eval.npz"}}
    ep = torch.export.load(str(digits_dir / "model.pt2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ep, (), str(digits_dir / "model.onnx"), dynamo=True, external_data=False,
                          input_names=["x"], output_names=["logits"], verbose=False)
    models["digits"]["onnx"] = digits_dir / "model.onnx"
    if mobilenet:
        spec = importlib.util.spec_from_file_location("mnv2", REPO / "examples" / "models" / "mobilenetv2.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        net = mod.mobilenet_v2().eval()
        d = work / "mnv2"
        d.mkdir()
        x = np.random.default_rng(0).standard_normal((16, 3, 224, 224)).astype(np.float32)
        np.savez(d / "calib.npz", x=x)
        torch.export.save(torch.export.export(net, (torch.from_numpy(x[:1]),)), str(d / "model.pt2"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.from_numpy(x[:1]),), str(d / "model.onnx"), dynamo=True,
                              external_data=False, input_names=["x"], output_names=["logits"], verbose=False)
        models["mobilenet_v2"] = {"pt2": d / "model.pt2", "onnx": d / "model.onnx", "calib": d / "calib.npz",
                                  "eval": None}
    return models


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mobilenet", action="store_true", help="also MobileNetV2 (random weights), slower")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--target", default="rpi5")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeify-tflite-bench-"))
    os.environ["EDGEIFY_HOME"] = str(work / "home")  # a fresh step cache: conversions are timed
    from edgeify.build import build

    rows = []
    for model, src in _sources(work, args.mobilenet).items():
        for kind in ("pt2", "onnx"):
            for prec in PRECISIONS:
                out = work / "bundles" / f"{model}-{kind}-{prec}"
                t0 = time.perf_counter()
                res = build(src[kind], target=args.target, precision=prec, calib=src["calib"], eval=src["eval"],
                            out=out, measure_latency=False)
                total = time.perf_counter() - t0
                steps = {s["id"]: s for s in res.steps}
                conv = steps["convert"]
                real = next(o for o in res.validation.outputs if o.inputs.startswith("real"))
                bench = subprocess.run([sys.executable, "-m", "edgeify", "bench", str(out), "--threads",
                                        str(args.threads), "--format", "json", "--no-store"],
                                       capture_output=True, text=True, check=True)
                lat = json.loads(bench.stdout)
                acc = res.validation.accuracy
                rows.append({
                    "model": model, "source": kind, "precision": prec, "target": args.target,
                    "converter": res.quantization.converter, "tool": res.quantization.tool,
                    "convert_s": None if conv["cached"] else conv["seconds"],
                    "quantize_s": steps["quantize"]["seconds"], "build_s": round(total, 2),
                    "size_bytes": res.manifest.files["model.tflite"]["size"],
                    "cosine": real.cosine, "max_abs": real.max_abs, "ref_max_abs": real.ref_max_abs,
                    "accuracy": acc and acc.built_accuracy, "source_accuracy": acc and acc.source_accuracy,
                    "drop_points": acc and acc.drop_points, "min_version": res.manifest.engine.min_version,
                    "latency_p50_ms": lat["latency_ms"]["p50"], "latency_p95_ms": lat["latency_ms"]["p95"],
                    "engine_module": lat["engine"]["module"], "threads": lat["protocol"]["threads"],
                })
                r = rows[-1]
                conv_s = "(shared)" if r["convert_s"] is None else f"{r['convert_s']:.1f} s"
                acc_s = "-" if r["accuracy"] is None else f"{r['accuracy']:.2%}"
                print(f"{model:<12} {kind:<4} {prec:<12} convert {conv_s:>9} quantize {r['quantize_s']:5.2f} s  "
                      f"{r['size_bytes'] / 1e6:6.3f} MB  cos {r['cosine']:.5f}  max|Δ| {r['max_abs']:.3g}  "
                      f"acc {acc_s}  p50 {r['latency_p50_ms']:.3f} ms  min runtime {r['min_version']}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"tflite_targets-{stamp}.json"
    path.write_text(json.dumps({"rows": rows, "threads": args.threads, "target": args.target}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
