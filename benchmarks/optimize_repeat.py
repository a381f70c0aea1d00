"""Is `edgeify optimize`'s decision reproducible, and is it as fast as the best hand-built artifact? (issue 28)

1. Hand-built: `edgeify build` of every engine x precision asked for (default recipe), MobileNetV2
   (examples/models/mobilenetv2.py, random weights, random calibration inputs: speed, not accuracy). This also
   fills the step cache, so the optimize runs below start from the same cached artifacts.
2. `edgeify optimize` --runs times (3) on the same model, same flags, each its own process with a bounded
   --max-time: which candidate each chose, its "why", and whether differing picks are ones the output calls tied:
   the run's own confirmation (optimize.confirm: its finalists re-measured in interleaved rounds, ``confirm.tied``);
   for a run without one, both measured the same way and within optimize's latency tie band (choose.LATENCY_TIE).
3. Re-measure: every pick and every hand-built bundle, --rounds interleaved rounds (order rotates), each run its
   own agent process with the target's full protocol; a bundle's figure is the median of its rounds' p50. The
   check: each pick within --within (1.10x) of the fastest hand-built bundle.

Writes benchmarks/optimize_repeat.{json,md} with the CPU and the load (`uptime`) before every phase.

    python benchmarks/optimize_repeat.py [--runs 3] [--max-time 300] [--rounds 3] \\
        [--engine openvino --engine onnxruntime] [--precision fp32 --precision bf16 --precision int8] \\
        [--confirm-rounds N]   # passed to optimize (default: optimize's own)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from edgeify_runtime.fingerprint import cpu_summary

REPO = Path(__file__).resolve().parents[1]
SOURCE = f"{REPO / 'examples/models/mobilenetv2.py'}:mobilenet_v2"


def say(msg: str) -> None:
    print(f"[optimize_repeat {dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def edgeify(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeify", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)


def key(c: dict) -> str:
    settings = ",".join(f"{k}={v}" for k, v in sorted((c.get("settings") or {}).items()))
    return f"{c['engine']}/{c['precision']}/{(c.get('recipe') or {}).get('name', 'default')}/{settings or 'defaults'}"


def tied_in(run: dict, a: str, b: str) -> bool | None:
    """Does ``run``'s own output call the candidates keyed ``a`` and ``b`` tied? Its confirmation's ``tied`` when
    its finalists were re-measured (a candidate not among them was not tied), else its table (same protocol,
    within optimize's latency tie band). None when one of them is not in its table."""
    from edgeify.optimize.choose import LATENCY_TIE

    conf = run.get("confirm") or {}
    if conf.get("tied") is not None:
        tied = {key(run["candidates"][i]) for i in conf["tied"]}
        return a in tied and b in tied

    rows = {key(c): c for c in run["candidates"] if (c.get("latency_ms") or {}).get("p50") is not None}
    ca, cb = rows.get(a), rows.get(b)
    if ca is None or cb is None:
        return None
    la, lb = ca["latency_ms"]["p50"], cb["latency_ms"]["p50"]
    return ca.get("latency_protocol") == cb.get("latency_protocol") and abs(la - lb) <= LATENCY_TIE * min(la, lb)


def confirm_summary(run: dict) -> str:
    """The run's confirmation in one cell: rounds, each finalist vs the pick (ratio, interval, tied or not)."""
    conf = run.get("confirm")
    if not conf:
        return "off"
    if conf.get("skipped"):
        return f"skipped: {conf['skipped']}"
    labels = {f["index"]: f["label"] for f in conf["finalists"]}
    return f"{conf['rounds_done']} rounds; " + "; ".join(
        f"{labels[c['b']]} x{c['ratio']:.3f} [{c['ci'][0]:.3f}, {c['ci'][1]:.3f}] {'tied' if c['tied'] else 'apart'}"
        for c in conf["comparisons"])


def bench_p50(bundle: Path, threads: int | None) -> tuple[float | None, bool]:
    """p50 of one agent run, and whether the run was disturbed (the device state's rule)."""
    args = ["bench", str(bundle), "--no-store", "--format", "json"] + (["--threads", str(threads)] if threads else [])
    proc = edgeify(*args, timeout=600)
    if proc.returncode != 0:
        say(f"bench {bundle.name} failed: {proc.stderr.strip().splitlines()[-1:]}")
        return None, False
    res = json.loads(proc.stdout)
    res = res[0] if isinstance(res, list) else res
    return float(res["latency_ms"]["p50"]), bool((res.get("device_state") or {}).get("disturbed"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="optimize runs on the same model")
    ap.add_argument("--max-time", type=float, default=300.0, help="--max-time of each optimize run (s)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved re-measure rounds")
    ap.add_argument("--within", type=float, default=1.10, help="each pick within this factor of the best hand-built")
    ap.add_argument("--target", default="x86-avx512")
    ap.add_argument("--engine", action="append", dest="engines")
    ap.add_argument("--precision", action="append", dest="precisions")
    ap.add_argument("--threads", type=int, default=None, help="hand-built bundles' threads (default: the target's)")
    ap.add_argument("--confirm-rounds", type=int, default=None, help="optimize --confirm-rounds (default: its own)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "optimize_repeat")
    args = ap.parse_args()
    engines = args.engines or ["openvino", "onnxruntime"]
    precisions = args.precisions or ["fp32", "bf16", "int8"]
    work = Path(tempfile.mkdtemp(prefix="edgeify-optimize-repeat-"))
    started = dt.datetime.now(dt.timezone.utc)
    loads = {"start": uptime()}
    calib = work / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((32, 3, 224, 224)).astype(np.float32))
    common = ["--target", args.target, "--input-shape", "1,3,224,224"]

    hand: dict[str, dict] = {}
    for engine in engines:
        for prec in precisions:
            name = f"{engine}/{prec}"
            out = work / f"hand-{engine}-{prec}"
            t0 = time.perf_counter()
            proc = edgeify("build", SOURCE, *common, "--engine", engine, "-p", prec, "--calib", str(calib),
                           "--no-latency", "-o", str(out))
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["?"])[-1]
                hand[name] = {"error": f"exit {proc.returncode}: {last[:300]}"}
                say(f"hand-built {name}: not built ({hand[name]['error']})")
                continue
            hand[name] = {"bundle": str(out), "build_s": round(time.perf_counter() - t0, 1)}
            say(f"hand-built {name} in {hand[name]['build_s']} s")

    runs = []
    loads["optimize"] = uptime()
    for i in range(args.runs):
        out = work / f"pick-{i + 1}"
        flags = [x for e in engines for x in ("--engine", e)] + [x for p in precisions for x in ("--precision", p)]
        flags += [] if args.confirm_rounds is None else ["--confirm-rounds", str(args.confirm_rounds)]
        t0 = time.perf_counter()
        proc = edgeify("optimize", SOURCE, *common, *flags, "--calib", str(calib), "--max-time", f"{args.max_time:g}",
                       "-o", str(out), "--format", "json", timeout=args.max_time * 3 + 600)
        wall = round(time.perf_counter() - t0, 1)
        try:
            data = json.loads(proc.stdout)
        except json.JSONDecodeError:
            data = {"error": proc.stderr[-1500:]}
        ch = data.get("chosen")
        run = {"run": i + 1, "exit": proc.returncode, "wall_s": wall, "uptime_after": uptime(),
               "run_id": data.get("run_id"), "stopped": data.get("stopped"), "candidates": data.get("candidates", []),
               "pick": key({**ch, "recipe": ch["recipe"]}) if ch else None, "bundle": str(out) if ch else None,
               "threads": (ch or {}).get("settings", {}).get("threads"), "why": (ch or {}).get("why"),
               "p50_in_search": (ch or {}).get("latency_ms", {}).get("p50"), "confirm": data.get("confirm")}
        runs.append(run)
        say(f"optimize run {i + 1}: exit {proc.returncode} in {wall} s, chose {run['pick']} "
            f"(p50 {run['p50_in_search']} ms in the search); confirm: {confirm_summary(run)}")

    picks = [r["pick"] for r in runs if r["pick"]]
    same = len(set(picks)) == 1 and len(picks) == args.runs
    ties = {}
    for r in runs:
        for other in set(picks) - {r["pick"]}:
            ties[f"run {r['run']}: {r['pick']} vs {other}"] = tied_in(r, r["pick"], other) if r["pick"] else None
    reproducible = same or (len(picks) == args.runs and all(v is True for v in ties.values()))

    loads["remeasure"] = uptime()
    bundles = {f"pick {r['run']}": (Path(r["bundle"]), r["threads"]) for r in runs if r["bundle"]}
    bundles.update({f"hand {k}": (Path(v["bundle"]), args.threads) for k, v in hand.items() if "bundle" in v})
    names = list(bundles)
    per_round = []
    for rnd in range(args.rounds):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        row = {"round": rnd + 1, "uptime_before": uptime(), "p50_ms": {}, "disturbed": []}
        for n in order:
            row["p50_ms"][n], disturbed = bench_p50(*bundles[n])
            if disturbed:
                row["disturbed"].append(n)
        per_round.append(row)
        say(f"re-measure round {rnd + 1}: " + ", ".join(f"{n} {v}" for n, v in row["p50_ms"].items()))
    median = {n: (round(statistics.median(v), 4) if v else None) for n in names
              for v in [[r["p50_ms"][n] for r in per_round if r["p50_ms"].get(n) is not None]]}
    hand_ok = {n: v for n, v in median.items() if n.startswith("hand ") and v is not None}
    best_hand = min(hand_ok, key=hand_ok.get) if hand_ok else None
    ratios = {n: round(v / hand_ok[best_hand], 3) for n, v in median.items()
              if n.startswith("pick ") and v is not None and best_hand}
    # paired: each round's pick / best hand-built (a burst of load that slows a whole round cancels), median
    paired = {}
    for n in names:
        if not n.startswith("pick ") or not best_hand:
            continue
        rs = [r["p50_ms"][n] / r["p50_ms"][best_hand] for r in per_round
              if r["p50_ms"].get(n) and r["p50_ms"].get(best_hand)]
        paired[n] = {"per_round": [round(x, 3) for x in rs], "median": round(statistics.median(rs), 3) if rs else None}
    within = bool(paired) and len(paired) == args.runs and all(
        v["median"] is not None and v["median"] <= args.within for v in paired.values())
    loads["end"] = uptime()

    result = {"what": "optimize x3 on MobileNetV2: same pick (or tied), and each pick vs the best hand-built",
              "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "cpu": cpu_summary(), "cores": os.cpu_count(),
              "target": args.target, "engines": engines, "precisions": precisions, "max_time_s": args.max_time,
              "loads": loads, "hand": hand, "runs": [{k: v for k, v in r.items() if k != "candidates"} for r in runs],
              "same_pick": same, "differing_picks_tied": ties, "reproducible": reproducible,
              "remeasure": {"rounds": per_round, "median_p50_ms": median, "best_hand": best_hand,
                            "pick_over_best_hand_of_medians": ratios, "pick_over_best_hand_paired": paired,
                            "within": args.within, "all_within_paired": within},
              "candidates_per_run": [[{"key": key(c), "status": c.get("status"), "protocol": c.get("latency_protocol"),
                                       "p50_ms": (c.get("latency_ms") or {}).get("p50")} for c in r["candidates"]]
                                     for r in runs]}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# benchmarks/optimize_repeat.py — {result['started_at']}", "",
          f"CPU: {result['cpu']}. Target {args.target}; engines {', '.join(engines)}; "
          f"precisions {', '.join(precisions)}; MobileNetV2 (random weights), batch 1; --max-time {args.max_time:g} s "
          "per optimize run.", "", "Load: " + "; ".join(f"{k}: {v.split('load average:')[-1].strip()}"
                                                       for k, v in loads.items()), "",
          "| optimize run | exit | wall s | pick | p50 in search ms | confirmation (finalists re-measured) | stopped |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {r['run']} | {r['exit']} | {r['wall_s']} | {r['pick']} | {r['p50_in_search']} | "
           f"{confirm_summary(r)} | {r['stopped'] or ''} |" for r in runs]
    md += ["", f"Same pick in all runs: **{same}**" + ("" if same else f"; differing picks tied in the run's own "
                                                       f"output: {ties}") + f" → reproducible: **{reproducible}**.",
           "", f"Re-measure ({args.rounds} interleaved rounds, each run its own process, median of round p50s):", "",
           "| bundle | " + " | ".join(f"round {r['round']}" for r in per_round)
           + " | median ms | median / best hand | paired per round | paired median |",
           "|---" * (len(per_round) + 5) + "|"]
    for n in names:
        cells = [f"{r['p50_ms'].get(n)}" + (" (d)" if n in r["disturbed"] else "") for r in per_round]
        pr = paired.get(n) or {}
        md.append(f"| {n} | " + " | ".join(cells) + f" | {median[n]} | "
                  + (str(ratios.get(n, "")) if n.startswith("pick") else ("best" if n == best_hand else ""))
                  + f" | {' '.join(map(str, pr.get('per_round', [])))} | {pr.get('median', '')} |")
    md += ["", "(d): the run's device state says disturbed (other processes busy > 25% of the CPUs, load > cores + "
           "threads, steal or throttling). Paired: each round's pick p50 over the best hand-built's p50 in the same "
           "round, so load that slows a whole round cancels.", "",
           f"Each pick within {args.within}x of the best hand-built ({best_hand}), paired median: **{within}**."]
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
