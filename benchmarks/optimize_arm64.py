"""`edgeify optimize` end to end on the emulated aarch64 device (a Raspberry Pi 5 stand-in, over SSH).

    python benchmarks/optimize_arm64.py [--max-time 300]      # needs root, qemu-user-static, debootstrap

Sets up the emulated device the arm64 tests use (tests/arm64/armlab.py: a cached Debian arm64 root under
qemu-user, sshd on 127.0.0.5), trains the digits CNN (examples/digits/train.py), then runs `edgeify.optimize`
for target rpi5 with `device=` that device: ONNX Runtime fp32 + int8, every candidate deployed and benchmarked
there by the real agent. Records the chosen bundle, every candidate, the search's wall time and the host CPU.

The latencies are EMULATED (qemu-user runs aarch64 code about 100x slower than a Pi 5): they prove the path
(build here, deploy, bench there, store, choose, publish) and the ranking machinery, not the speed of a Pi.
Writes benchmarks/results/optimize-arm64-STAMP.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "arm64"))
sys.path.insert(0, str(REPO / "tests" / "ssh"))


def _say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(work: Path, max_time: float) -> dict:
    import armlab

    bench_mod = _module(REPO / "benchmarks" / "optimize.py", "edgeify_bench_optimize")
    t0 = time.monotonic()
    root, info = armlab.ensure_root(work)
    dev = armlab.Arm64Device(root)
    os.environ["EDGEIFY_HOME"] = str(work / "edgeify-home")
    home = work / "home"
    try:
        dev.start(work)
        (home / ".ssh").mkdir(parents=True)
        (home / ".ssh" / "known_hosts").write_text(dev.known_hosts_line() + "\n")
        os.environ["HOME"] = str(home)
        for var in ("SSH_AUTH_SOCK", "EDGEIFY_SSH_CONFIG"):
            os.environ.pop(var, None)
        setup_s = round(time.monotonic() - t0, 1)
        _say(f"emulated device ready in {setup_s} s (cached root: {info['cached']})")
        import edgeify
        from edgeify.deploy.inventory import Inventory, make_device

        inv = Inventory()
        inv.add(make_device("emu-pi5", host=dev.address, port=dev.port, user="root", key=str(dev.key),
                            python=dev.python, workdir=dev.workdir, target="rpi5", tags=("arm64", "emulated")))
        inv.save()
        train = _module(REPO / "examples/digits/train.py", "edgeify_bench_digits_train_arm")
        train.main(out_dir=work / "digits")
        d = work / "digits"
        t1 = time.perf_counter()
        res = edgeify.optimize(d / "model.pt2", target="rpi5", device="emu-pi5", calib=d / "calib.npz",
                               eval=d / "eval.npz", engines=["onnxruntime"], precisions=["fp32", "int8"],
                               max_time_s=max_time, out=work / "best", progress=lambda m: _say(m))
        wall = round(time.perf_counter() - t1, 1)
    finally:
        dev.stop()
    ch = res.chosen
    return {"host_cpu": bench_mod.cpu_record(), "device_setup_s": setup_s, "search_wall_s": wall,
            "emulated": "qemu-user aarch64: latencies prove the path, not the speed of a Pi 5",
            "run_id": res.run_id, "target": res.target, "device": res.device, "stopped": res.stopped,
            "chosen": ch and {"engine": ch.engine, "precision": ch.precision, "recipe": ch.recipe.name,
                              "settings": ch.settings, "latency_ms": ch.latency_ms, "accuracy_drop": ch.accuracy_drop,
                              "int8_ops": f"{ch.quantized_ops}/{ch.total_ops}", "why": ch.why},
            "candidates": [c.row() for c in res.candidates]}


def markdown(out: dict) -> str:
    cpu = out["host_cpu"]
    lines = [f"# edgeify optimize on the emulated arm64 device {out['stamp']}", "",
             f"Host CPU: {cpu['model']} ({cpu['cpus']} CPUs), load {cpu['loadavg_1_5_15']}. {out['emulated']}.",
             f"Device set up in {out['device_setup_s']} s; search {out['search_wall_s']} s; "
             f"stopped: {out['stopped'] or 'no'}.", "",
             "| engine | precision | recipe | settings | acc drop pt | p50 ms (emulated) | protocol | status |",
             "|---|---|---|---|---|---|---|---|"]
    for c in out["candidates"]:
        lat = c.get("latency_ms") or {}
        lines.append(f"| {c['engine']} | {c['precision']} | {c['recipe']['name']} | {c['settings']} | "
                     f"{c['accuracy_drop']} | {lat.get('p50')} | {c.get('latency_protocol')} | {c['status']} |")
    ch = out["chosen"]
    if ch:
        lines += ["", f"Chosen: {ch['engine']} {ch['precision']} ({ch['recipe']}) {ch['settings']}; why: {ch['why']}"]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-time", type=float, default=300.0, help="optimize --max-time, seconds")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory(prefix="edgeify-bench-opt-arm64-", dir="/var/tmp") as tmp:
        out = {"stamp": stamp, **run(Path(tmp), args.max_time)}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"optimize-arm64-{stamp}.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    path.with_suffix(".md").write_text(markdown(out) + "\n")
    print(markdown(out))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
