"""Rollouts of devices that run the service (``--app serve``) on real sshd devices (127.0.0.40-41), and the soak
on live traffic through a real Prometheus (``--soak``/``--prometheus``).

- the rollout restarts each device's service on the new bundle after its gate (its /healthz digest and
  /v2/health/ready are part of the verdict); ``rollout abort`` puts the previous bundle back and restarts the
  service on it; a device that runs no such app fails before anything is installed on it;
- ``--soak``: a Prometheus started here scrapes both services (labelled device=NAME) under load from this test;
  the second wave's device is made busy once its service runs the new bundle (its threads pinned to one CPU at
  nice 19 beside two spinners, as tests/test_monitoring.py does with one), its p95 goes over the 30 ms budget
  given to the services at deploy, the soak fails it, the wave is rolled back and its service restarted on the
  previous bundle.

Every service started here is stopped by its pid in a finalizer; Prometheus and sshd too.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import sshlab
from edgeify.deploy.inventory import Inventory
from sshtest import device_for, require, run_cli

pytestmark = pytest.mark.ssh

ADDRESSES = {"svc-a": "127.0.0.40", "svc-b": "127.0.0.41"}
GATE_EQUAL = "p50<=2x"
# the soak's latency budget, given to both services: the canary's p95 under this test's traffic is 2-3 ms; the busy
# device's reached 120-175 ms on the CI machine with one spinner, 99 ms here with two. 200 ms was too close (CI: p95
# 122.5 ms, the soak passed the busy device); 30 ms (the service's own measured budget is at least 20 ms) keeps a
# wide margin on both sides
BUDGET_MS = 30
COMMON = ("--runs", "2", "--samples", "20", "--parallel", "2", "--retries", "0")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, sshlab.Sshd]]:
    require("sshd", root=True)
    root = tmp_path_factory.mktemp("svc-fleet")
    pub = sshlab.write_ed25519_key(root / "client" / "id_ed25519", "edgeify-rollout-apps")
    devices: dict[str, sshlab.Sshd] = {}
    try:
        for name, addr in ADDRESSES.items():
            devices[name] = sshlab.Sshd(name, addr, root / name, pub).start()
        yield devices
    finally:
        for d in devices.values():
            d.stop()


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("svc-bundles")
    return {"v1": sshlab.make_bundle(root / "v1" / "model", seed=21),
            "v2": sshlab.make_bundle(root / "v2" / "model", seed=22)}


@pytest.fixture()
def services(pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, versions) -> Iterator[dict[str, Any]]:
    """Both devices registered (svc-a tagged canary), v1 deployed on each with --app serve on its own port; the
    apps are killed by their pid files afterwards, whatever the test did."""
    home = tmp_path / "home"
    ssh = home / ".ssh"
    ssh.mkdir(parents=True)
    ssh.chmod(0o700)
    any_dev = next(iter(pair.values()))
    (ssh / "id_ed25519").write_bytes((any_dev.root.parent / "client" / "id_ed25519").read_bytes())
    (ssh / "id_ed25519").chmod(0o600)
    (ssh / "known_hosts").write_text("".join(d.known_hosts_line() + "\n" for d in pair.values()))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("EDGEIFY_HOME", str(tmp_path / "edgeify-home"))
    monkeypatch.setenv("EDGEIFY_RESULTS_DB", str(tmp_path / "results.sqlite"))
    for var in ("SSH_AUTH_SOCK", "EDGEIFY_SSH_CONFIG", "EDGEIFY_DEBUG", "EDGEIFY_RESULTS_URL"):
        monkeypatch.delenv(var, raising=False)
    inv = Inventory(tmp_path / "edgeify-home" / "config" / "devices.toml")
    work, ports = {}, {}
    for name, sshd in pair.items():
        work[name] = tmp_path / "work" / name
        ports[name] = sshlab.free_port("127.0.0.1")
        inv.add(device_for(sshd, workdir=work[name], tags=("svc", "canary") if name == "svc-a" else ("svc",)))
    inv.save()
    try:
        for name in pair:
            # a budget given (kept in app.json's argv across restarts): on a loaded 2-core machine the one the
            # service measures at startup (max(3 x p95, p95 + 20 ms)) is close to the p95 under traffic
            r = run_cli("deploy", str(versions["v1"]), "--device", name, "--app", "serve", "--port",
                        str(ports[name]), "--app-option", f"latency-budget-ms={BUDGET_MS}", "--format", "json",
                        timeout=180)
            assert r.returncode == 0, r.stderr[-3000:]
        yield {"work": work, "ports": ports, "tmp": tmp_path}
    finally:
        for w in work.values():
            _kill_apps(w)


def _kill_apps(workdir: Path) -> None:
    for pidfile in (workdir / "apps").glob("*/app.pid"):
        with contextlib.suppress(ValueError, OSError, psutil.Error):
            proc = psutil.Process(int(pidfile.read_text().strip()))
            proc.send_signal(signal.SIGTERM)
            _, alive = psutil.wait_procs([proc], timeout=10)
            for p in alive:
                p.kill()


def _get(port: int, path: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, json.loads(body) if body else None
    finally:
        conn.close()


def _digest(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["bundle_digest"]


def _pid(work: Path) -> int:
    return int((work / "apps" / "model" / "app.pid").read_text().strip())


def test_rollout_restarts_the_service_and_abort_restarts_it_on_the_previous_bundle(services, versions) -> None:
    work, ports = services["work"], services["ports"]
    v1, v2 = _digest(versions["v1"]), _digest(versions["v2"])
    before = {n: _pid(w) for n, w in work.items()}
    r = run_cli("rollout", str(versions["v2"]), "--devices", "tag:svc", "--waves", "1,100%", "--gate", GATE_EQUAL,
                "--app", "serve", *COMMON, "--format", "json", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["state"] == "done" and out["waves"][0]["devices"] == ["svc-a"]  # the pinned canary
    for d in out["devices"]:
        app = d["detail"]["app"]
        assert d["status"] == "passed" and app["restarted"] is True and app["health"]["bundle_digest"] == v2
    for n, port in ports.items():  # the services really serve the new bundle now, from new processes
        assert _get(port, "/healthz")[1]["bundle_digest"] == v2
        assert _get(port, "/v2/health/ready")[0] == 200
        assert _pid(work[n]) != before[n] and psutil.pid_exists(_pid(work[n]))
    after = {n: _pid(w) for n, w in work.items()}
    ab = run_cli("rollout", "abort", out["rollout_id"], "--format", "json", timeout=300)
    assert ab.returncode == 0, ab.stderr[-3000:]
    st = json.loads(ab.stdout)
    assert st["state"] == "aborted"
    for d in st["devices"]:
        assert d["status"] == "rolled-back" and d["bundle_digest"] == v1
        assert d["detail"]["rollback"]["app"]["health"]["bundle_digest"] == v1
    for n, port in ports.items():  # back on the previous bundle, restarted once more
        assert _get(port, "/healthz")[1]["bundle_digest"] == v1
        assert _pid(work[n]) != after[n]
    # a device that runs no serve app of that name fails before anything is installed on it
    miss = run_cli("rollout", str(versions["v2"]), "--devices", "svc-b", "--waves", "100%", "--gate", GATE_EQUAL,
                   "--app", "serve", "--name", "other", *COMMON, "--format", "json", timeout=300)
    assert miss.returncode == 17, miss.stderr[-3000:]
    dev = json.loads(miss.stdout)["devices"][0]
    assert dev["status"] == "failed" and "runs no serve app named 'other'" in dev["detail"]["error"]["message"]
    assert not (work["svc-b"] / "bundles" / "other").exists()
    # --soak without --prometheus / --app is refused before any device is touched
    bad = run_cli("rollout", str(versions["v2"]), "--devices", "tag:svc", "--soak", "30s")
    assert bad.returncode == 2 and "--prometheus" in bad.stderr
    down = run_cli("rollout", str(versions["v2"]), "--devices", "tag:svc", "--app", "serve", "--soak", "30s",
                   "--prometheus", f"http://127.0.0.1:{sshlab.free_port('127.0.0.1')}")
    assert down.returncode == 18 and "Prometheus" in down.stderr


# -- the soak ------------------------------------------------------------------------------------------------------
def _prometheus(tmp: Path, ports: dict[str, int], port: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
    from _tiers import starting

    starting("prometheus")
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail("prometheus is not installed (apt-get install prometheus; install.sh --dev does)")
    port = port or sshlab.free_port("127.0.0.1")
    targets = "".join(f"      - {{targets: ['127.0.0.1:{p}'], labels: {{device: {n}}}}}\n" for n, p in ports.items())
    # scrapes every 2 s with 2 s to answer: a starved service's /metrics takes far longer than a request
    (tmp / "prometheus.yml").write_text("global: {scrape_interval: 2s, scrape_timeout: 2s, evaluation_interval: 1s}\n"
                                        "scrape_configs:\n"
                                        "  - job_name: edgeify-serve\n    static_configs:\n" + targets)
    proc = subprocess.Popen([exe, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    return proc, port


def _up(prom_port: int, n: int) -> bool:
    from edgeify.rollout.soak import query

    try:
        return sum(v == 1 for v in query(f"http://127.0.0.1:{prom_port}", "up").values()) == n
    except Exception:
        return False


def _busy(pid: int, hog: list[subprocess.Popen[bytes]]) -> None:
    """Every thread of ``pid`` pinned to CPU 0 at nice 19 beside two processes spinning on CPU 0 (test_monitoring's
    way, one spinner more: SIGSTOP pauses are not enough). The app runs in its own session (setsid), so in its own
    scheduler autogroup, where a thread's nice only counts against its own group: the group's nice is set to 19 too.
    Two spinners: the service's threads get at most a third of CPU 0 even where nice is not honoured."""
    cpu0 = {min(os.sched_getaffinity(0))}
    with contextlib.suppress(OSError):  # kernels without CONFIG_SCHED_AUTOGROUP have no such file
        Path(f"/proc/{pid}/autogroup").write_text("19")
    for _ in range(2):
        hog.append(subprocess.Popen([sys.executable, "-c",
                                     f"import os\nos.sched_setaffinity(0, {cpu0})\nwhile True: pass"]))
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(int(tid), cpu0)
            os.setpriority(os.PRIO_PROCESS, int(tid), 19)


