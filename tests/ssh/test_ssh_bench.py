"""The benchmark agent on real sshd devices: one device end to end, a fleet in parallel, the CLI fleet path."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import sshlab
from edgeify.deploy.connect import open_site
from edgeify.deploy.deployer import deploy, ensure_runtime
from edgeify.deploy.inventory import Inventory, make_device
from edgeify.deploy.remote_bench import bench_device, benchmark_fleet, benchmark_on_device, run_agent_on_site
from edgeify.errors import ConfigError, RemoteCommandError, UnreachableError
from edgeify.results import ResultsStore
from sshtest import QUICK_PROTOCOL, Timer, device_for

pytestmark = pytest.mark.ssh


def test_remote_bench_end_to_end(env, lab, workdir: Path, bundles) -> None:
    dev = device_for(lab.devices["dev-a"], name="bench-a", workdir=workdir)
    res = bench_device(dev, bundles["v1"], QUICK_PROTOCOL)
    digest = json.loads((bundles["v1"] / "manifest.json").read_text())["bundle_digest"]
    assert res["device"] == "bench-a" and res["bundle_digest"] == digest
    assert res["deploy"]["status"] == "installed"
    assert res["protocol"]["runs_done"] >= 5 and res["protocol"]["threads"] == 1
    assert len(res["samples_ms"]) == res["protocol"]["runs_done"] and res["latency_ms"]["p50"] > 0
    assert res["bundle"].startswith(str(workdir))  # it ran the deployed copy, not the local bundle
    rows = ResultsStore(env.results_db).query(device="bench-a", full=True)
    assert len(rows) == 1 and rows[0]["id"] == res["result_id"]
    assert rows[0]["fingerprint"]["arch"] == "x86_64" and "onnxruntime" in rows[0]["fingerprint"]["engines"]
    assert len(rows[0]["samples"]) == res["protocol"]["runs_done"]
    # a second run deploys nothing
    again = bench_device(dev, bundles["v1"], QUICK_PROTOCOL, store=False)
    assert again["deploy"]["status"] == "unchanged" and again["deploy"]["uploaded_bytes"] == 0


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
    with open_site(dev) as site:
        rep = deploy(site, bundles["v1"], device=dev)
        with Timer() as t, pytest.raises(RemoteCommandError) as exc:
            run_agent_on_site(site, rep, {**QUICK_PROTOCOL, "runs": 1, "min_duration_s": 60.0,
                                          "max_duration_s": 90.0}, timeout=2)
    assert exc.value.exit_code == 25 and "deadline" in exc.value.message and t.seconds < 10
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
    outcomes = benchmark_fleet(bundles["v1"], "tag:pi", QUICK_PROTOCOL, inventory=Inventory(env.devices_file))
    by = {o.device: o for o in outcomes}
    assert sorted(by) == ["dev-a", "dev-b", "dev-c", "pi-off"]
    assert all(by[n].ok for n in ("dev-a", "dev-b", "dev-c"))
    assert isinstance(by["pi-off"].error, UnreachableError) and by["pi-off"].exit_code == 20
    stored = {r["device"] for r in ResultsStore(env.results_db).query()}
    assert stored == {"dev-a", "dev-b", "dev-c"}
    with pytest.raises(ConfigError) as exc:
        benchmark_on_device(bundles["v1"], "tag:pi", QUICK_PROTOCOL, inventory=Inventory(env.devices_file))
    assert "--devices tag:pi" in exc.value.hint


def test_cli_bench_fleet_helper(env, lab, tmp_path: Path, bundles, capsys) -> None:
    from edgeify.cli.bench import bench_fleet

    inv = Inventory(env.devices_file)
    inv.add(device_for(lab.devices["dev-a"], workdir=tmp_path / "a", tags=("x",)))
    inv.save()
    outcomes = bench_fleet(bundles["v1"], "tag:x", threads=1, warmup=1, runs=3, min_duration_s=0, fmt="json")
    data = json.loads(capsys.readouterr().out)
    assert [d["device"] for d in data["devices"]] == ["dev-a"] and data["devices"][0]["ok"]
    assert outcomes[0].result["latency_ms"]["p50"] > 0
