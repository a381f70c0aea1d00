"""`edgeify optimize` of the digits CNN with its candidates built locally vs on a two-node Ray cluster on this
machine (`--executor ray`); measurement is on this machine in both runs. Wall time, candidates, artifacts built
and which nodes built them.

The search: target x86-avx2, ONNX Runtime and OpenVINO, fp32 / fp16 / int8 (calibration and labelled evaluation
data from examples/digits), --max-accuracy-drop 1. Each run starts with an empty step cache (its own EDGEIFY_HOME).

    python benchmarks/optimize_ray.py

The Ray cluster is the test suite's lab (tests/ray/raylab.py: head + one worker node, 1 CPU each, in a private
network namespace; needs root). Writes benchmarks/results/optimize_ray-<time>.json.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from build_matrix import _cpu  # noqa: E402  (the sibling benchmark's CPU name)


def _args(work: Path, out: str) -> list[str]:
    d = work / "digits"
    return ["optimize", str(d / "model.pt2"), "--target", "x86-avx2", "--calib", str(d / "calib.npz"), "--eval",
            str(d / "eval.npz"), "--max-accuracy-drop", "1", "--engine", "onnxruntime", "--engine", "openvino",
            "-p", "fp32", "-p", "fp16", "-p", "int8", "--max-time", "30m", "-o", str(work / out), "--format", "json"]


def _summarize(name: str, wall: float, rc: int, stdout: str, stderr: str) -> dict:
    if rc != 0:
        return {"run": name, "wall_s": round(wall, 1), "rc": rc, "stderr_tail": stderr[-2000:]}
    data = json.loads(stdout)
    cands = data["candidates"]
    artifacts = {(c["engine"], c["precision"], c["recipe"]["name"]): c for c in cands}
    nodes = {(c.get("node") or {}).get("ip") or "here" for c in artifacts.values()}
    chosen = data["chosen"] or {}
    return {"run": name, "wall_s": round(wall, 1), "rc": rc, "search_wall_s": data["wall_s"],
            "candidates": len(cands), "artifacts": len(artifacts),
            "artifact_status": {"/".join(k): c["status"] for k, c in artifacts.items()},
            "nodes": sorted(nodes), "chosen": f"{chosen.get('engine')} {chosen.get('precision')} "
                                              f"p50 {(chosen.get('latency_ms') or {}).get('p50')} ms",
            "ray_lines": [ln for ln in stderr.splitlines() if "Ray:" in ln]}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="edgeify-optray-") as tmp:
        work = Path(tmp)
        spec = importlib.util.spec_from_file_location("digits_train", REPO / "examples" / "digits" / "train.py")
        train = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(train)
        train.main(out_dir=work / "digits")
        load = {"start": os.getloadavg()}
        env = {**os.environ, "EDGEIFY_HOME": str(work / "home-local"), "EDGEIFY_RESULTS_DB": str(work / "r.sqlite")}
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "edgeify", *_args(work, "best-local")], capture_output=True,
                           text=True, env=env, timeout=3600)
        runs = [_summarize("local", time.perf_counter() - t0, p.returncode, p.stdout, p.stderr)]
        load["after_local"] = os.getloadavg()

        sys.path.insert(0, str(REPO / "tests" / "ray"))
        from raylab import RayLab

        lab = RayLab().start()
        try:
            lab.add_node("w1")
            t0 = time.perf_counter()
            proc = lab.cli(*_args(work, "best-ray"), "--executor", "ray", "--ray-address", lab.address,
                           env={"EDGEIFY_HOME": str(work / "home-ray"), "EDGEIFY_RESULTS_DB": str(work / "r.sqlite")})
            out, err = proc.communicate(timeout=3600)
            runs.append(_summarize("ray (2 nodes x 1 CPU)", time.perf_counter() - t0, proc.returncode, out, err))
        finally:
            lab.stop()
        load["after_ray"] = os.getloadavg()
    print(f"CPU: {_cpu()}, {os.cpu_count()} cores; load average {load}")
    for r in runs:
        print(f"{r['run']:<24} wall {r['wall_s']:>6.1f} s  rc {r['rc']}  candidates {r.get('candidates')}  "
              f"artifacts {r.get('artifacts')}  built on {r.get('nodes')}  chose {r.get('chosen')}")
    res = {"benchmark": "optimize_ray", "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "cpu": _cpu(), "cores": os.cpu_count(), "load_avg": load, "runs": runs}
    dest = REPO / "benchmarks" / "results" / f"optimize_ray-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {dest}")
    return 0 if all(r["rc"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