@pytest.mark.prometheus
def test_soak_fails_a_busy_device_and_its_wave_is_rolled_back(services, versions) -> None:
    work, ports, tmp = services["work"], services["ports"], services["tmp"]
    v1, v2 = _digest(versions["v1"]), _digest(versions["v2"])
    prom, prom_port = _prometheus(tmp, ports)
    stop = threading.Event()
    hog: list[subprocess.Popen[bytes]] = []

    def load(port: int) -> None:  # live traffic; reconnects across the restarts
        body = json.dumps({"inputs": {"x": [[0.5] * 16] * 2}})
        while not stop.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                while not stop.is_set():
                    conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": "application/json"})
                    conn.getresponse().read()
                    time.sleep(0.01)
            except (OSError, http.client.HTTPException):
                time.sleep(0.2)
            finally:
                conn.close()

    loaders = [threading.Thread(target=load, args=(p,), daemon=True) for p in ports.values() for _ in range(2)]
    proc = None
    try:
        deadline = time.monotonic() + 60
        while not _up(prom_port, len(ports)):
            assert time.monotonic() < deadline, "Prometheus never scraped both services"
            time.sleep(0.5)
        for t in loaders:
            t.start()
        code = "import sys\nfrom edgeify.cli import main as m\nm.main(sys.argv[1:])\n"
        proc = subprocess.Popen([sys.executable, "-c", code, "rollout", str(versions["v2"]), "--devices", "tag:svc",
                                 "--waves", "1,100%", "--gate", GATE_EQUAL, "--app", "serve", "--soak", "25s",
                                 "--prometheus", f"http://127.0.0.1:{prom_port}", *COMMON, "--format", "json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
        from edgeify.rollout import status

        deadline = time.monotonic() + 400
        busy_pid = None
        while time.monotonic() < deadline and proc.poll() is None:  # svc-b's service restarted on v2: make it busy
            with contextlib.suppress(Exception):
                d = status().device("svc-b")
                if d.status == "passed" and (d.detail.get("app") or {}).get("digest") == v2:
                    busy_pid = _pid(work["svc-b"])
                    _busy(busy_pid, hog)
                    break
            time.sleep(0.2)
        if busy_pid is None:
            out_text, err = proc.communicate(timeout=400)
            pytest.fail(f"svc-b never passed its gate (exit {proc.returncode}): {err[-3000:]}")
        out_text, err = proc.communicate(timeout=400)
        assert proc.returncode == 17, err[-3000:]
        out = json.loads(out_text)
        by = {d["name"]: d for d in out["devices"]}
        a, b = by["svc-a"], by["svc-b"]
        # the canary soaked 25 s within its budget and keeps the new bundle
        assert a["status"] == "passed" and a["detail"]["soak"]["verdict"] == "pass" and a["bundle_digest"] == v2
        assert a["detail"]["soak"]["requests"] > 0 and a["detail"]["soak"]["budget_ms"] == BUDGET_MS
        soak = b["detail"]["soak"]
        # the busy service is slower than its budget; under a loaded machine it can be too starved to be scraped at
        # all, and then it fails as down (EdgeifyServiceDown): either is the soak failing the device
        assert soak["verdict"] == "fail" and ("over its budget" in soak["reason"] or "down:" in soak["reason"]), soak
        assert b["status"] == "rolled-back" and b["bundle_digest"] == v1
        assert b["detail"]["rollback"]["app"]["health"]["bundle_digest"] == v1
        assert _get(ports["svc-b"], "/healthz")[1]["bundle_digest"] == v1  # the service runs the previous again
        assert _pid(work["svc-b"]) != busy_pid
        assert _get(ports["svc-a"], "/healthz")[1]["bundle_digest"] == v2
        print(f"\nsoak: {soak['reason']}; rollback {out['detail']['rollback_seconds']:.1f} s")
    finally:
        stop.set()
        for h in hog:
            h.kill()
            h.wait(timeout=10)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
        prom.send_signal(signal.SIGTERM)
        try:
            prom.wait(timeout=20)
        except subprocess.TimeoutExpired:
            prom.kill()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.prometheus
def test_prometheus_lost_mid_soak_pauses_and_resume_soaks_again(services, versions) -> None:
    """Prometheus stops while the wave soaks: the rollout pauses (exit 18), nothing is rolled back or counted as
    passing; with Prometheus back, `resume` soaks that wave again and finishes. No traffic here: the soak passes
    with a note saying so."""
    tmp, ports = services["tmp"], {"svc-a": services["ports"]["svc-a"]}
    v2 = _digest(versions["v2"])
    prom, prom_port = _prometheus(tmp, ports)
    proc = None
    try:
        deadline = time.monotonic() + 60
        while not _up(prom_port, 1):
            assert time.monotonic() < deadline, "Prometheus never scraped the service"
            time.sleep(0.5)
        code = "import sys\nfrom edgeify.cli import main as m\nm.main(sys.argv[1:])\n"
        proc = subprocess.Popen([sys.executable, "-c", code, "rollout", str(versions["v2"]), "--devices", "svc-a",
                                 "--waves", "100%", "--gate", GATE_EQUAL, "--app", "serve", "--soak", "20s",
                                 "--prometheus", f"http://127.0.0.1:{prom_port}", *COMMON, "--format", "json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
        from edgeify.rollout import status

        deadline = time.monotonic() + 300
        soaking = False
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(Exception):
                d = status().device("svc-a")
                if d.status == "passed" and (d.detail.get("app") or {}).get("digest") == v2:
                    soaking = True
                    break
            time.sleep(0.2)
        assert soaking, proc.communicate(timeout=60)[1][-3000:]
        _stop(prom)
        out_text, err = proc.communicate(timeout=300)
        assert proc.returncode == 18, err[-3000:]
        out = json.loads(out_text)
        assert out["state"] == "paused" and "Prometheus" in out["detail"]["soak_error"]
        assert out["devices"][0]["bundle_digest"] == v2 and "soak" not in out["devices"][0]["detail"]
        prom, _ = _prometheus(tmp, ports, port=prom_port)  # back, on the same address
        deadline = time.monotonic() + 60
        while not _up(prom_port, 1):
            assert time.monotonic() < deadline, "Prometheus never came back"
            time.sleep(0.5)
        res = run_cli("rollout", "resume", out["rollout_id"], "--format", "json", timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        done = json.loads(res.stdout)
        assert done["state"] == "done" and done["detail"]["soaked"] == [0]
        soak = done["devices"][0]["detail"]["soak"]
        assert soak["verdict"] == "pass" and "no inference traffic" in soak["note"]
        assert _get(ports["svc-a"], "/healthz")[1]["bundle_digest"] == v2
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
        _stop(prom)
