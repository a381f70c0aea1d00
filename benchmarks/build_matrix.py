"""`edgeify build-matrix`: one 2-model x 3-target x 3-precision matrix built serially, on the local pool and on a
two-node Ray cluster on this machine; wall time and how many conversions actually ran.

Models: the digits CNN (examples/digits, trained here in seconds) as a PyTorch source (model.pt2) and the same
network exported to ONNX (a tiny ONNX source; MobileNetV2 would take far longer). Targets x86-avx2, rpi5,
jetson-orin-nano; precisions fp32, fp16, int8 (calibration and evaluation data from examples/digits).
Every run starts with an empty step cache (its own EDGEIFY_HOME) and an empty OUT.

    python benchmarks/build_matrix.py [--skip-ray]

The Ray cluster is the test suite's lab (tests/ray/raylab.py: head + one worker node, 1 CPU each, in a private
network namespace; needs root). Writes benchmarks/results/build_matrix-<time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgeify_runtime.fingerprint import cpu_summary

REPO = Path(__file__).resolve().parents[1]
TARGETS = ["x86-avx2", "rpi5", "jetson-orin-nano"]
PRECISIONS = ["fp32", "fp16", "int8"]
CONVERSIONS = ("onnx-export", "onnx-optimize", "openvino-convert", "tflite-convert", "tflite-quantize",
               "ort-quantize", "nncf-quantize")


def prepare(work: Path) -> Path:
    spec = importlib.util.spec_from_file_location("digits_train", REPO / "examples" / "digits" / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    info = train.main(out_dir=work / "digits")
    import torch

    ep = torch.export.load(str(info["model"]))
    torch.onnx.export(ep, (), str(work / "digits.onnx"), dynamo=True, external_data=False, input_names=["x"],
                      output_names=["logits"], verbose=False)
    m = work / "matrix.toml"
    m.write_text(f"""targets = {json.dumps(TARGETS)}
precisions = {json.dumps(PRECISIONS)}
[[models]]
name = "digits-torch"
path = "digits/model.pt2"
calib = "digits/calib.npz"
eval = "digits/eval.npz"
[[models]]
name = "digits-onnx"
path = "digits.onnx"
calib = "digits/calib.npz"
eval = "digits/eval.npz"
""", encoding="utf-8")
    return m


def _summarize(name: str, wall: float, rc: int, stdout: str, stderr: str) -> dict:
    try:
        res = json.loads(stdout)
    except ValueError:
        return {"run": name, "wall_s": round(wall, 2), "exit_code": rc, "error": stderr[-2000:]}
    steps = res["steps"]
    return {"run": name, "wall_s": round(wall, 2), "exit_code": rc, "counts": res["counts"], "steps": steps,
            "conversions_ran": sum(steps.get(k, {}).get("ran", 0) for k in CONVERSIONS),
            "conversions_cached": sum(steps.get(k, {}).get("cached", 0) for k in CONVERSIONS),
            "nodes_used": sorted({(c.get("node") or {}).get("ip") or (c.get("node") or {}).get("id") or "?"
                                  for c in res["cells"] if c["status"] in ("built", "failed")}),
            "failed": {c["cell"]: (c.get("error") or {}).get("message") for c in res["cells"]
                       if c["status"] == "failed"},
            "cell_seconds_sum": round(sum(c["seconds"] for c in res["cells"]), 2)}


def run_local(matrix: Path, work: Path, jobs: int) -> dict:
    name = f"local --jobs {jobs}"
    env = {**os.environ, "EDGEIFY_HOME": str(work / f"home-local-{jobs}")}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "edgeify", "build-matrix", str(matrix), "-o", str(work / f"out-{jobs}"),
                        "--jobs", str(jobs), "--no-latency", "--format", "json"], capture_output=True, text=True,
                       env=env, timeout=1800)
    return _summarize("serial (--jobs 1)" if jobs == 1 else name, time.perf_counter() - t0, r.returncode, r.stdout,
                      r.stderr)


def run_ray(matrix: Path, work: Path) -> dict:
    sys.path.insert(0, str(REPO / "tests" / "ray"))
    from raylab import RayLab

    lab = RayLab().start()
    try:
        lab.add_node("w1")
        t0 = time.perf_counter()
        proc = lab.cli("build-matrix", str(matrix), "-o", str(work / "out-ray"), "--executor", "ray",
                       "--ray-address", lab.address, "--no-latency", "--format", "json",
                       env={"EDGEIFY_HOME": str(work / "home-ray")})
        out, err = proc.communicate(timeout=1800)
        return _summarize("ray (2 nodes x 1 CPU)", time.perf_counter() - t0, proc.returncode, out, err)
    finally:
        lab.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeify-bm-") as tmp:
        work = Path(tmp)
        matrix = prepare(work)
        runs = [run_local(matrix, work, 1), run_local(matrix, work, 2)]
        if not args.skip_ray:
            runs.append(run_ray(matrix, work))
    cells = len(TARGETS) * len(PRECISIONS) * 2
    print(f"{cells} cells (2 models x {len(TARGETS)} targets x {len(PRECISIONS)} precisions), CPU: {cpu_summary()}, "
          f"{os.cpu_count()} cores")
    print(f"{'run':<24}{'wall s':>8}{'ratio':>7}  {'built/failed':<13}{'conversions ran/cached':<24}nodes")
    base = runs[0]["wall_s"]
    for r in runs:
        c = r.get("counts", {})
        print(f"{r['run']:<24}{r['wall_s']:>8.1f}{base / r['wall_s']:>7.2f}  "
              f"{c.get('built', '?')}/{c.get('failed', '?'):<11}"
              f"{r.get('conversions_ran', '?')}/{r.get('conversions_cached', '?'):<21}{r.get('nodes_used', '')}")
    for r in runs:
        print(f"{r['run']}: steps " + ", ".join(f"{k} {v['ran']}/{v['cached']}" for k, v in r.get("steps", {}).items()))
    res = {"benchmark": "build_matrix", "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "cpu": cpu_summary(), "cores": os.cpu_count(), "load_avg_at_end": os.getloadavg(), "targets": TARGETS,
           "precisions": PRECISIONS, "models": ["digits-torch (model.pt2)", "digits-onnx (torch.onnx export)"],
           "cells": cells, "runs": runs}
    out = REPO / "benchmarks" / "results" / f"build_matrix-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
