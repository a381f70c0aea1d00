"""How often does `edgeify gate` (run level) cry wolf, and how often does it catch a real 1.10x slowdown?

Builds two bundles of the digits CNN (examples/digits, trained here) for x86 fp32 with `edgeify build`, from two
ONNX sources:
  * A: the model as exported;
  * S: the same model plus a real extra branch on the input (from one ReduceSum up to Reshape -> MatMul 64xM ->
    Relu -> MatMul Mx64 -> ReduceSum; a second output), so the engine does more work on every inference. The
    variant is chosen here, by measuring them interleaved in one process, so that S / A is about 1.10; the ratio
    the calibration itself measured (all detection rounds pooled) is reported beside the detection rate.
Then, with `edgeify.bench.bench_series` (each run its own agent process, interleaved A B, B A, ..., a short
cool-down), on this machine:
  * A/A: a series of the same bundle A in both slots; every K consecutive rounds form one gate decision
    (K runs per side, paired by round) -> false-alarm rate = share of decisions that exit 14;
  * detection: a series of A and S; every K rounds one decision -> detection rate = share that exit 14.
K = 4, 6, 8, 10 are read from the same series (non-overlapping windows), so the table shows what each run count buys
and costs in time. The old method (one run per side, sample level) is scored on the same runs for contrast.
Every result goes to a private SQLite store; JSON and a Markdown table to benchmarks/gate_calibration.{json,md}.

    python benchmarks/gate_calibration.py [--rounds 80] [--min-duration 0.3] [--threads 1] [--max-regression 5%]
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

from edgeify_runtime.fingerprint import cpu_summary

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeify", *args], capture_output=True, text=True, timeout=900,
                          check=False)


def export_digits(work: Path) -> Path:
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("digits_train", REPO / "examples" / "digits" / "train.py")
    train = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(train)  # type: ignore[union-attr]
    data = work / "digits"
    if not (data / "model.pt2").exists():
        train.main(out_dir=data)
    out = work / "digits.onnx"
    if not out.exists():
        ep = torch.export.load(str(data / "model.pt2"))
        torch.onnx.export(ep, (), str(out), dynamo=True, external_data=False, input_names=["x"],
                          output_names=["logits"], verbose=False)
    return out


def with_extra_branch(src: Path, dst: Path, depth: int, m: int) -> Path:
    """``src`` plus a real branch on the input whose result is a second output (so no optimizer can drop it):
    depth 1: ReduceSum(x); 2: Abs -> (M more elementwise ops: Neg, Abs, Neg, ...) -> ReduceSum;
    3: Reshape -> MatMul 64xM -> ReduceSum; 5: Reshape -> MatMul 64xM -> Relu -> MatMul Mx64 -> ReduceSum."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    x = g.input[0].name
    rank = 4
    if depth == 1:
        g.node.append(helper.make_node("ReduceSum", [x], ["extra"], keepdims=1))
    elif depth == 2:
        nodes, last = [helper.make_node("Abs", [x], ["xb_e0"])], "xb_e0"
        for i in range(1, m + 1):  # alternating, so that no two neighbours cancel
            nodes.append(helper.make_node("Neg" if i % 2 else "Abs", [last], [f"xb_e{i}"]))
            last = f"xb_e{i}"
        g.node.extend([*nodes, helper.make_node("ReduceSum", [last], ["extra"], keepdims=1)])
    else:
        rng = np.random.default_rng(0)
        g.initializer.extend([
            numpy_helper.from_array(np.array([-1, 64], dtype=np.int64), "xb_shape"),
            numpy_helper.from_array((rng.standard_normal((64, m)) * 0.05).astype(np.float32), "xb_w1"),
            numpy_helper.from_array((rng.standard_normal((m, 64)) * 0.05).astype(np.float32), "xb_w2"),
        ])
        nodes = [helper.make_node("Reshape", [x, "xb_shape"], ["xb_flat"]),
                 helper.make_node("MatMul", ["xb_flat", "xb_w1"], ["xb_h"])]
        last = "xb_h"
        if depth >= 5:
            nodes += [helper.make_node("Relu", ["xb_h"], ["xb_r"]), helper.make_node("MatMul", ["xb_r", "xb_w2"],
                                                                                     ["xb_o"])]
            last = "xb_o"
        nodes.append(helper.make_node("ReduceSum", [last], ["extra"], keepdims=1))
        g.node.extend(nodes)
        rank = 2
    g.output.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1] * rank))
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


