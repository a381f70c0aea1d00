"""`edgeify optimize` against a hand sweep, the digits CNN's choice, the outlier model's ladder; and --x86-kernels.

    python benchmarks/optimize.py [--models mobilenet_v2 resnet18] [--max-time 240] [--skip-sweep]
    python benchmarks/optimize.py --x86-kernels      # ORT int8 S8S8 vs U8S8, OpenVINO bf16 vs f32 (MobileNetV2)

1. MobileNetV2 / ResNet-18 on this machine: a hand sweep (every engine x precision of the local board, default
   recipe, threads = physical cores, the target's full protocol), then `edgeify.optimize` (same step cache); the
   chosen bundle and the hand sweep's fastest are re-measured back to back (alternating, 2 rounds, best of each):
   ratio chosen/fastest p50 (<= 1.05 is the goal) and the search's wall time.
2. The digits CNN (examples/digits/train.py) with --max-accuracy-drop 0.3: what it chose and why.
3. The outlier model (examples/outlier/make_model.py): plain int8 fails its gate; optimize's int8-mixed bundle
   latency against plain int8 (built with the gate open, only to time it) and fp32, back to back.
4. The ladder's lower rungs (a target without int8-mixed): int16x8 on the outlier model, fp16 with the overflowing
   ops kept in fp32 on its 1e5x variant, OpenVINO's NNCF accuracy-control rung; each rung's accuracy and p50.

The CPU (lscpu model name and the flags that matter here) and the load average are recorded with the numbers;
results go to benchmarks/results/optimize-STAMP.json and a markdown table beside it (.md).

Random weights and random calibration inputs for the two CNNs (speed, not accuracy). Each artifact runs in its own
agent process. The machine is shared: compare ratios measured in one run. JSON goes to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODELS = {"mobilenet_v2": REPO / "examples/models/mobilenetv2.py", "resnet18": REPO / "examples/models/resnet18.py"}


def _say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _p50(bundle: Path, threads: int | None, proto) -> float:
    from edgeify.bench import BenchSettings, bench

    s = BenchSettings(warmup=proto.warmup, runs=proto.runs, min_duration_s=proto.min_duration_s,
                      max_duration_s=proto.max_duration_s, threads=threads)
    return float(bench(bundle, "local", settings=s, store=False)[0].unwrap().latency_ms.p50)


def _back_to_back(bundles: dict[str, tuple[Path, int | None]], proto, rounds: int = 2) -> dict[str, float]:
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, (b, threads) in bundles.items():
            v = _p50(b, threads, proto)
            best[name] = min(best.get(name, v), v)
    return best


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cnn(model: str, work: Path, max_time: float, sweep: bool) -> dict:
    from edgeify.build import build
    from edgeify.errors import EdgeifyError
    from edgeify.optimize import optimize
    from edgeify.optimize.autotarget import choose_target
    from edgeify.optimize.space import DeviceFacts, build_space
    from edgeify.targets import load_registry

    facts = DeviceFacts.local()
    spec, why = choose_target(load_registry(), facts)
    calib = work / f"{model}-calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((32, 3, 224, 224)).astype(np.float32))
    src = f"{MODELS[model]}:{model}"
    hand: dict[str, dict] = {}
    if sweep:
        for plan in build_space(spec, facts, has_calib=True).artifacts:
            if plan.recipe.name != "default":
                continue
            key = f"{plan.engine}/{plan.precision}"
            _say(f"{model} hand sweep: {key}")
            try:
                res = build(src, target=spec, engine=plan.engine, precision=plan.precision, calib=calib,
                            input_shapes=["1,3,224,224"], out=work / f"{model}-hand-{plan.engine}-{plan.precision}",
                            measure_latency=False)
                hand[key] = {"bundle": str(res.out), "p50": _p50(res.out, facts.physical_cores, spec.bench)}
            except EdgeifyError as exc:
                hand[key] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
    t0 = time.perf_counter()
    res = optimize(src, target=spec.name, calib=calib, input_shapes=["1,3,224,224"], out=work / f"{model}-best",
                   max_time_s=max_time, progress=lambda m: _say(f"{model} optimize: {m}"))
    wall = time.perf_counter() - t0
    ch = res.chosen
    row = {"model": model, "target": spec.name, "target_reason": why, "search_wall_s": round(wall, 1),
           "candidates": len(res.candidates), "stopped": res.stopped,
           "chosen": {"engine": ch.engine, "precision": ch.precision, "recipe": ch.recipe.name,
                      "settings": ch.settings, "p50_in_search": ch.latency_ms.get("p50"), "why": ch.why},
           "hand": hand}
    ok = {k: v for k, v in hand.items() if "p50" in v}
    if ok:
        fastest = min(ok, key=lambda k: ok[k]["p50"])
        threads = ch.settings.get("threads")
        again = _back_to_back({"chosen": (work / f"{model}-best", threads),
                               "hand_fastest": (Path(ok[fastest]["bundle"]), facts.physical_cores)}, spec.bench)
        row.update(hand_fastest=fastest, back_to_back_p50=again,
                   ratio=round(again["chosen"] / again["hand_fastest"], 3))
    return row


def digits(work: Path) -> dict:
    from edgeify.optimize import optimize

    train = _module(REPO / "examples/digits/train.py", "edgeify_bench_digits_train")
    info = train.main(out_dir=work / "digits")
    d = work / "digits"
    t0 = time.perf_counter()
    res = optimize(d / "model.pt2", target="auto", calib=d / "calib.npz", eval=d / "eval.npz",
                   max_accuracy_drop=0.3, out=work / "digits-best", progress=lambda m: _say(f"digits: {m}"))
    ch = res.chosen
    return {"source_accuracy": info["accuracy"], "wall_s": round(time.perf_counter() - t0, 1),
            "chosen": {"engine": ch.engine, "precision": ch.precision, "recipe": ch.recipe.name,
                       "settings": ch.settings, "p50": ch.latency_ms.get("p50"), "accuracy_drop": ch.accuracy_drop,
                       "int8_ops": f"{ch.quantized_ops}/{ch.total_ops}", "why": ch.why},
            "pareto": [res.candidates[i].key() for i in res.pareto]}


LOW_TARGET = """
[[targets]]
name = "x86-ladder-low"
extends = "x86-cpu"
status = "benchmark: the ladder's lower rungs (no int8-mixed)"
precisions = ["fp32", "fp16", "int8", "int16x8"]
default_engine = { fp32 = "onnxruntime", fp16 = "onnxruntime", int8 = "onnxruntime", int16x8 = "onnxruntime" }
cpu = { features = ["avx2", "fma"] }
"""


def _rungs(res) -> list[dict]:
    return [{"rung": r.rung, "precision": r.precision, "drop": r.accuracy_drop, "parity": r.parity_passed,
             "p50_screen_ms": r.latency_p50_ms, "int8_ops": f"{r.quantized_ops}/{r.total_ops}",
             "accepted": r.accepted, "skipped": r.skipped} for r in res.ladder]


def ladder_rungs(work: Path) -> dict:
    """int16x8 and fp16-with-fp32-islands through a target without int8-mixed; OpenVINO accuracy control."""
    from edgeify.optimize import optimize

    mk = _module(REPO / "examples/outlier/make_model.py", "edgeify_bench_outlier_rungs")
    target = work / "low.toml"
    target.write_text(LOW_TARGET)
    out = {}
    for name, scale, engine, tgt in (("int16x8 (outlier 1000x)", 1000.0, "onnxruntime", "x86-ladder-low"),
                                     ("fp16 keep-fp32 (outlier 1e5x)", 1e5, "onnxruntime", "x86-ladder-low"),
                                     ("openvino accuracy control (outlier 1000x)", 1000.0, "openvino", "auto")):
        paths = mk.make(work / f"rungs-{scale:g}", outlier_scale=scale)
        t0 = time.perf_counter()
        res = optimize(paths["model"], target=tgt, target_files=[str(target)], calib=paths["calib"],
                       eval=paths["eval"], max_accuracy_drop=1.0, engines=[engine], precisions=["int8"],
                       out=work / f"rungs-best-{len(out)}", progress=lambda m: _say(f"rungs: {m}"))
        ch = res.chosen
        out[name] = {"wall_s": round(time.perf_counter() - t0, 1), "rungs": _rungs(res),
                     "chosen": ch and {"precision": ch.precision, "recipe": ch.recipe.name,
                                       "p50": ch.latency_ms.get("p50"), "accuracy_drop": ch.accuracy_drop}}
    return out


def outlier(work: Path) -> dict:
    from edgeify.build import build
    from edgeify.errors import EdgeifyError
    from edgeify.optimize import optimize
    from edgeify.optimize.autotarget import choose_target
    from edgeify.optimize.space import DeviceFacts
    from edgeify.targets import load_registry
    from edgeify.targets.spec import Tolerance

    paths = _module(REPO / "examples/outlier/make_model.py", "edgeify_bench_outlier").make(work / "outlier")
    # this machine's board: x86-avx512's U8S8 without reduce_range saturates on a CPU without VNNI
    spec = choose_target(load_registry(), DeviceFacts.local())[0]
    try:
        build(paths["model"], target=spec, engine="onnxruntime", precision="int8", calib=paths["calib"],
              eval=paths["eval"], max_accuracy_drop=1.0, out=work / "outlier-plain", measure_latency=False)
        plain_gate = "passed (unexpected)"
    except EdgeifyError as exc:
        plain_gate = f"exit {exc.exit_code}: {str(exc).splitlines()[0]}"
    open_gate = spec.model_copy(update={"tolerances": {**spec.tolerances,
                                                       "int8": Tolerance(metric="cosine", min_cosine=-1.0)}})
    plain = build(paths["model"], target=open_gate, engine="onnxruntime", precision="int8", calib=paths["calib"],
                  eval=paths["eval"], out=work / "outlier-int8-open", measure_latency=False)
    fp32 = build(paths["model"], target=spec, engine="onnxruntime", precision="fp32", out=work / "outlier-fp32",
                 measure_latency=False)
    res = optimize(paths["model"], target=spec.name, calib=paths["calib"], eval=paths["eval"],
                   max_accuracy_drop=1.0, engines=["onnxruntime"], precisions=["int8"], out=work / "outlier-mixed",
                   progress=lambda m: _say(f"outlier: {m}"))
    ch = res.chosen
    lat = _back_to_back({"int8_mixed": (work / "outlier-mixed", 1), "int8_plain": (plain.out, 1),
                         "fp32": (fp32.out, 1)}, spec.bench)
    return {"plain_int8_gate": plain_gate,
            "plain_int8_accuracy_drop": plain.validation.accuracy and plain.validation.accuracy.drop_points,
            "chosen": {"precision": ch.precision, "float_layers": list(ch.recipe.float_layers),
                       "int8_ops": f"{ch.quantized_ops}/{ch.total_ops}", "accuracy_drop": ch.accuracy_drop},
            "target": spec.name, "ladder": _rungs(res),
            "p50_ms_threads1_back_to_back": lat}


def x86_kernels(work: Path) -> dict:
    """ORT int8 S8S8 vs U8S8 (reduce_range off/on), OpenVINO f32 vs bf16 inference precision, NNCF int8."""
    from edgeify.build import build
    from edgeify.optimize.records import Recipe
    from edgeify.optimize.space import variant_spec
    from edgeify.targets import load_registry
    from edgeify_runtime.fingerprint import cpu_info

    calib = work / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((32, 3, 224, 224)).astype(np.float32))
    spec = load_registry().get("x86-avx512")
    src = f"{MODELS['mobilenet_v2']}:mobilenet_v2"
    arts = {}
    for name, engine, prec, cfg in (
            ("ort-fp32", "onnxruntime", "fp32", None),
            ("ort-int8-s8s8", "onnxruntime", "int8", {"activation_type": "int8", "reduce_range": False}),
            ("ort-int8-u8s8", "onnxruntime", "int8", {"activation_type": "uint8", "reduce_range": False}),
            ("ort-int8-u8s8-rr", "onnxruntime", "int8", {"activation_type": "uint8", "reduce_range": True}),
            ("ov-fp32", "openvino", "fp32", None), ("ov-bf16", "openvino", "bf16", None),
            ("ov-int8", "openvino", "int8", None)):
        v = variant_spec(spec, engine, Recipe(name=name, step="quantize", config=cfg)) if cfg else spec
        _say(f"x86 kernels: build {name}")
        arts[name] = (build(src, target=v, engine=engine, precision=prec, calib=calib if "int8" in prec else None,
                            input_shapes=["1,3,224,224"], out=work / name, measure_latency=False).out, 2)
    cpu = cpu_info()
    return {"cpu": cpu.get("model"), "flags": [f for f in cpu.get("flags", []) if "vnni" in f or "bf16" in f
                                               or "amx" in f], "p50_ms": _back_to_back(arts, spec.bench)}


#: CPU flags that change which engine / precision / kernel wins here
FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
         "avx512_fp16", "f16c")


def cpu_record() -> dict:
    """lscpu's model name, cores and the flags that matter here (present and absent), the load average."""
    import os
    import subprocess

    info: dict = {}
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            k, _, v = line.partition(":")
            info[k.strip()] = v.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    flags = set(info.get("Flags", "").split())
    return {"model": info.get("Model name"), "cpus": info.get("CPU(s)"),
            "threads_per_core": info.get("Thread(s) per core"),
            "flags_present": [f for f in FLAGS if f in flags], "flags_absent": [f for f in FLAGS if f not in flags],
            "loadavg_1_5_15": list(os.getloadavg())}


