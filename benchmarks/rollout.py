"""Fleet rollout timings against real sshd devices on 127.0.0.x (root: sshd's privilege separation directory).

    sudo python benchmarks/rollout.py [--devices 20] [--runs 2] [--samples 30] [--parallel 6]

Measures, in one run:

1. the wall time of a 4-wave rollout (``1,10%,50%,100%``) of a bundle of the same speed over N devices that run
   the previous version, and its per-wave times;
2. a rollout of a regressed bundle (same signature, ~100x the arithmetic) whose canary wave (2 devices) fails
   its gate: the time from the failed verdict to every device of the wave running the previous bundle again
   (``rollback_seconds``), and the time to the failure itself.

Prints a table and writes benchmarks/rollout.json and benchmarks/rollout.md. The devices share this machine's
cores: the wall times include N devices' benchmark agents competing for them, which a real fleet does not.
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
sys.path.insert(0, str(REPO / "tests" / "ssh"))
sys.path.insert(0, str(REPO / "tests"))

import sshlab  # noqa: E402


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeify", *args], capture_output=True, text=True, env=env,
                          timeout=3600)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--parallel", type=int, default=6)
    args = ap.parse_args()
    from edgeify.deploy.inventory import Inventory
    from sshtest import device_for
    from test_rollout import _slow_bundle  # the same regressed bundle the tests use

    tmp = Path(tempfile.mkdtemp(prefix="edgeify-rollout-bench-"))
    key = tmp / "client" / "id_ed25519"
    pub = sshlab.write_ed25519_key(key, "bench")
    home = tmp / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_bytes(key.read_bytes())
    (home / ".ssh" / "id_ed25519").chmod(0o600)
    env = {**os.environ, "HOME": str(home), "EDGEIFY_HOME": str(tmp / "eh"),
           "EDGEIFY_RESULTS_DB": str(tmp / "results.sqlite")}
    env.pop("EDGEIFY_RESULTS_URL", None)
    os.environ.update({k: env[k] for k in ("HOME", "EDGEIFY_HOME", "EDGEIFY_RESULTS_DB")})
    devs = []
    try:
        for i in range(args.devices):
            devs.append(sshlab.Sshd(f"cam-{i:02d}", f"127.0.0.{10 + i}", tmp / f"cam-{i:02d}", pub).start())
        (home / ".ssh" / "known_hosts").write_text("".join(d.known_hosts_line() + "\n" for d in devs))
        inv = Inventory(tmp / "eh" / "config" / "devices.toml")
        for d in devs:
            inv.add(device_for(d, workdir=tmp / "work" / d.name, tags=("fleet",)))
        inv.save()
        v1 = sshlab.make_bundle(tmp / "b" / "v1" / "model", seed=1)
        v2 = sshlab.make_bundle(tmp / "b" / "v2" / "model", seed=2)
        slow = _slow_bundle(tmp / "b" / "slow" / "model", seed=3)
        assert cli(env, "deploy", str(v1), "--devices", "tag:fleet").returncode == 0
        common = ["--runs", str(args.runs), "--samples", str(args.samples), "--parallel", str(args.parallel),
                  "--format", "json"]
        t0 = time.monotonic()
        good = cli(env, "rollout", str(v2), "--devices", "tag:fleet", "--waves", "1,10%,50%,100%",
                   "--gate", "p50<=2x", *common)
        wall_good = time.monotonic() - t0
        g = json.loads(good.stdout)
        t0 = time.monotonic()
        bad = cli(env, "rollout", str(slow), "--devices", "tag:fleet", "--waves", "2,50%,100%",
                  "--gate", "p50<=1.5x", *common)
        wall_bad = time.monotonic() - t0
        b = json.loads(bad.stdout)
    finally:
        for d in devs:
            d.stop()
    load = os.getloadavg()
    row = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_summary(),
        "cores": os.cpu_count(), "load_avg_1_5_15": [round(x, 2) for x in load],
        "devices": args.devices, "runs": args.runs, "samples": args.samples, "parallel": args.parallel,
        "good_rollout": {"exit": good.returncode, "state": g.get("state"), "wall_s": round(wall_good, 1),
                         "waves": [len(w["devices"]) for w in g.get("waves", [])]},
        "bad_rollout": {"exit": bad.returncode, "state": b.get("state"), "wall_s": round(wall_bad, 1),
                        "failed_wave_devices": len((b.get("waves") or [{}])[0].get("devices", [])),
                        "rollback_seconds": (b.get("detail") or {}).get("rollback_seconds"),
                        "all_back_on_previous": all(d["bundle_digest"] == g.get("bundle_digest")
                                                    for d in b.get("devices", []))},
    }
    out = REPO / "benchmarks"
    (out / "rollout.json").write_text(json.dumps(row, indent=2) + "\n")
    md = ["| what | value |", "|---|---|",
          f"| CPU | {row['cpu']}, {row['cores']} cores, load {row['load_avg_1_5_15']} |",
          f"| {args.devices}-device 4-wave rollout (equal-speed bundle), wall | {row['good_rollout']['wall_s']} s "
          f"(exit {good.returncode}, waves {row['good_rollout']['waves']}) |",
          f"| regressed bundle: canary wave fails, wall to exit 17 | {row['bad_rollout']['wall_s']} s "
          f"(exit {bad.returncode}) |",
          f"| failed gate → every device of the wave on the previous bundle | "
          f"{row['bad_rollout']['rollback_seconds']} s |",
          f"| every device on a known bundle afterwards | {row['bad_rollout']['all_back_on_previous']} |"]
    (out / "rollout.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
