"""Fleet rollouts against a real fleet: 20 sshd devices on 127.0.0.10-29, real bundles, real benchmark agents.

- four waves over 20 devices complete, every device ends on the new bundle, re-running is idempotent;
- a slower bundle fails the canary wave's gate and that wave is rolled back (every device on a known bundle);
- a device whose link is cut mid-wave pauses the rollout (exit 20, never counted as passing), `resume` finishes it;
- Ctrl-C mid-wave (exit 130), then `resume` finishes it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sshlab
from edgeify.deploy.inventory import Inventory
from sshtest import device_for, require, run_cli

pytestmark = pytest.mark.ssh

FLEET = 20
ADDRESSES = [f"127.0.0.{10 + i}" for i in range(FLEET)]
#: the test machine runs 20 devices on 2 cores: a loose gate for bundles of equal speed, exact samples per run
GATE_EQUAL = "p50<=2x"
COMMON = ("--runs", "2", "--samples", "30", "--parallel", "6", "--retries", "1")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, sshlab.Sshd]]:
    require("sshd", root=True)
    root = tmp_path_factory.mktemp("fleet")
    key = root / "client" / "id_ed25519"
    pub = sshlab.write_ed25519_key(key, "edgeify-rollout-tests")
    devices: dict[str, sshlab.Sshd] = {}
    try:
        for i, addr in enumerate(ADDRESSES):
            name = f"cam-{i:02d}"
            devices[name] = sshlab.Sshd(name, addr, root / name, pub).start()
        yield devices
    finally:
        for d in devices.values():
            d.stop()


@pytest.fixture()
def fleet_env(fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME with the fleet's client key and host keys; an empty devices file and results store; returns tmp."""
    home = tmp_path / "home"
    ssh = home / ".ssh"
    ssh.mkdir(parents=True)
    ssh.chmod(0o700)
    any_dev = next(iter(fleet.values()))
    key_src = any_dev.root.parent / "client" / "id_ed25519"
    (ssh / "id_ed25519").write_bytes(key_src.read_bytes())
    (ssh / "id_ed25519").chmod(0o600)
    (ssh / "known_hosts").write_text("".join(d.known_hosts_line() + "\n" for d in fleet.values()))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("EDGEIFY_HOME", str(tmp_path / "edgeify-home"))
    monkeypatch.setenv("EDGEIFY_RESULTS_DB", str(tmp_path / "results.sqlite"))
    for var in ("SSH_AUTH_SOCK", "EDGEIFY_SSH_CONFIG", "EDGEIFY_DEBUG", "EDGEIFY_RESULTS_URL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _register(fleet: dict[str, sshlab.Sshd], tmp: Path, names: list[str], tag: str) -> dict[str, Path]:
    """Devices in the devices file, each with its own work directory (they share one filesystem)."""
    inv = Inventory(tmp / "edgeify-home" / "config" / "devices.toml")
    work = {}
    for n in names:
        work[n] = tmp / "work" / n
        inv.add(device_for(fleet[n], workdir=work[n], tags=(tag,)))
    inv.save()
    return work


def _slow_bundle(out: Path, seed: int) -> Path:
    """A real bundle with the same signature as sshlab.make_bundle's (x[batch,16] -> y[batch,4]) and far more
    arithmetic (three 768-wide layers): what a regressed model build looks like on the device."""
    from edgeify_runtime.manifest import dumps, files_digest, sha256_file
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    dims = [16, 768, 768, 768, 4]
    nodes, inits, prev = [], [], "x"
    for i in range(len(dims) - 1):
        w = (rng.standard_normal((dims[i], dims[i + 1])) / np.sqrt(dims[i])).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        out_name = "y" if i == len(dims) - 2 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [out_name]))
        prev = out_name
    graph = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    ref = sshlab.make_bundle(out, seed=seed)  # the manifest shape of a real bundle; the model is replaced
    (ref / "model.onnx").write_bytes(model.SerializeToString())
    manifest = json.loads((ref / "manifest.json").read_text())
    files = {n: {"sha256": sha256_file(ref / n), "size": (ref / n).stat().st_size} for n in manifest["files"]}
    manifest.update(files=files, bundle_digest=files_digest(files))
    (ref / "manifest.json").write_text(dumps(manifest))
    return ref


