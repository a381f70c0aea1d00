"""The benchmark orchestrator on real sshd devices: one device end to end, the device-side deadline, a fleet in
parallel, the CLI fleet path."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import sshlab
from edgeify.bench import BenchSettings, bench
from edgeify.deploy.connect import open_site
from edgeify.deploy.deployer import ensure_runtime
from edgeify.deploy.inventory import Inventory, make_device
from edgeify.errors import RemoteCommandError, UnreachableError
from edgeify.results import open_store
from edgeify_runtime.result import BenchResult
from sshtest import QUICK_PROTOCOL, Timer, device_for, run_cli

pytestmark = pytest.mark.ssh
QUICK = BenchSettings(**QUICK_PROTOCOL)


def test_remote_bench_end_to_end(env, lab, workdir: Path, bundles) -> None:
    dev = device_for(lab.devices["dev-a"], name="bench-a", workdir=workdir)
    (out,) = bench(bundles["v1"], dev, settings=QUICK)
    res = out.unwrap()
    digest = json.loads((bundles["v1"] / "manifest.json").read_text())["bundle_digest"]
    assert isinstance(res, BenchResult) and res.device == "bench-a" and res.bundle_digest == digest
    assert res.deploy is not None and res.deploy["status"] == "installed"
    assert res.protocol.runs_done >= 5 and res.protocol.threads == 1
    assert len(res.samples_ms) == res.protocol.runs_done and res.latency_ms.p50 > 0
    assert res.bundle.startswith(str(workdir))  # it ran the deployed copy, not the local bundle
    with open_store(env.results_db) as store:
        rows = store.query(device="bench-a")
    assert len(rows) == 1 and rows[0].result_id == res.result_id
    assert rows[0].fingerprint["arch"] == "x86_64" and "onnxruntime" in rows[0].fingerprint["engines"]
    assert len(rows[0].samples_ms) == res.protocol.runs_done
    # a second run deploys nothing
    again = bench(bundles["v1"], dev, settings=QUICK, store=False)[0].unwrap()
    assert again.deploy["status"] == "unchanged" and again.deploy["uploaded_bytes"] == 0
    assert again.result_id is None


def test_the_agent_runs_from_the_copied_runtime(env, lab, workdir: Path) -> None:
    """No pip install on the device: Python imports edgeify_runtime from the cached zip in the work dir."""
    dev = device_for(lab.devices["dev-b"], workdir=workdir)
    with open_site(dev) as site:
        rt, prep = ensure_runtime(site)
        rc, out, err = site.transport.run(
            [*site.python, "-c", "import edgeify_runtime as e; print(e.__file__)"],
            env={"PYTHONPATH": f"{prep['workdir']}/runtime/{rt.file}"}, timeout=30)
    assert rc == 0, err
    assert out.strip().startswith(str(workdir / "runtime" / rt.file))


def test_agent_deadline_is_enforced_on_the_device(env, lab, workdir: Path, bundles) -> None:
    sshd = lab.devices["dev-c"]
    dev = device_for(sshd, workdir=workdir)
    slow = BenchSettings(**{**QUICK_PROTOCOL, "runs": 1, "min_duration_s": 60.0, "max_duration_s": 90.0})
    with Timer() as t, pytest.raises(RemoteCommandError) as exc:
        bench(bundles["v1"], dev, settings=slow, timeout=2, store=False)[0].unwrap()
    assert exc.value.exit_code == 25 and "deadline" in exc.value.message and t.seconds < 15
    time.sleep(0.5)
    left = [p for p in sshd.processes() if "edgeify_runtime.bench" in " ".join(_cmdline(p))]
    assert not left, "the agent outlived its deadline on the device"


def _cmdline(p) -> list[str]:
    try:
        return p.cmdline()
    except Exception:  # exited meanwhile
        return []


def test_fleet_bench_in_parallel_one_result_or_error_per_device(env, lab, tmp_path: Path, bundles) -> None:
    inv = Inventory(env.devices_file)
    for name in ("dev-a", "dev-b", "dev-c"):
        inv.add(device_for(lab.devices[name], workdir=tmp_path / name, tags=("pi",)))
    inv.add(make_device("pi-off", host="127.0.0.6", port=sshlab.free_port("127.0.0.6"), user="root",
                        target="x86-avx2", tags=("pi",)))
    inv.save()
    outcomes = bench(bundles["v1"], "tag:pi", settings=QUICK, inventory=Inventory(env.devices_file))
    by = {o.device: o for o in outcomes}
    assert sorted(by) == ["dev-a", "dev-b", "dev-c", "pi-off"]
    assert all(by[n].ok and isinstance(by[n].result, BenchResult) for n in ("dev-a", "dev-b", "dev-c"))
    assert isinstance(by["pi-off"].error, UnreachableError) and by["pi-off"].exit_code == 20
    with open_store(env.results_db) as store:
        stored = {r.device for r in store.query(samples=False)}
    assert stored == {"dev-a", "dev-b", "dev-c"}
    # --device and --devices are one route now: a tag selector works for either
    (one,) = bench(bundles["v1"], "dev-a", settings=QUICK, inventory=Inventory(env.devices_file), store=False)
    assert one.ok and one.result.device == "dev-a"


def test_cli_bench_devices_json_and_budget(env, lab, tmp_path: Path, bundles) -> None:
    inv = Inventory(env.devices_file)
    inv.add(device_for(lab.devices["dev-a"], workdir=tmp_path / "a", tags=("x",)))
    inv.save()
    res = run_cli("bench", str(bundles["v1"]), "--devices", "tag:x", "--threads", "1", "--warmup", "1",
                  "--runs", "3", "--min-duration", "0", "--format", "json", "--max-latency-ms", "100000")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    (entry,) = data["devices"]
    assert entry["device"] == "dev-a" and entry["ok"]
    result = BenchResult.from_dict(entry["result"])  # the one result schema, also inside the fleet wrapper
    assert result.latency_ms.p50 > 0 and "samples_ms" not in entry["result"]
    assert entry["result"]["budget"] == {"percentile": "p95", "max_ms": 100000.0,
                                         "value_ms": result.latency_ms.p95, "met": True}
    over = run_cli("bench", str(bundles["v1"]), "--device", "dev-a", "--runs", "3", "--min-duration", "0",
                   "--max-latency-ms", "0.000001", "--format", "json", "--no-store")
    assert over.returncode == 13, over.stderr
    one = json.loads(over.stdout)  # exactly one JSON document: the result with its verdict
    assert one["ok"] is True and one["budget"]["met"] is False and "over the budget" in over.stderr
