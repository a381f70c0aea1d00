"""Compression benchmark (issue 25): an over-parameterized CNN on the 8x8 digits, trained here, built as

* int8 alone (post-training quantization, each engine's own quantizer),
* prune (several ratios) + distill from the original, then the same int8 build,
* QAT (fake-quant fine-tuning), then the same int8 build,

for ONNX Runtime and OpenVINO on this machine's x86 target. Per bundle: latency (``edgeify bench`` local: the
benchmark agent runs each bundle in its own process), top-1 accuracy on held-out digits and its drop against the
ORIGINAL fp32 model, MACs per sample and bundle size. Writes ``benchmarks/compress.json`` and ``compress.md``.

    python benchmarks/compress.py [--ratios 0.5 0.75 0.875] [--epochs 8] [--engines onnxruntime openvino]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

MODEL = '''
import torch
from torch import nn


class WideCNN(nn.Module):
    """conv(1->{c1}) conv({c1}->{c2}) pool conv({c2}->{c2}) x2, global average pool, linear(10): far wider than
    8x8 digits need."""

    def __init__(self):
        super().__init__()
        def block(i, o):
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]
        self.features = nn.Sequential(*block(1, {c1}), *block({c1}, {c2}), nn.MaxPool2d(2), *block({c2}, {c2}),
                                      *block({c2}, {c2}))
        self.head = nn.Linear({c2}, 10)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def wide_cnn():
    return WideCNN().eval()


def trained():
    model = WideCNN()
    model.load_state_dict(torch.load({weights!r}, weights_only=True))
    return model.eval()
'''


def load_digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    y = d.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)


def train_teacher(module, x, y, epochs: int):
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)  # small convs: one thread trains faster than two on a shared 2-core host
    model = module.WideCNN().train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.75, 0.875])
    ap.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs of each compressed candidate")
    ap.add_argument("--teacher-epochs", type=int, default=10)
    ap.add_argument("--width", type=int, nargs=2, default=[64, 192], metavar=("C1", "C2"))
    ap.add_argument("--engines", nargs="+", default=["onnxruntime", "openvino"])
    ap.add_argument("--target", default="x86-avx512")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "compress")
    args = ap.parse_args()

    import importlib.util

    import torch
    from edgeify import build
    from edgeify.bench import BenchSettings, bench
    from edgeify.compress import CompressOptions, compress_source
    from edgeify.compress.prune import count
    from edgeify.optimize.ops import count_ops
    from edgeify.sources import open_source

    work = Path(tempfile.mkdtemp(prefix="edgeify-compress-"))
    x_train, x_eval, y_train, y_eval = load_digits_split()
    np.savez(work / "train.npz", x=x_train, labels=y_train)
    np.savez(work / "calib.npz", x=x_train[:256])
    np.savez(work / "eval.npz", x=x_eval, labels=y_eval)
    weights = work / "weights.pt"
    model_py = work / "wide_cnn.py"
    model_py.write_text(MODEL.format(c1=args.width[0], c2=args.width[1], weights=str(weights)))
    spec = importlib.util.spec_from_file_location("wide_cnn_bench", model_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print(f"training the teacher ({args.teacher_epochs} epochs) ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    teacher = train_teacher(module, x_train, y_train, args.teacher_epochs)
    torch.save(teacher.state_dict(), weights)
    with torch.no_grad():
        original_acc = float((teacher(torch.from_numpy(x_eval)).argmax(1).numpy() == y_eval).mean())
    macs0, params0 = count(teacher, (torch.randn(1, 1, 8, 8),))
    print(f"teacher: {time.perf_counter() - t0:.0f} s, accuracy {original_acc:.4f}, {macs0:,} MACs",
          file=sys.stderr, flush=True)
    factory = f"{model_py}:trained"

    variants: list[dict] = [{"name": "int8 (PTQ)", "model": factory, "macs": macs0, "params": params0,
                             "compression": None}]
    plans = [(f"prune {r} + distill", CompressOptions(train=str(work / "train.npz"), prune=r, distill=True,
                                                      epochs=args.epochs)) for r in args.ratios]
    plans.append(("QAT", CompressOptions(train=str(work / "train.npz"), qat=True, epochs=max(1, args.epochs // 2))))
    plans.append((f"prune {args.ratios[-1]} + distill + QAT",
                  CompressOptions(train=str(work / "train.npz"), prune=args.ratios[-1], distill=True, qat=True,
                                  epochs=args.epochs)))
    for name, opts in plans:
        print(f"compressing: {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        comp = compress_source(open_source(factory, ["1,1,8,8"]), opts, work / name.replace(" ", "_"))
        rec = comp.record
        variants.append({"name": name, "model": str(comp.source.path),
                         "macs": (rec.get("macs") or {}).get("after", macs0),
                         "params": (rec.get("params") or {}).get("after", params0),
                         "compression": {"prune_ratio": opts.prune, "distilled": opts.distill, "qat": opts.qat,
                                         "seconds": round(time.perf_counter() - t0, 1),
                                         "training": [rec[p] for p in ("distill", "qat") if p in rec]}})
    settings = BenchSettings(threads=args.threads, warmup=20, runs=200, min_duration_s=2.0)
    rows = []
    for engine in args.engines:
        for v in [{"name": "fp32", "model": factory, "macs": macs0, "params": params0, "compression": None,
                   "precision": "fp32"}, *variants]:
            precision = v.get("precision", "int8")
            print(f"[{engine}] build + bench: {v['name']} ({precision}) ...", file=sys.stderr, flush=True)
            out = work / f"{engine}-{v['name'].replace(' ', '_')}-{precision}"
            shapes = ["1,1,8,8"] if v["model"].endswith(":trained") else None
            res = build(v["model"], target=args.target, engine=engine, precision=precision,
                        calib=work / "calib.npz", eval=work / "eval.npz", input_shapes=shapes, out=out,
                        measure_latency=False, use_cache=False)
            r = bench(res.out, "local", settings=settings, store=False)[0].unwrap().to_dict()
            acc = res.validation.accuracy.built_accuracy
            quantized, total = count_ops(res.out)
            rows.append({"engine": engine, "variant": v["name"], "precision": precision,
                         "p50_ms": r["latency_ms"]["p50"], "p95_ms": r["latency_ms"]["p95"],
                         "accuracy": acc, "drop_points": round((original_acc - acc) * 100, 2),
                         "macs": v["macs"], "params": v["params"],
                         "size_kb": round(sum(f["size"] for f in res.manifest.files.values()) / 1024, 1),
                         "quantized_ops": quantized, "total_ops": total,
                         "compression": v["compression"]})
    load = os.getloadavg()
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError, StopIteration):
        text = Path("/proc/cpuinfo").read_text()
        cpu = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        flags = next(line for line in text.splitlines() if line.startswith("flags")).split()
        cpu += " (" + ", ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16") if f in flags) + ")"
    meta = {"cpu": cpu, "cores": os.cpu_count(), "load_avg": [round(x, 2) for x in load], "threads": args.threads,
            "target": args.target, "original_accuracy": original_acc, "teacher_macs": macs0,
            "width": args.width, "epochs": args.epochs, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    lines = [f"# Compression benchmark ({meta['when']})", "",
             f"CPU: {cpu}, {meta['cores']} cores, load average at the end {meta['load_avg']}; batch 1, "
             f"{args.threads} threads, p50 of `edgeify bench` (each bundle in its own process). Original fp32 "
             f"accuracy {original_acc:.2%} on {len(y_eval)} held-out digits; drop is against it.", "",
             "| engine | variant | precision | p50 ms | p95 ms | x int8 | accuracy | drop pt | MACs | params | "
             "size KB | int8 ops |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for engine in args.engines:
        base = next(r["p50_ms"] for r in rows if r["engine"] == engine and r["variant"] == "int8 (PTQ)")
        for r in (r for r in rows if r["engine"] == engine):
            ops = f"{r['quantized_ops']}/{r['total_ops']}" if r["total_ops"] else "-"
            lines.append(f"| {engine} | {r['variant']} | {r['precision']} | {r['p50_ms']:.3f} | {r['p95_ms']:.3f} | "
                         f"{base / r['p50_ms']:.2f} | {r['accuracy']:.4f} | {r['drop_points']:+.2f} | {r['macs']:,} | "
                         f"{r['params']:,} | {r['size_kb']} | {ops} |")
    table = "\n".join(lines)
    print(table)
    args.out.with_suffix(".md").write_text(table + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