def _digest(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["bundle_digest"]


def _on_disk(work: dict[str, Path]) -> dict[str, str | None]:
    return {n: (sshlab.installed(w, "model") or {}).get("digest") for n, w in work.items()}


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rollout-bundles")
    return {"v1": sshlab.make_bundle(root / "v1" / "model", seed=11),
            "v2": sshlab.make_bundle(root / "v2" / "model", seed=12),
            "slow": _slow_bundle(root / "slow" / "model", seed=13)}


def test_four_waves_over_twenty_devices_then_idempotent(fleet, fleet_env, versions) -> None:
    names = sorted(fleet)
    work = _register(fleet, fleet_env, names, "cameras")
    base = run_cli("deploy", str(versions["v1"]), "--devices", "tag:cameras", "--format", "json", timeout=300)
    assert base.returncode == 0, base.stderr
    t0 = time.monotonic()
    r = run_cli("rollout", str(versions["v2"]), "--devices", "tag:cameras", "--waves", "1,10%,50%,100%",
                "--gate", GATE_EQUAL, *COMMON, "--format", "json", timeout=900)
    seconds = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["state"] == "done" and out["ok"] is True
    assert [len(w["devices"]) for w in out["waves"]] == [1, 1, 8, 10]
    assert {d["status"] for d in out["devices"]} == {"passed"}
    new = _digest(versions["v2"])
    assert {d["bundle_digest"] for d in out["devices"]} == {new}
    assert set(_on_disk(work).values()) == {new}  # what the devices really run
    # each installed version is also reachable by its digest (what `apps manifests` mounts), previous too
    one = work[names[0]] / "bundles" / "model"
    assert (one / f"sha256-{new}" / "manifest.json").is_file()
    assert (one / f"sha256-{_digest(versions['v1'])}").resolve() == (one / "previous").resolve()
    for d in out["devices"]:  # every device was gated against the bundle it replaced, on itself
        assert d["previous_digest"] == _digest(versions["v1"])
        assert d["detail"]["gate"]["runs"] >= 2 and d["detail"]["gate"]["verdict"] == "pass"
    # the canary went first, alone, and the order is deterministic for this bundle
    st = run_cli("rollout", "status", out["rollout_id"], "--format", "json")
    assert st.returncode == 0 and json.loads(st.stdout)["waves"] == out["waves"]
    again = run_cli("rollout", str(versions["v2"]), "--devices", "tag:cameras", "--waves", "1,10%,50%,100%",
                    "--gate", GATE_EQUAL, *COMMON, "--format", "json", timeout=120)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["rollout_id"] == out["rollout_id"] and "nothing to do" in again.stderr
    print(f"\n20-device 4-wave rollout: {seconds:.1f} s")


def test_slower_bundle_fails_the_canary_and_the_wave_is_rolled_back(fleet, fleet_env, versions) -> None:
    names = sorted(fleet)[:6]
    work = _register(fleet, fleet_env, names, "edge")
    assert run_cli("deploy", str(versions["v1"]), "--devices", "tag:edge", timeout=300).returncode == 0
    old = _digest(versions["v1"])
    r = run_cli("rollout", str(versions["slow"]), "--devices", "tag:edge", "--waves", "2,50%,100%",
                "--gate", "p50<=1.5x", *COMMON, "--format", "json", timeout=600)
    assert r.returncode == 17, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["state"] == "failed" and out["ok"] is False and out["error"]["exit_code"] == 17
    first = out["waves"][0]["devices"]
    by_name = {d["name"]: d for d in out["devices"]}
    for n in first:
        assert by_name[n]["status"] == "rolled-back" and by_name[n]["bundle_digest"] == old
        assert by_name[n]["detail"]["gate"]["verdict"] == "fail" and by_name[n]["detail"]["gate"]["ratio"] > 1.5
    for n in set(names) - set(first):  # never touched; status still says what they run
        assert by_name[n]["status"] == "pending" and by_name[n]["bundle_digest"] == old
    assert set(_on_disk(work).values()) == {old}  # every device on a known bundle: the one it ran before
    assert out["detail"]["rollback_seconds"] >= 0
    # the record survives: status says the same without touching a device
    st = json.loads(run_cli("rollout", "status", "--format", "json").stdout)
    assert st["rollout_id"] == out["rollout_id"] and st["state"] == "failed"
    # resume of a failed rollout is refused with a clear message
    res = run_cli("rollout", "resume", out["rollout_id"])
    assert res.returncode == 2 and "nothing to resume" in res.stderr


def test_link_cut_mid_wave_pauses_and_resume_finishes(fleet, fleet_env, versions) -> None:
    """Three loopback devices and one in a network namespace whose link is cut while its gate is measured
    (sshd keeps running there): it is retried, reported unreachable and never counted as passing; the rollout
    pauses (exit 20); with the link back, `resume` finishes it."""
    require("sshd", "ip", root=True)
    names = sorted(fleet)[6:9]
    work = _register(fleet, fleet_env, names, "yard")
    link = sshlab.NetnsLink("roll").up()
    ns_dev = None
    try:
        any_dev = next(iter(fleet.values()))
        pub = Path(str(any_dev.root.parent / "client" / "id_ed25519") + ".pub").read_text().strip()
        ns_dev = sshlab.Sshd("yard-ns", link.ns_addr, fleet_env / "ns-dev", pub, netns=link.ns).start()
        with (fleet_env / "home" / ".ssh" / "known_hosts").open("a") as f:
            f.write(ns_dev.known_hosts_line() + "\n")
        inv = Inventory(fleet_env / "edgeify-home" / "config" / "devices.toml")
        work["yard-ns"] = fleet_env / "work" / "yard-ns"
        inv.add(device_for(ns_dev, workdir=work["yard-ns"], tags=("yard",)))
        inv.save()
        assert run_cli("deploy", str(versions["v1"]), "--devices", "tag:yard", timeout=300).returncode == 0
        code = "import sys\nfrom edgeify.cli import main as m\nm.main(sys.argv[1:])\n"
        proc = subprocess.Popen([sys.executable, "-c", code, "rollout", str(versions["v2"]), "--devices", "tag:yard",
                                 "--waves", "100%", "--gate", GATE_EQUAL, "--runs", "3", "--samples", "30",
                                 "--parallel", "4", "--retries", "1", "--format", "json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
        from edgeify.rollout import status

        deadline = time.monotonic() + 300
        cut = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if status().device("yard-ns").status == "deployed":  # installed; its gate is being measured
                    link.cut()
                    cut = True
                    break
            except Exception:
                pass
            time.sleep(0.05)
        assert cut, "the namespaced device never reached its gate"
        out_text, err = proc.communicate(timeout=300)
        assert proc.returncode == 20, err[-3000:]
        out = json.loads(out_text)
        assert out["state"] == "paused"
        by_name = {d["name"]: d for d in out["devices"]}
        assert by_name["yard-ns"]["status"] == "unreachable"  # never counted as passing
        assert by_name["yard-ns"]["detail"]["error"]["exit_code"] in (20, 24, 27)
        assert {by_name[n]["status"] for n in names} == {"passed"}
        st = json.loads(run_cli("rollout", "status", out["rollout_id"], "--format", "json").stdout)
        assert st["state"] == "paused" and st["waves"][0]["unreachable"] == 1
        link.restore()
        res = run_cli("rollout", "resume", out["rollout_id"], "--format", "json", timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        assert json.loads(res.stdout)["state"] == "done"
        assert set(_on_disk(work).values()) == {_digest(versions["v2"])}
    finally:
        if ns_dev is not None:
            ns_dev.stop()
        link.down_all()


def test_ctrl_c_mid_wave_then_resume(fleet, fleet_env, versions) -> None:
    names = sorted(fleet)[10:15]
    work = _register(fleet, fleet_env, names, "dock")
    assert run_cli("deploy", str(versions["v1"]), "--devices", "tag:dock", timeout=300).returncode == 0
    from edgeify.rollout import status

    code = ("import sys\nfrom edgeify.cli import main as m\nm.main(sys.argv[1:])\n")
    # default SIGINT handling in the child, as in a terminal: a suite run as a background job (`.ci/run &`) passes
    # SIGINT *ignored* down to its children, and Python then never raises KeyboardInterrupt (the rollout ran to the
    # end, exit 0, in two background dry runs; test_interrupts.py and test_optimize.py do the same)
    proc = subprocess.Popen([sys.executable, "-c", code, "rollout", str(versions["v2"]), "--devices", "tag:dock",
                             "--waves", "1,100%", "--gate", GATE_EQUAL, "--runs", "2", "--samples", "30",
                             "--parallel", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # one device at a time: when the first of the second wave's four is under way, three are still to come (the
    # store is this test's own: fleet_env gives each test a fresh one)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:  # wait until the second wave is under way
        try:
            rec = status()
            if any(d.wave == 1 and d.status in ("deployed", "passed") for d in rec.devices):
                break
        except Exception:
            pass
        time.sleep(0.2)
    assert proc.poll() is None, "the rollout ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    rec = status()
    assert rec.state == "interrupted"
    assert {d.status for d in rec.devices} - {"passed"}, "some devices should still be unfinished"
    res = run_cli("rollout", "resume", rec.id, "--format", "json", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout)["state"] == "done"
    assert set(_on_disk(work).values()) == {_digest(versions["v2"])}


def test_accuracy_gate_on_the_device(fleet, fleet_env, versions, tmp_path: Path) -> None:
    """--eval: the new bundle's top-1 on the device against the replaced one's, on the same inputs."""
    import onnxruntime as ort

    names = sorted(fleet)[15:18]
    work = _register(fleet, fleet_env, names, "acc")
    assert run_cli("deploy", str(versions["v1"]), "--devices", "tag:acc", timeout=300).returncode == 0
    x = np.random.default_rng(5).standard_normal((64, 16)).astype(np.float32)
    same = sshlab.make_bundle(tmp_path / "same" / "model", seed=11, extra_files={"NOTICE": b"same weights\n"})
    np.savez(tmp_path / "eval-unlabelled.npz", x=x)
    ok = run_cli("rollout", str(same), "--devices", "tag:acc", "--waves", "1,100%", "--gate", GATE_EQUAL, *COMMON,
                 "--eval", str(tmp_path / "eval-unlabelled.npz"), "--max-accuracy-drop", "0.3", "--format", "json",
                 timeout=600)
    assert ok.returncode == 0, ok.stderr[-3000:]
    for d in json.loads(ok.stdout)["devices"]:  # same weights: the device's outputs agree exactly
        assert d["detail"]["accuracy"]["agreement"] == 100.0 and d["detail"]["accuracy"]["samples"] == 64
    # labels = what the bundle now on the devices predicts; v2 has other weights, so it loses accuracy
    sess = ort.InferenceSession(str(same / "model.onnx"), providers=["CPUExecutionProvider"])
    labels = sess.run(None, {"x": x})[0].argmax(1)
    np.savez(tmp_path / "eval.npz", x=x, labels=labels)
    bad = run_cli("rollout", str(versions["v2"]), "--devices", "tag:acc", "--waves", "1,100%", "--gate", GATE_EQUAL,
                  *COMMON, "--eval", str(tmp_path / "eval.npz"), "--max-accuracy-drop", "0.3", "--format", "json",
                  timeout=600)
    assert bad.returncode == 17, bad.stderr[-3000:]
    out = json.loads(bad.stdout)
    canary = out["devices"][0]
    acc = canary["detail"]["accuracy"]
    assert acc["measure"] == "labels" and acc["previous"] == 100.0 and acc["drop"] > 0.3
    assert canary["status"] == "rolled-back"
    assert set(_on_disk(work).values()) == {_digest(same)}
    # bad --eval data is refused before any device is touched (exit 7)
    np.savez(tmp_path / "wrong.npz", x=np.zeros((4, 3), np.float32))
    wrong = run_cli("rollout", str(versions["v2"]), "--devices", "tag:acc", "--eval", str(tmp_path / "wrong.npz"))
    assert wrong.returncode == 7, wrong.stderr
