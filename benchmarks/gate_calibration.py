"""How often does `edgeify gate` cry wolf, and how often does it catch a real slowdown?

Builds the digits CNN (examples/digits) for x86, then in one run on this machine:
  * A/A: benchmarks the same bundle again and again (short runs) and gates each run against the previous one
    (>= 50 pairs): the false-alarm rate is the share of pairs where the gate would exit 14;
  * detection: alternates a baseline setting and a known slower one (default: 1 thread vs 2 threads on a loaded
    2-core machine, or int8 vs fp32 with --slowdown precision) and gates each slow run against the baseline run
    before it: the detection rate is the share that exits 14. The measured ratio of the two settings is reported
    too, so the rate can be read against the true effect size.
Every result goes to a private SQLite store; JSON to benchmarks/results/gate_calibration-<time>.json.

    python benchmarks/gate_calibration.py [--pairs 50] [--min-duration 0.2] [--max-regression 5%]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeify", *args], capture_output=True, text=True, env=env,
                          timeout=900, check=False)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def bench(bundle: Path, threads: int, min_duration: float, env: dict[str, str]) -> int:
    res = cli("bench", str(bundle), "--threads", str(threads), "--min-duration", str(min_duration), "--format",
              "json", env=env)
    if res.returncode != 0:
        raise SystemExit(f"bench failed: {res.stderr[-2000:]}")
    return int(json.loads(res.stdout)["result_id"])


def build(work: Path, precision: str, env: dict[str, str]) -> Path:
    sys.path.insert(0, str(REPO / "examples" / "digits"))
    import importlib.util

    spec = importlib.util.spec_from_file_location("digits_train", REPO / "examples" / "digits" / "train.py")
    train = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(train)  # type: ignore[union-attr]
    data = work / "digits"
    if not (data / "model.pt2").exists():
        train.main(out_dir=data)
    out = work / f"digits-x86-{precision}"
    if not out.exists():
        args = ["build", str(data / "model.pt2"), "--target", "x86", "--precision", precision, "-o", str(out),
                "--no-latency"]
        if precision.startswith("int8"):
            args += ["--calib", str(data / "calib.npz")]
        res = cli(*args, env=env)
        if res.returncode != 0:
            raise SystemExit(f"build failed: {res.stderr[-2000:]}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=50, help="A/A pairs (and at most this many detection pairs)")
    ap.add_argument("--detect-pairs", type=int, default=20)
    ap.add_argument("--min-duration", type=float, default=0.2)
    ap.add_argument("--max-regression", default="5%")
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--slowdown", choices=("threads", "precision"), default="threads")
    ap.add_argument("--work", type=Path, default=None, help="keep the bundles and the store here")
    a = ap.parse_args()

    from edgeify.analysis.gate import gate, parse_threshold
    from edgeify.results import open_store
    from edgeify.store.select import select

    work = a.work or Path(tempfile.mkdtemp(prefix="edgeify-gate-cal-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "results.sqlite"
    env = {**os.environ, "EDGEIFY_RESULTS_DB": str(db), "EDGEIFY_HOME": str(work / "home")}
    env.pop("EDGEIFY_RESULTS_URL", None)
    threshold = parse_threshold(a.max_regression)
    t0 = time.monotonic()
    base_bundle = build(work, "fp32", env)
    slow_bundle = build(work, "int8", env) if a.slowdown == "precision" else base_bundle

    aa_ids = [bench(base_bundle, 1, a.min_duration, env) for _ in range(a.pairs + 1)]
    det: list[tuple[int, int]] = []
    for _ in range(a.detect_pairs):
        b = bench(base_bundle, 1, a.min_duration, env)
        s = bench(slow_bundle, 2 if a.slowdown == "threads" else 1, a.min_duration, env)
        det.append((b, s))

    def verdicts(pairs: list[tuple[int, int]]) -> list[dict]:
        out = []
        with open_store(db) as store:
            for x, y in pairs:
                v = gate(select(store, str(x)), select(store, str(y)), max_regression=threshold, alpha=a.alpha)
                c = v.comparison
                out.append({"baseline": x, "candidate": y, "ratio_p50": round(c.ratio_p50, 4),
                            "ci": [round(c.ci[0], 4), round(c.ci[1], 4)], "p_value": c.p_value,
                            "verdict": c.verdict, "regressed": v.regressed,
                            "ci_lo_over_threshold": c.ci[0] > 1 + threshold})
        return out

    aa = verdicts([(aa_ids[i], aa_ids[i + 1]) for i in range(a.pairs)])
    dd = verdicts(det)

    def rate(rows: list[dict], key: str) -> float:
        return sum(bool(r[key]) for r in rows) / max(1, len(rows))

    import statistics

    with open_store(db) as store:
        samples = [len(store.get(i, samples=True).samples_ms) for i in aa_ids[:5]]
    report = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(), "cores": os.cpu_count(), "load_avg_start_end": None,
        "settings": {"max_regression": threshold, "alpha": a.alpha, "min_duration_s": a.min_duration,
                     "slowdown": a.slowdown, "bundle": "digits CNN x86 fp32" + (" vs int8" if a.slowdown ==
                                                                                 "precision" else "")},
        "samples_per_run_first5": samples,
        "aa": {"pairs": len(aa), "false_alarm_rate": rate(aa, "regressed"),
               "verdict_not_same_rate": sum(r["verdict"] != "same" for r in aa) / len(aa),
               "strict_rule_false_alarm_rate": rate(aa, "ci_lo_over_threshold"),
               "ratio_p50_median": statistics.median(r["ratio_p50"] for r in aa),
               "ratio_p50_range": [min(r["ratio_p50"] for r in aa), max(r["ratio_p50"] for r in aa)]},
        "detection": {"pairs": len(dd), "detection_rate": rate(dd, "regressed"),
                      "strict_rule_detection_rate": rate(dd, "ci_lo_over_threshold"),
                      "ratio_p50_median": statistics.median(r["ratio_p50"] for r in dd) if dd else None,
                      "ratio_p50_range": [min(r["ratio_p50"] for r in dd), max(r["ratio_p50"] for r in dd)]
                      if dd else None},
        "pairs_aa": aa, "pairs_detection": dd, "wall_s": round(time.monotonic() - t0, 1),
    }
    report["load_avg_start_end"] = list(os.getloadavg())
    out_dir = REPO / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"gate_calibration-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if not k.startswith("pairs_")}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
