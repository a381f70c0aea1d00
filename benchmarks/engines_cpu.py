"""Every CPU engine on the digits CNN, MobileNetV2 and ResNet-18, for rpi5 and x86-avx2, fp32 and int8, in one run.

    python benchmarks/engines_cpu.py [--models digits mobilenet_v2 resnet18] [--targets rpi5 x86-avx2]
                                     [--precisions fp32 int8] [--threads 2] [--runs 50] [--min-duration 1]

Engines: whatever each target offers (its own engines plus installed plugin engines: LiteRT, ExecuTorch, ncnn,
ONNX Runtime, OpenVINO). Each artifact is built with ``edgeify.build`` (parity-checked as usual; a build an engine
refuses, e.g. ncnn int8, is recorded with its reason) and benchmarked by the device-side agent in its own process
(``edgeify.bench`` on the local site): engines sharing a process fight over the cores. Ratios are to the fastest
p50 of the same model, target and precision. rpi5 bundles run here on the x86 host: these are this host's
figures, not a Raspberry Pi's. The JSON is rewritten after every row (a partial run keeps what it measured).
Models use their factories' seeded random weights and random calibration inputs: latency, not accuracy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from edgeify_runtime.fingerprint import cpu_summary

REPO = Path(__file__).resolve().parents[1]
MODELS = {  # name -> (factory, input shape)
    "digits": (REPO / "examples" / "digits" / "model.py", "digits_cnn", (1, 1, 8, 8)),
    "mobilenet_v2": (REPO / "examples" / "models" / "mobilenetv2.py", "mobilenet_v2", (1, 3, 224, 224)),
    "resnet18": (REPO / "examples" / "models" / "resnet18.py", "resnet18", (1, 3, 224, 224)),
}


def _table(rows: list[dict]) -> str:
    head = (f"{'model':<13} {'target':<9} {'precision':<9} {'engine':<12} {'p50 ms':>9} {'p95 ms':>9} "
            f"{'x fastest':>9}  note")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.get("p50") is None:
            lines.append(f"{r['model']:<13} {r['target']:<9} {r['precision']:<9} {r['engine']:<12} {'-':>9} {'-':>9} "
                         f"{'-':>9}  {r.get('error', '')[:90]}")
            continue
        lines.append(f"{r['model']:<13} {r['target']:<9} {r['precision']:<9} {r['engine']:<12} {r['p50']:>9.3f} "
                     f"{r['p95']:>9.3f} {r.get('ratio', float('nan')):>8.2f}x  {r.get('note', '')}")
    return "\n".join(lines)


def _ratios(rows: list[dict]) -> None:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("p50") is not None:
            groups.setdefault((r["model"], r["target"], r["precision"]), []).append(r)
    for group in groups.values():
        best = min(r["p50"] for r in group)
        for r in group:
            r["ratio"] = r["p50"] / best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--targets", nargs="+", default=["rpi5", "x86-avx2"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    ap.add_argument("--engines", nargs="*", default=None, help="only these engines (default: all the target offers)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--min-duration", type=float, default=1.0)
    ap.add_argument("--calib-samples", type=int, default=32)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()

    from edgeify.bench import BenchSettings, bench
    from edgeify.build import build
    from edgeify.engines import engines_for_target
    from edgeify.targets import load_registry

    reg = load_registry()
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"engines_cpu-{stamp}.json"
    work = Path(tempfile.mkdtemp(prefix="edgeify-engines-cpu-"))
    rng = np.random.default_rng(0)
    settings = BenchSettings(threads=args.threads, warmup=args.warmup, runs=args.runs,
                             min_duration_s=args.min_duration)
    meta = {"when": stamp, "cpu": cpu_summary(), "cores": os.cpu_count(), "loadavg_start": os.getloadavg(),
            "protocol": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    rows: list[dict] = []

    def save() -> None:
        _ratios(rows)
        meta["loadavg_now"] = os.getloadavg()
        path.write_text(json.dumps({**meta, "rows": rows}, indent=2, default=str))

    for model in args.models:
        file, factory, shape = MODELS[model]
        calib = work / f"calib-{model}.npz"
        np.savez(calib, x=rng.random((args.calib_samples, *shape[1:])).astype(np.float32))
        for target in args.targets:
            spec = reg.get(target)
            engines = sorted(engines_for_target(spec))
            for precision in args.precisions:
                for engine in engines:
                    if args.engines and engine not in args.engines:
                        continue
                    row: dict = {"model": model, "target": target, "precision": precision, "engine": engine}
                    rows.append(row)
                    eng = spec.engines.get(engine)
                    if eng is None or precision not in eng.precisions:
                        row["error"] = f"{engine} does not offer {precision} on {target}"
                        save()
                        continue
                    print(f"[{model} {target} {precision}] {engine}: build ...", file=sys.stderr, flush=True)
                    t0 = time.perf_counter()
                    try:
                        res = build(f"{file}:{factory}", target=target, precision=precision, engine=engine,
                                    calib=calib if precision == "int8" else None,
                                    input_shapes=[",".join(map(str, shape))],
                                    out=work / f"{model}-{target}-{engine}-{precision}", measure_latency=False)
                    except Exception as exc:  # a refused or failed build is a result too
                        row["error"] = f"build: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                        save()
                        continue
                    row["build_s"] = round(time.perf_counter() - t0, 1)
                    gated = [o for o in res.validation.outputs if o.gated] if res.validation else []
                    row["cosine"] = min((o.cosine for o in gated if o.cosine is not None), default=None)
                    try:
                        r = bench(res.out, "local", settings=settings, store=False)[0].unwrap().to_dict()
                    except Exception as exc:
                        row["error"] = f"bench: {type(exc).__name__}: {exc}"
                        save()
                        continue
                    lat = r["latency_ms"]
                    row.update(p50=lat["p50"], p95=lat["p95"], runs=r["protocol"].get("runs_done"),
                               engine_version=r.get("engine", {}).get("version"),
                               size_mb=round(sum(f["size"] for f in res.manifest.files.values()) / 1e6, 3))
                    save()
    save()
    print(f"CPU: {meta['cpu']} ({meta['cores']} cores); load average at start {meta['loadavg_start']}, "
          f"at end {meta['loadavg_now']}")
    print(_table(rows))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
