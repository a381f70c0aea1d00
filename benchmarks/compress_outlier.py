"""QAT vs the quantization ladder on the outlier model (issue 25, done-when 2): examples/outlier's CNN (two conv2
channels 1000x: plain int8 breaks) as an eager PyTorch module, optimized twice for ONNX Runtime int8 on this
machine: without ``--compress`` (the ladder: recipes, then layers kept in float) and with ``--compress qat`` (QAT
first). Writes ``benchmarks/compress_outlier.md`` and ``.json``.

    python benchmarks/compress_outlier.py [--max-drop 2.5] [--epochs 30] [--lr 0.01]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

TORCH_MODEL = '''
import onnx
import torch
from onnx import numpy_helper
from torch import nn


class OutlierCNN(nn.Module):
    def __init__(self, width=8, layers=4):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(1 if i == 0 else width, width, 3, padding=1) for i in range(layers))
        self.fc = nn.Linear(width * 64, 10)

    def forward(self, x):
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.fc(x.flatten(1))


def model():
    m = OutlierCNN()
    w = {{i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in onnx.load({onnx!r}).graph.initializer}}
    with torch.no_grad():
        for i, conv in enumerate(m.convs, start=1):
            conv.weight.copy_(w[f"w{{i}}"])
            conv.bias.copy_(w[f"b{{i}}"])
        m.fc.weight.copy_(w["wfc"])
        m.fc.bias.copy_(w["bfc"])
    return m.eval()
'''


def _cmd(*args: str) -> str:
    try:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-drop", type=float, default=2.5)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--target", default="x86-avx512")
    ap.add_argument("--out", type=Path, default=HERE / "compress_outlier")
    args = ap.parse_args()

    import edgeify
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    work = Path(tempfile.mkdtemp(prefix="edgeify-compress-outlier-"))
    spec = importlib.util.spec_from_file_location("edgeify_outlier_bench", REPO / "examples/outlier/make_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    files = mod.make(work / "outlier")
    (work / "outlier_torch.py").write_text(TORCH_MODEL.format(onnx=str(files["model"])))
    d = load_digits()
    x_tr, _, y_tr, _ = train_test_split((d.images.astype(np.float32) / 16.0)[:, None], d.target.astype(np.int64),
                                        test_size=0.3, stratify=d.target, random_state=0)
    np.savez(work / "train.npz", x=x_tr, labels=y_tr)
    cpu = next((ln.split(":", 1)[1].strip() for ln in _cmd("lscpu").splitlines() if ln.startswith("Model name")), "")
    up_start = _cmd("uptime").strip()
    runs = {}
    for name, extra in (("ladder", {}), ("qat", {"compress": "qat", "train": work / "train.npz",
                                                 "epochs": args.epochs, "train_lr": args.lr})):
        t0 = time.perf_counter()
        res = edgeify.optimize(f"{work / 'outlier_torch.py'}:model", target=args.target, out=work / f"best-{name}",
                               calib=files["calib"], eval=files["eval"], input_shapes=["1,1,8,8"],
                               engines=["onnxruntime"], precisions=["int8"], max_accuracy_drop=args.max_drop,
                               progress=lambda m: print(f"optimize: {m}", file=sys.stderr, flush=True), **extra)
        runs[name] = {"wall_s": round(time.perf_counter() - t0, 1), "result": res.to_json()}
    meta = {"cpu": cpu, "cores": os.cpu_count(), "uptime_start": up_start, "uptime_end": _cmd("uptime").strip(),
            "target": args.target, "max_accuracy_drop": args.max_drop, "qat_epochs": args.epochs, "qat_lr": args.lr,
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    lines = [f"# QAT vs the ladder on the outlier model ({meta['when']})", "",
             f"CPU (`lscpu`): {cpu}, {meta['cores']} cores. Load (`uptime`): start `{up_start}`; end "
             f"`{meta['uptime_end']}`. Two `edgeify.optimize` runs, ONNX Runtime, `-p int8`, "
             f"`--max-accuracy-drop {args.max_drop}`; the second with `--compress qat --epochs {args.epochs} "
             f"--train-lr {args.lr}` on the digits training split. Drops are against the original model.", "",
             "## Ladder rungs", "", "| run | rung | precision | drop pt | int8 ops | p50 ms | accepted |",
             "|---|---|---|---:|---|---:|---|"]
    for name, r in runs.items():
        for rung in r["result"]["ladder"]:
            ops = f"{rung['quantized_ops']}/{rung['total_ops']}" if rung["total_ops"] else "-"
            p50 = "-" if rung["latency_p50_ms"] is None else f"{rung['latency_p50_ms']:.4f}"
            drop = "-" if rung["accuracy_drop"] is None else f"{rung['accuracy_drop']:.2f}"
            lines.append(f"| {name} | {rung['rung']} | {rung['precision']} | {drop} | {ops} | {p50} | "
                         f"{'yes' if rung['accepted'] else 'no'} |")
    lines += ["", "## Chosen", "", "| run | precision | float layers | compression | drop pt | int8 ops | p50 ms | "
              "search s |", "|---|---|---|---|---:|---|---:|---:|"]
    for name, r in runs.items():
        ch = r["result"]["chosen"]
        if ch is None:
            lines.append(f"| {name} | none met the budget | | | | | | {r['wall_s']} |")
            continue
        comp = ch.get("compression") or {}
        lines.append(f"| {name} | {ch['precision']} | {', '.join(ch['recipe']['float_layers']) or '-'} | "
                     f"{'+'.join(comp.get('phases') or []) or '-'} | {ch['accuracy_drop']:.2f} | "
                     f"{ch['quantized_ops']}/{ch['total_ops']} | {ch['latency_ms']['p50']:.4f} | {r['wall_s']} |")
    table = "\n".join(lines)
    print(table)
    args.out.with_suffix(".md").write_text(table + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
