"""``optimize --compress prune,distill`` benchmark (issue 25, done-when 1): on the over-parameterized digits CNN of
``benchmarks/compress.py`` (trained here), ONE ``edgeify.optimize`` run searches the uncompressed model (fp32 and
int8, each engine's recipes and run-time settings) and the prune+distill candidates (0.25/0.5/0.75 of the
channels removed, fine-tuned against the original, then int8), measured on this machine. The table compares the
chosen bundle with the best int8-only (uncompressed) candidate of the same run; accuracy drops are against the
ORIGINAL fp32 model on held-out digits. Writes ``benchmarks/compress_optimize.md`` and ``.json``.

    python benchmarks/compress_optimize.py [--engines onnxruntime openvino] [--epochs 8] [--max-drop 0.3]
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


def _bench_module():
    spec = importlib.util.spec_from_file_location("edgeify_bench_compress", HERE / "compress.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _lscpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _p50(c: dict) -> float | None:
    return (c.get("latency_ms") or {}).get("p50")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", nargs="+", default=["onnxruntime", "openvino"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    ap.add_argument("--epochs", type=int, default=8, help="distillation epochs per prune ratio")
    ap.add_argument("--teacher-epochs", type=int, default=10)
    ap.add_argument("--width", type=int, nargs=2, default=[64, 192], metavar=("C1", "C2"))
    ap.add_argument("--max-drop", type=float, default=0.3)
    ap.add_argument("--max-time", type=float, default=1800.0, help="seconds")
    ap.add_argument("--target", default="x86-avx512")
    ap.add_argument("--out", type=Path, default=HERE / "compress_optimize")
    ap.add_argument("--render", action="store_true", help="only re-render the table from --out's .json")
    args = ap.parse_args()
    if args.render:
        saved = json.loads(args.out.with_suffix(".json").read_text())
        render(saved["meta"], saved["result"], args.out)
        return 0

    import edgeify
    import torch

    bm = _bench_module()
    work = Path(tempfile.mkdtemp(prefix="edgeify-compress-opt-"))
    x_train, x_eval, y_train, y_eval = bm.load_digits_split()
    np.savez(work / "train.npz", x=x_train, labels=y_train)
    np.savez(work / "calib.npz", x=x_train[:256])
    np.savez(work / "eval.npz", x=x_eval, labels=y_eval)
    weights = work / "weights.pt"
    model_py = work / "wide_cnn.py"
    model_py.write_text(bm.MODEL.format(c1=args.width[0], c2=args.width[1], weights=str(weights)))
    spec = importlib.util.spec_from_file_location("wide_cnn_opt_bench", model_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print(f"training the teacher ({args.teacher_epochs} epochs) ...", file=sys.stderr, flush=True)
    teacher = bm.train_teacher(module, x_train, y_train, args.teacher_epochs)
    torch.save(teacher.state_dict(), weights)
    with torch.no_grad():
        original_acc = float((teacher(torch.from_numpy(x_eval)).argmax(1).numpy() == y_eval).mean())
    uptime_start = _uptime()
    t0 = time.perf_counter()
    cmd = (f"edgeify optimize {model_py.name}:trained --input-shape 1,1,8,8 --target {args.target} "
           + " ".join(f"--engine {e}" for e in args.engines) + " "
           + " ".join(f"-p {p}" for p in args.precisions)
           + f" --calib calib.npz --eval eval.npz --train train.npz --compress prune,distill --epochs {args.epochs}"
           f" --max-accuracy-drop {args.max_drop} --max-time {args.max_time:g}s -o best")
    res = edgeify.optimize(f"{model_py}:trained", target=args.target, out=work / "best", calib=work / "calib.npz",
                           eval=work / "eval.npz", input_shapes=["1,1,8,8"], max_accuracy_drop=args.max_drop,
                           engines=args.engines, precisions=args.precisions, max_time_s=args.max_time,
                           compress="prune,distill", train=work / "train.npz", epochs=args.epochs,
                           progress=lambda m: print(f"optimize: {m}", file=sys.stderr, flush=True))
    wall = time.perf_counter() - t0
    data = res.to_json()
    meta = {"cpu": _lscpu(), "cores": os.cpu_count(), "uptime_start": uptime_start, "uptime_end": _uptime(),
            "target": args.target, "engines": args.engines, "precisions": args.precisions, "epochs": args.epochs,
            "width": args.width, "original_accuracy": original_acc, "eval_samples": len(y_eval),
            "max_accuracy_drop": args.max_drop, "wall_s": round(wall, 1), "command": cmd,
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    render(meta, data, args.out)
    return 0


def render(meta: dict, data: dict, out: Path) -> None:
    """The table (every measured candidate) and the comparison: best compressed vs best int8-only, both from the
    full protocol, both meeting the budget."""
    cands = data["candidates"]
    full = [c for c in cands if c["latency_protocol"] == "full" and c["meets_budget"]]
    best_int8 = min((c for c in full if c["compression"] is None and c["precision"] == "int8"), key=_p50,
                    default=None)
    best_comp = min((c for c in full if c["compression"] is not None), key=_p50, default=None)
    chosen = data["chosen"]
    speedup = (_p50(best_int8) / _p50(best_comp)) if best_int8 and best_comp else None
    meta.update({"best_int8_only_p50_ms": _p50(best_int8) if best_int8 else None,
                 "best_compressed_p50_ms": _p50(best_comp) if best_comp else None,
                 "speedup_vs_best_int8_only": None if speedup is None else round(speedup, 3),
                 "chosen_compression": chosen and chosen.get("compression")})
    w = meta["width"]
    lines = [f"# optimize --compress prune,distill ({meta['when']})", "",
             f"CPU (`lscpu`): {meta['cpu']}, {meta['cores']} cores. Load (`uptime`): start `{meta['uptime_start']}`; "
             f"end `{meta['uptime_end']}` (other helpers were running: compare ratios within the run). One "
             f"`edgeify.optimize` run, {meta['wall_s']:.0f} s, equivalent to:", "", f"    {meta['command']}", "",
             f"Over-parameterized digits CNN (conv 1->{w[0]}->{w[1]}, 2x {w[1]}->{w[1]}), original fp32 top-1 "
             f"{meta['original_accuracy']:.2%} on {meta.get('eval_samples', 540)} held-out digits; every drop is "
             "against it (negative: more accurate than the original). Every candidate with a latency; `screen`: the "
             "short screening protocol, `full`: the full protocol. ◆ Pareto front (latency, drop, size), ★ chosen.",
             "", "| # | engine | precision | compression | recipe, settings | protocol | p50 ms | x best int8-only "
             "| drop pt | MACs | int8 ops | meets budget | kept |",
             "|---:|---|---|---|---|---|---:|---:|---:|---:|---|---|---|"]
    front = set(data["pareto"])
    base = _p50(best_int8) if best_int8 else None
    for i, c in enumerate(cands):
        if _p50(c) is None:
            continue
        comp = c["compression"]
        label = "-" if comp is None else f"prune {comp['prune_ratio']:g} + distill"
        macs = "-" if comp is None or not comp.get("macs") else f"{comp['macs']['after']:,}"
        mark = ("★" if chosen and chosen["index"] == i else "") + ("◆" if i in front else "")
        kept = "yes" if comp is None or comp.get("on_front") else "no (off the front)"
        ops = f"{c['quantized_ops']}/{c['total_ops']}" if c.get("total_ops") else "-"
        settings = " ".join(f"{k}={v}" for k, v in sorted(c["settings"].items())) or "defaults"
        lines.append(f"| {mark}{i} | {c['engine']} | {c['precision']} | {label} | {c['recipe']['name']}, {settings} | "
                     f"{c['latency_protocol']} | {_p50(c):.4f} | " + (f"{base / _p50(c):.2f}" if base else "-")
                     + f" | {c['accuracy_drop']:+.2f} | {macs} | {ops} | {'yes' if c['meets_budget'] else 'no'} | "
                     f"{kept} |")
    lines += ["", f"Best int8-only (uncompressed) candidate meeting the budget, full protocol: p50 "
              f"{meta['best_int8_only_p50_ms']} ms; best compressed one: p50 {meta['best_compressed_p50_ms']} ms: "
              f"**x{meta['speedup_vs_best_int8_only']}** (drop budget {meta['max_accuracy_drop']} pt against the "
              "original)."]
    table = "\n".join(lines)
    print(table)
    out.with_suffix(".md").write_text(table + "\n")
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "result": data}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