def markdown(out: dict) -> str:
    cpu = out["cpu"]
    lines = [f"# edgeify optimize benchmark {out['stamp']}", "",
             f"CPU: {cpu['model']} ({cpu['cpus']} CPUs); flags: {', '.join(cpu['flags_present'])}; "
             f"absent: {', '.join(cpu['flags_absent'])}. Load average at start {cpu['loadavg_1_5_15']}, "
             f"at end {out.get('loadavg_end')}. {out['note']}.", ""]
    if out.get("cnns"):
        lines += ["| model | target | chosen | settings | hand fastest | chosen p50 ms | hand p50 ms | ratio | "
                  "search s | candidates |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in out["cnns"]:
            ch, b2b = r["chosen"], r.get("back_to_back_p50", {})
            lines.append(f"| {r['model']} | {r['target']} | {ch['engine']} {ch['precision']} ({ch['recipe']}) | "
                         f"{ch['settings']} | {r.get('hand_fastest', '-')} | {b2b.get('chosen', '-')} | "
                         f"{b2b.get('hand_fastest', '-')} | {r.get('ratio', '-')} | {r['search_wall_s']} | "
                         f"{r['candidates']} |")
        lines.append("")
    if out.get("digits"):
        d = out["digits"]["chosen"]
        lines += [f"Digits CNN (--max-accuracy-drop 0.3): {d['engine']} {d['precision']} ({d['recipe']}), p50 "
                  f"{d['p50']} ms, drop {d['accuracy_drop']} pt, int8 ops {d['int8_ops']}; why: {d['why']}", ""]
    sections = [("outlier", out.get("outlier", {}).get("ladder", []))]
    sections += [(k, v["rungs"]) for k, v in (out.get("ladder_rungs") or {}).items()]
    for title, rungs in sections:
        if not rungs:
            continue
        lines += [f"Ladder, {title}:", "", "| rung | precision | drop pt | parity | p50 ms (screen) | int8 ops | "
                  "accepted | skipped |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['rung']} | {r['precision']} | {r['drop']} | {r['parity']} | {r['p50_screen_ms']} | "
                  f"{r['int8_ops']} | {r['accepted']} | {r['skipped']} |" for r in rungs]
        lines.append("")
    if out.get("outlier"):
        lines += [f"Outlier p50 back to back, 1 thread (ms): {out['outlier']['p50_ms_threads1_back_to_back']}", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--max-time", type=float, default=240.0, help="optimize --max-time per CNN, seconds")
    ap.add_argument("--skip-sweep", action="store_true", help="no hand sweep (optimize only)")
    ap.add_argument("--x86-kernels", action="store_true", help="only the S8S8/U8S8 and bf16/f32 measurement")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeify-bench-opt-"))
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out: dict = {"stamp": stamp, "cpu": cpu_record(),
                 "note": "shared 2-core machine: compare ratios measured within this run"}
    t0 = time.perf_counter()
    if args.x86_kernels:
        out["x86_kernels"] = x86_kernels(work)
    else:
        out["cnns"] = [cnn(m, work, args.max_time, not args.skip_sweep) for m in args.models]
        out["digits"] = digits(work)
        out["outlier"] = outlier(work)
        out["ladder_rungs"] = ladder_rungs(work)
    out["total_s"] = round(time.perf_counter() - t0, 1)
    import os

    out["loadavg_end"] = list(os.getloadavg())
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"optimize-{stamp}.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    path.with_suffix(".md").write_text(markdown(out) + "\n")
    print(json.dumps(out, indent=2, default=str))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
