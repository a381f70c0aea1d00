"""Results store under concurrent writers (SQLite and a real PostgreSQL server started here) and report sizes.

  * writers: P processes x N results each into a new store at once (SQLite file; PostgreSQL from Debian's
    `postgresql` package, initdb in a temp dir on a loopback port, stopped after): rows written vs read back,
    failures, wall time;
  * report size: `edgeify report` of a given store (e.g. the digits results that gate_calibration.py stored) and
    of a synthetic store of 1,000 results (300 samples each).
JSON to benchmarks/results/store_and_report-<time>.json.

    python benchmarks/store_and_report.py [--procs 8] [--per 50] [--digits-store PATH]
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

WRITER = """
import sys
from edgeify_runtime.result import BenchResult, Latency
from edgeify.results import open_store
url, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open_store(url) as store:
    for i in range(n):
        store.add(BenchResult(bundle_digest="cd" * 32, device=f"w{worker}", run_id=f"{worker}:{i}",
                              latency_ms=Latency(p50=float(i)), samples_ms=(float(i),) * 1000))
print("done")
"""


def writers(url: str, procs: int, per: int) -> dict:
    from edgeify.results import open_store

    t0 = time.monotonic()
    running = [subprocess.Popen([sys.executable, "-c", WRITER, url, str(w), str(per)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for w in range(procs)]
    failed = []
    for p in running:
        out, err = p.communicate(timeout=900)
        if p.returncode != 0 or out.strip() != "done":
            failed.append(err.strip().splitlines()[-1:] or [str(p.returncode)])
    wall = time.monotonic() - t0
    with open_store(url) as store:
        rows = store.query(limit=None, samples=False)
    keys = {r.run_id for r in rows}
    return {"processes": procs, "per_process": per, "written": procs * per, "read_back": len(rows),
            "distinct": len(keys), "lost": procs * per - len(keys), "failed_processes": len(failed),
            "errors": failed[:3], "wall_s": round(wall, 2)}


def report_size(env_store: str, out: Path) -> dict:
    env = {**os.environ, "EDGEIFY_RESULTS_DB": env_store}
    env.pop("EDGEIFY_RESULTS_URL", None)
    res = subprocess.run([sys.executable, "-m", "edgeify", "report", "-o", str(out), "--format", "json"],
                         capture_output=True, text=True, env=env, timeout=900)
    if res.returncode != 0:
        return {"error": res.stderr[-500:]}
    return json.loads(res.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--per", type=int, default=50)
    ap.add_argument("--digits-store", default=None, help="a store with digits results (gate_calibration.py's)")
    a = ap.parse_args()
    from _pg import postgres_server

    work = Path(tempfile.mkdtemp(prefix="edgeify-store-bench-"))
    out: dict = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cores": os.cpu_count()}
    try:
        out["cpu"] = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                          if line.startswith("model name"))
    except (OSError, StopIteration):
        out["cpu"] = "unknown"
    out["sqlite"] = writers(f"sqlite:///{work / 'w.sqlite'}", a.procs, a.per)
    with postgres_server() as pg:
        out["postgresql"] = writers(pg.url(), a.procs, a.per)

    import numpy as np
    from edgeify.results import open_store
    from edgeify_runtime.result import BenchResult, Latency, Protocol

    big = work / "big.sqlite"
    rng = np.random.default_rng(0)
    with open_store(big) as store:
        for i in range(1000):
            s = tuple(float(x) for x in rng.gamma(20, 0.01, 300))
            store.add(BenchResult(bundle_digest=f"{i % 4:02x}" * 32, device=f"pi-{i % 5}", samples_ms=s,
                                  latency_ms=Latency(p50=float(np.median(s)), p95=float(np.percentile(s, 95))),
                                  protocol=Protocol(threads=1)))
    out["report_1000_results"] = report_size(str(big), work / "big.html")
    if a.digits_store:
        out["report_digits"] = report_size(a.digits_store, work / "digits.html")
    from plotly.offline import get_plotlyjs

    out["plotly_js_bytes"] = len(get_plotlyjs().encode())
    out["load_avg"] = list(os.getloadavg())
    res_dir = REPO / "benchmarks" / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    path = res_dir / f"store_and_report-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
