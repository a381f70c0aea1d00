"""SSH deploy and remote benchmark timings against real sshd devices on loopback addresses.

    sudo python benchmarks/ssh_deploy.py [--size-mb 50] [--devices 8] [--repeat 3]

Measures, in one run (the machine is shared and noisy: compare within a run):

1. a cold deploy of a SIZE MB bundle: its phases (connect, prepare, transfer, verify, install) and the transfer
   phase vs `scp` of the same files (bundle + runtime zip) to the same sshd, interleaved round by round;
   scp's time includes its own connection setup, so the setup (scp of an empty file) is reported too;
2. a redeploy of the unchanged bundle: in-process on a new connection, and the whole `edgeify deploy` command;
3. the benchmark agent on 1 device vs N devices in parallel (`edgeify.bench.bench` on a tag), bundles already deployed;
4. the cost of one remote command (`true`), which every device-side step pays (the login shell's rc files).

Needs openssh-server (/usr/sbin/sshd) and root (sshd's privilege separation directory). Prints a table and
writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "ssh"))

import sshlab  # noqa: E402

PROTOCOL = {"warmup": 10, "runs": 200, "min_duration_s": 1.0, "max_duration_s": 30.0, "threads": 1}


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeify", *args], capture_output=True, text=True, check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=50.0)
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    missing = sshlab.missing_tools("sshd", "scp")
    if missing:
        sys.exit(f"needs {', '.join(missing)}: apt-get install -y --no-install-recommends openssh-server")

    tmp = Path(tempfile.mkdtemp(prefix="edgeify-sshbench-"))
    home = tmp / "home"
    os.environ.update(HOME=str(home), EDGEIFY_HOME=str(tmp / "edgeify-home"),
                      EDGEIFY_RESULTS_DB=str(tmp / "results.sqlite"))
    for var in ("SSH_AUTH_SOCK", "EDGEIFY_SSH_CONFIG"):
        os.environ.pop(var, None)
    key = home / ".ssh" / "id_ed25519"
    pub = sshlab.write_ed25519_key(key, "bench")
    devices = [sshlab.Sshd(f"bench-{i}", f"127.0.0.{i + 2}", tmp / f"dev{i}", pub).start()
               for i in range(args.devices)]
    kh = home / ".ssh" / "known_hosts"
    kh.write_text("".join(d.known_hosts_line() + "\n" for d in devices))

    from edgeify.bench import BenchSettings, bench
    from edgeify.deploy.connect import open_site
    from edgeify.deploy.deployer import deploy, runtime_package
    from edgeify.deploy.inventory import Inventory, make_device

    def device(d: sshlab.Sshd, workdir: Path, tags: tuple[str, ...] = ()) -> Any:
        return make_device(d.name, host=d.address, port=d.port, user="root", python=sys.executable,
                           workdir=str(workdir), target="x86-avx2", tags=tags)

    out: dict[str, Any] = {"size_mb": args.size_mb, "devices": args.devices, "repeat": args.repeat,
                           "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                           "cpus": os.cpu_count()}
    try:
        t = time.perf_counter()
        big = sshlab.make_bundle(tmp / "bundles" / "big", seed=7, weight_mb=args.size_mb)
        small = sshlab.make_bundle(tmp / "bundles" / "small", seed=8)
        rt = runtime_package()
        files = [str(p) for p in sorted(big.iterdir())] + [str(rt.path)]
        size = sum(os.path.getsize(f) for f in files)
        print(f"bundle {size / 1e6:.1f} MB (with the runtime zip) built in {time.perf_counter() - t:.1f} s",
              file=sys.stderr)
        d0 = devices[0]
        scp_base = ["scp", "-q", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={kh}", "-o",
                    "StrictHostKeyChecking=yes", "-i", str(key), "-P", str(d0.port)]
        empty = tmp / "empty"
        empty.write_bytes(b"")

        # 1. cold deploys vs scp, interleaved
        phases: dict[str, list[float]] = {}
        scp_walls, scp_setup = [], []
        for r in range(args.repeat):
            wd = tmp / f"cold-{r}"
            dev = device(d0, wd)
            with open_site(dev) as site:
                rep = deploy(site, big, device=dev)
            assert rep.status == "installed" and rep.runtime_uploaded
            for k, v in rep.timings_s.items():
                phases.setdefault(k, []).append(v)
            dest = tmp / f"scp-{r}"
            dest.mkdir()
            t = time.perf_counter()
            subprocess.run([*scp_base, *files, f"root@{d0.address}:{dest}/"], check=True)
            scp_walls.append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run([*scp_base, str(empty), f"root@{d0.address}:{dest}/"], check=True)
            scp_setup.append(time.perf_counter() - t)
        cold = {k: round(med(v), 4) for k, v in phases.items()}
        transfer = med(phases["transfer"])
        scp_wall, setup = med(scp_walls), med(scp_setup)
        out["cold_deploy_s"] = cold
        out["cold_deploy_runs_s"] = phases
        out["scp"] = {"wall_s": round(scp_wall, 4), "setup_s": round(setup, 4), "runs_s": scp_walls,
                      "data_s": round(scp_wall - setup, 4)}
        out["transfer_vs_scp"] = round(transfer / scp_wall, 3)
        out["transfer_vs_scp_data_only"] = round(transfer / max(1e-9, scp_wall - setup), 3)
        out["transfer_mb_per_s"] = round(size / 1e6 / transfer, 1)

        # 2. redeploy unchanged
        wd = tmp / "cold-0"
        dev = device(d0, wd)
        re_runs = []
        for _ in range(5):
            with open_site(dev) as site:
                rep = deploy(site, big, device=dev)
            assert rep.status == "unchanged"
            re_runs.append(rep.timings_s["total"])
        inv = Inventory()
        inv.add(dev, replace=True)
        inv.save()
        cli_runs = []
        for _ in range(3):
            t = time.perf_counter()
            p = cli("deploy", str(big), "--device", d0.name, "--format", "json")
            cli_runs.append(time.perf_counter() - t)
            assert p.returncode == 0 and json.loads(p.stdout)["status"] == "unchanged", p.stderr
        t = time.perf_counter()
        cli("version")
        cli_startup = time.perf_counter() - t
        out["redeploy_unchanged_s"] = {"in_process": round(med(re_runs), 4), "runs": re_runs,
                                       "parts": rep.timings_s, "cli_command": round(med(cli_runs), 4),
                                       "cli_runs": cli_runs, "cli_startup_only": round(cli_startup, 4)}

        # 4. one remote command
        with open_site(dev) as site:
            site.transport.connect()
            cmd = []
            for _ in range(10):
                t = time.perf_counter()
                site.transport.run(["true"], timeout=30)
                cmd.append(time.perf_counter() - t)
        out["remote_command_s"] = round(med(cmd), 4)

        # 3. fleet: 1 device vs N in parallel (everything deployed by a first, untimed round)
        inv = Inventory()
        for d in devices:
            inv.add(device(d, tmp / f"fleet-{d.name}", tags=("bench",)), replace=True)
        inv.save()
        bench(small, "tag:bench", settings=BenchSettings(**{**PROTOCOL, "runs": 5, "min_duration_s": 0.0}),
              store=False)
        t = time.perf_counter()
        one = bench(small, devices[0].name, settings=BenchSettings(**PROTOCOL), store=True)
        one_wall = time.perf_counter() - t
        t = time.perf_counter()
        many = bench(small, "tag:bench", settings=BenchSettings(**PROTOCOL), store=True)
        many_wall = time.perf_counter() - t
        assert all(o.ok for o in one + many), [o.error_dict() for o in one + many if not o.ok]
        out["fleet"] = {
            "protocol": PROTOCOL, "one_device_wall_s": round(one_wall, 3),
            "n_devices_wall_s": round(many_wall, 3), "n": len(many), "ratio": round(many_wall / one_wall, 3),
            "one_device_p50_ms": one[0].unwrap().latency_ms.p50,
            "per_device_p50_ms": {o.device: o.unwrap().latency_ms.p50 for o in many},
            "per_device_s": {o.device: round(o.seconds, 3) for o in many},
        }
    finally:
        for d in devices:
            d.stop()

    print_table(out)
    res_dir = REPO / "benchmarks" / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    path = res_dir / f"ssh_deploy-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"\nwrote {path}")
    return 0


def print_table(o: dict[str, Any]) -> None:
    c, s = o["cold_deploy_s"], o["scp"]
    r, f = o["redeploy_unchanged_s"], o["fleet"]
    rows = [
        (f"cold deploy of {o['size_mb']:.0f} MB: total", f"{c['total']:.3f} s", ""),
        ("  connect / prepare", f"{c['connect']:.3f} / {c['prepare']:.3f} s", ""),
        ("  transfer", f"{c['transfer']:.3f} s", f"{o['transfer_mb_per_s']} MB/s"),
        ("  verify (sha256 on device) / install", f"{c['verify']:.3f} / {c['install']:.3f} s", ""),
        ("scp of the same files (wall)", f"{s['wall_s']:.3f} s", f"setup {s['setup_s']:.3f} s"),
        ("transfer / scp", f"{o['transfer_vs_scp']:.2f}x", "goal <= 1.2x"),
        ("transfer / scp without its setup", f"{o['transfer_vs_scp_data_only']:.2f}x", ""),
        ("redeploy unchanged (in process, new conn.)", f"{r['in_process']:.3f} s", "goal <= 0.5 s"),
        ("redeploy unchanged (`edgeify deploy` cmd)", f"{r['cli_command']:.3f} s",
         f"of which CLI startup ~{r['cli_startup_only']:.2f} s"),
        ("one remote command (`true`)", f"{o['remote_command_s']:.3f} s", "device login shell cost"),
        ("bench on 1 device (wall)", f"{f['one_device_wall_s']:.2f} s", f"p50 {f['one_device_p50_ms']:.3f} ms"),
        (f"bench on {f['n']} devices in parallel (wall)", f"{f['n_devices_wall_s']:.2f} s",
         f"{f['ratio']:.2f}x one; p50 {min(f['per_device_p50_ms'].values()):.3f}.."
         f"{max(f['per_device_p50_ms'].values()):.3f} ms"),
    ]
    w = max(len(a) for a, _, _ in rows)
    print(f"\nSSH deploy benchmark ({o['cpus']} CPUs, loopback sshd)")
    for a, b, cmt in rows:
        print(f"  {a:<{w}}  {b:>16}  {cmt}")


if __name__ == "__main__":
    sys.exit(main())