#: extra-branch variants, lightest first: (depth, M)
VARIANTS = ((1, 0), (2, 0), (2, 1), (2, 2), (2, 3), (3, 8), (3, 64), (5, 8), (5, 64), (5, 256), (5, 1024))


def describe_variant(depth: int, m: int) -> str:
    chain = "Abs" + " -> Neg -> Abs" * (m // 2) + " -> Neg" * (m % 2)
    return {1: "ReduceSum(x)", 2: f"{chain} -> ReduceSum", 3: f"Reshape -> MatMul 64x{m} -> ReduceSum",
            5: f"Reshape -> MatMul 64x{m} -> Relu -> MatMul {m}x64 -> ReduceSum"}[depth]


def build(src: Path, out: Path) -> Path:
    if not out.exists():
        res = cli("build", str(src), "--target", "x86", "-o", str(out), "--no-latency")
        if res.returncode != 0:
            raise SystemExit(f"build of {src} failed: {res.stderr[-2000:]}")
    return out


def in_process_ratio(base: Path, slow: Path, threads: int, rounds: int = 12) -> float:
    """Median-of-rounds latency ratio slow/base, interleaved in one process (for choosing M only)."""
    import statistics

    import numpy as np
    from edgeify_runtime import load

    models = [load(str(b), threads=threads) for b in (base, slow)]
    feeds = [{t.name: np.random.default_rng(0).standard_normal([1 if not isinstance(d, int) else d
                                                                for d in t.shape]).astype(np.float32)
              for t in m.inputs} for m in models]
    ratios = []
    for _ in range(rounds):
        med = []
        for m, f in zip(models, feeds, strict=True):
            ts = []
            for _ in range(300):
                t0 = time.perf_counter_ns()
                m.run(f)
                ts.append(time.perf_counter_ns() - t0)
            med.append(statistics.median(ts))
        ratios.append(med[1] / med[0])
    for m in models:
        m.close()
    return statistics.median(ratios)


def decisions(ra: list, rb: list, k: int, threshold: float) -> list[dict]:
    from edgeify.analysis.gate import gate
    from edgeify.store.select import Selection

    out = []
    for j in range(len(ra) // k):
        a, b = ra[j * k:(j + 1) * k], rb[j * k:(j + 1) * k]
        v = gate(Selection("A", "runs", tuple(a)), Selection("B", "runs", tuple(b)), max_regression=threshold,
                 run_level=True)
        c = v.comparison
        out.append({"rounds": [j * k, (j + 1) * k], "ratio": round(c.ratio, 4),
                    "ci": [round(c.ci[0], 4), round(c.ci[1], 4)], "verdict": c.verdict, "regressed": v.regressed,
                    "paired": bool(c.run_level and c.run_level["paired"]), "runs_needed": c.runs_needed,
                    "disturbed_runs": len(c.a.disturbed) + len(c.b.disturbed)})
    return out


def single_run_decisions(ra: list, rb: list, threshold: float) -> list[bool]:
    from edgeify.analysis.gate import gate
    from edgeify.store.select import Selection

    return [gate(Selection("A", "id", (a,)), Selection("B", "id", (b,)), max_regression=threshold,
                 run_level=False, resamples=200).regressed for a, b in zip(ra, rb, strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=80, help="rounds of each series (A/A and detection)")
    ap.add_argument("--min-duration", type=float, default=0.3, help="seconds of timed runs in each run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cooldown", type=float, default=0.5)
    ap.add_argument("--max-regression", default="5%")
    ap.add_argument("--target-ratio", type=float, default=1.10)
    ap.add_argument("--windows", default="4,6,8,10", help="runs per side per decision")
    ap.add_argument("--budget-min", type=float, default=None, help="minutes for both series (half each): no new "
                    "round starts after that (the rounds done are scored)")
    ap.add_argument("--work", type=Path, default=None, help="keep the bundles and the store here")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "gate_calibration")
    a = ap.parse_args()

    work = a.work or Path(tempfile.mkdtemp(prefix="edgeify-gate-cal-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["EDGEIFY_RESULTS_DB"] = str(work / "results.sqlite")
    os.environ.pop("EDGEIFY_RESULTS_URL", None)
    from edgeify.analysis.gate import parse_threshold
    from edgeify.bench import BenchSettings, bench_series

    threshold = parse_threshold(a.max_regression)
    load_start = list(os.getloadavg())
    t0 = time.monotonic()
    src = export_digits(work)
    base = build(src, work / "digits-x86-a")
    tried: dict[str, float] = {}
    paths: dict[str, tuple[tuple[int, int], Path]] = {}
    for depth, m in VARIANTS:  # the lightest extra branch that reaches the target ratio
        name = f"d{depth}m{m}"
        slow = build(with_extra_branch(src, work / f"digits-{name}.onnx", depth, m), work / f"digits-x86-{name}")
        tried[name] = round(in_process_ratio(base, slow, a.threads), 4)
        paths[name] = ((depth, m), slow)
        print(f"extra branch {describe_variant(depth, m)}: in-process ratio {tried[name]}", file=sys.stderr,
              flush=True)
        if tried[name] >= a.target_ratio:
            break
    names = list(tried)
    pick = names[-1]
    if len(names) > 1 and abs(tried[names[-2]] - a.target_ratio) < abs(tried[pick] - a.target_ratio):
        pick = names[-2]
    (depth, m), slow = paths[pick]
    setup_s = time.monotonic() - t0
    settings = BenchSettings(warmup=10, runs=100, min_duration_s=a.min_duration, max_duration_s=60.0,
                             threads=a.threads)

    def series(bundles: list[Path], stop_at: float | None) -> tuple[list, list, float]:
        ts = time.monotonic()
        s = bench_series([str(b) for b in bundles], "local", repeat=a.rounds, settings=[settings, settings],
                         cooldown_s=a.cooldown, stop_at=stop_at,
                         progress=lambda msg: print(msg, file=sys.stderr, flush=True))
        return list(s.runs[0]), list(s.runs[1]), time.monotonic() - ts

    start = time.monotonic()
    budget = None if a.budget_min is None else a.budget_min * 60
    aa_a, aa_b, aa_s = series([base, base], None if budget is None else start + budget / 2)
    det_a, det_s, det_time = series([base, slow], None if budget is None else start + budget)
    rounds_aa, rounds_det = len(aa_a), len(det_a)
    load_end = list(os.getloadavg())
    import statistics

    true_ratio = statistics.median(s.latency_ms.p50 for s in det_s) / statistics.median(
        r.latency_ms.p50 for r in det_a)
    per_run_s = (aa_s + det_time) / (2 * (rounds_aa + rounds_det))
    rows = []
    for k in (int(x) for x in a.windows.split(",")):
        aa = decisions(aa_a, aa_b, k, threshold)
        dd = decisions(det_a, det_s, k, threshold)
        rows.append({"runs_per_side": k, "aa_decisions": len(aa),
                     "false_alarm_rate": sum(d["regressed"] for d in aa) / max(1, len(aa)),
                     "aa_verdicts": {v: sum(d["verdict"] == v for d in aa) for v in
                                     ("same", "inconclusive", "slower", "faster")},
                     "detect_decisions": len(dd),
                     "detection_rate": sum(d["regressed"] for d in dd) / max(1, len(dd)),
                     "detect_verdicts": {v: sum(d["verdict"] == v for d in dd) for v in
                                         ("same", "inconclusive", "slower", "faster")},
                     "seconds_per_decision": round(2 * k * per_run_s, 1), "aa": aa, "detection": dd})
    old_aa = single_run_decisions(aa_a, aa_b, threshold)
    old_det = single_run_decisions(det_a, det_s, threshold)
    disturbed = sum(r.disturbed for r in aa_a + aa_b + det_a + det_s)
    report = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_summary(), "cores": os.cpu_count(), "load_avg_start": load_start, "load_avg_end": load_end,
        "settings": {"max_regression": threshold, "rounds": a.rounds, "rounds_done_aa": rounds_aa,
                     "rounds_done_detection": rounds_det, "min_duration_s": a.min_duration,
                     "threads": a.threads, "cooldown_s": a.cooldown, "confidence": 0.95,
                     "method": "run-level hierarchical bootstrap, paired rounds (edgeify.analysis.runstats)"},
        "slowdown": {"how": f"extra branch on the input: {describe_variant(depth, m)}, a second output (real "
                            "work the engine cannot drop)",
                     "variant": pick, "in_process_ratio_tried": tried,
                     "measured_ratio_p50": round(true_ratio, 4)},
        "per_run_seconds": round(per_run_s, 2), "setup_s": round(setup_s, 1),
        "disturbed_runs": disturbed, "total_runs": 2 * (rounds_aa + rounds_det),
        "windows": rows,
        "old_method_one_run_per_side": {"false_alarm_rate": sum(old_aa) / len(old_aa),
                                        "detection_rate": sum(old_det) / len(old_det), "pairs": len(old_aa)},
        "wall_s": round(time.monotonic() - t0, 1),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    a.out.with_suffix(".md").write_text(markdown(report) + "\n")
    print(markdown(report))
    print(f"wrote {a.out.with_suffix('.json')} and .md")


def markdown(r: dict) -> str:
    s = r["settings"]
    lines = [
        "# gate calibration (run level)", "",
        f"{r['when']} · {r['cpu']}, {r['cores']} cores · load average {r['load_avg_start'][0]:.1f} at the start, "
        f"{r['load_avg_end'][0]:.1f} at the end (1 min; this script alone keeps about one core busy)",
        "",
        f"digits CNN, x86 fp32 (ONNX Runtime), {s['threads']} thread(s), {s['min_duration_s']} s of timed runs per "
        f"run, {s['rounds_done_aa']} A/A rounds and {s['rounds_done_detection']} detection rounds (interleaved "
        f"series, each run its own process), cool-down {s['cooldown_s']} s, threshold {s['max_regression']:.0%}, "
        f"{s['confidence']:.0%} interval, {s['method']}.",
        f"Slowdown: {r['slowdown']['how']}; measured ratio (median p50 of all detection rounds) "
        f"**{r['slowdown']['measured_ratio_p50']:.3f}**.",
        f"One run (agent process) took {r['per_run_seconds']} s on average; {r['disturbed_runs']} of "
        f"{r['total_runs']} runs were flagged disturbed by the device-state rule.",
        "",
        "| runs per side | A/A decisions | false alarms | detection decisions | detected | time per decision |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for w in r["windows"]:
        lines.append(f"| {w['runs_per_side']} | {w['aa_decisions']} | {w['false_alarm_rate']:.0%} | "
                     f"{w['detect_decisions']} | {w['detection_rate']:.0%} | {w['seconds_per_decision']} s |")
    o = r["old_method_one_run_per_side"]
    lines += ["", f"Old method (one run per side, sample level) on the same runs: {o['false_alarm_rate']:.0%} false "
                  f"alarms, {o['detection_rate']:.0%} detection ({o['pairs']} pairs)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
