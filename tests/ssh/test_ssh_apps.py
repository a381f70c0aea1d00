"""``edgeify deploy --app serve``: the HTTP service installed beside its bundle on a real sshd device, started,
health-checked, queried for real over HTTP, restarted by a redeploy, stopped; and its failures.

The device's python is this venv's (it has starlette, uvicorn and prometheus-client); ``--app serve`` runs
``python -m edgeify_runtime.serve`` from the deployed runtime zip. Every app started here
writes a pid file in the test's work directory and is killed by that pid in ``finally``; every HTTP request
goes to 127.0.0.x with a timeout.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import edgeify_runtime as er
import numpy as np
import psutil
import pytest
import sshlab
from edgeify.deploy.apps import app_status, deploy_app, resolve_app, stop_app
from edgeify.deploy.connect import open_site
from edgeify.deploy.deployer import deploy
from edgeify.errors import EngineMissingError, RemoteCommandError
from sshtest import Timer, device_for, run_cli

pytestmark = pytest.mark.ssh


def _digest(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["bundle_digest"]


def _free_port() -> int:
    return sshlab.free_port("0.0.0.0")


def _kill_apps(workdir: Path) -> None:
    """Stop whatever an app pid file in ``workdir`` names (SIGTERM, then SIGKILL), whatever the test did."""
    for pidfile in (workdir / "apps").glob("*/app.pid"):
        with contextlib.suppress(ValueError, OSError, psutil.Error):
            proc = psutil.Process(int(pidfile.read_text().strip()))
            proc.send_signal(signal.SIGTERM)
            _, alive = psutil.wait_procs([proc], timeout=10)
            for p in alive:
                p.kill()


def _request(address: str, port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(address, port, timeout=10)
    try:
        payload = None if body is None else json.dumps(body)
        conn.request(method, path, body=payload, headers={"Content-Type": "application/json"} if payload else {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _port_closed(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((address, port)) != 0


def test_deploy_serve_predict_redeploy_stop(env, lab, workdir: Path, bundles) -> None:
    sshd = lab.devices["dev-a"]
    dev = device_for(sshd, workdir=workdir)
    v1, v2 = bundles["v1"], bundles["v2"]
    port = _free_port()
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    try:
        with open_site(dev) as site:
            with Timer() as t:
                r = deploy_app(site, v1, app="serve", port=port, options=["max-batch=4"], device=dev,
                               host=sshd.address)
            print(f"\ndeploy + start + healthy (tiny bundle, first deploy): {t.seconds:.2f} s {r.timings_s}")
            assert t.seconds < 30
            assert r.health["status"] == "ok" and r.health["bundle_digest"] == _digest(v1)
            assert r.url == f"http://{sshd.address}:{port}" and r.restarted is None
            assert r.deploy["status"] == "installed" and r.warnings == []  # 127.0.0.x is loopback
            assert int((workdir / "apps" / "model" / "app.pid").read_text()) == r.pid
            # the service runs from the runtime zip: nothing of the host's source tree is uploaded
            assert resolve_app("serve").module == "edgeify_runtime.serve"
            cmdline = psutil.Process(r.pid).cmdline()
            assert cmdline[1:3] == ["-m", "edgeify_runtime.serve"], cmdline
            assert psutil.Process(r.pid).environ()["PYTHONPATH"] == str(workdir / "runtime" / r.deploy["runtime"])
            assert not any((workdir / "apps" / "_files").iterdir())

            # a real request from here to the device's address: the same answer as the runtime locally
            status, out = _request(sshd.address, port, "POST", "/v1/predict", {"inputs": {"x": x.tolist()}})
            assert status == 200, out
            with er.load(v1, threads=1) as model:
                ref1 = model.run({"x": x})["y"]
            np.testing.assert_allclose(np.asarray(out["outputs"]["y"], np.float32), ref1, rtol=1e-5, atol=1e-6)
            status, info = _request(sshd.address, port, "GET", "/v1/model")
            assert status == 200 and info["batching"]["max_batch"] == 4  # --app-option max-batch=4 arrived
            assert info["bundle"] == "model"  # the name it is served under, never its path on the device (24.4)

            # redeploy another version under the same name: the running app is stopped (SIGTERM, exit 0) and a
            # new one answers for the new digest
            r2 = deploy_app(site, v2, app="serve", port=port, device=dev, host=sshd.address)
            assert r2.pid != r.pid and _gone(r.pid)
            assert r2.restarted and r2.restarted["pid"] == r.pid and r2.restarted["signal"] == "TERM"
            assert r2.restarted["exit_code"] == 0
            assert r2.health["bundle_digest"] == _digest(v2) != _digest(v1)
            assert r2.deploy["uploaded_bytes"] > 0 and not r2.deploy["runtime_uploaded"]
            assert '"event": "stopped"' in (workdir / "apps" / "model" / "app.log.1").read_text()
            status, out = _request(sshd.address, port, "POST", "/v1/predict", {"inputs": {"x": x.tolist()}})
            with er.load(v2, threads=1) as model:
                ref2 = model.run({"x": x})["y"]
            np.testing.assert_allclose(np.asarray(out["outputs"]["y"], np.float32), ref2, rtol=1e-5, atol=1e-6)
            assert not np.allclose(ref1, ref2)

            # the same bundle again: nothing to upload, still a restart (redeploy = restart)
            r3 = deploy_app(site, v2, app="serve", port=port, device=dev, host=sshd.address)
            assert r3.deploy["status"] == "unchanged" and r3.deploy["uploaded_bytes"] == 0
            assert r3.restarted["pid"] == r2.pid and r3.pid != r2.pid and _gone(r2.pid)

            # another app (another bundle name) on the port in use: refused before starting anything
            with pytest.raises(RemoteCommandError) as exc:
                deploy_app(site, v1, app="serve", port=port, device=dev, name="other", host=sshd.address)
            assert exc.value.exit_code == 25 and f"port {port} is used by app 'model'" in exc.value.message
            assert "edgeify apps stop model" in exc.value.hint and not (workdir / "apps" / "other").exists()

            (st,) = app_status(site)["apps"]
            assert st["name"] == "model" and st["running"] and st["pid"] == r3.pid and st["port"] == port
            assert st["digest"] == _digest(v2) and st["app"] == "serve"

            with Timer() as t:
                out = stop_app(site, "model")
            assert out["was_running"] and out["pid"] == r3.pid and out["signal"] == "TERM"
            assert out["exit_code"] == 0 and t.seconds < 10
            assert _gone(r3.pid) and _port_closed(sshd.address, port)
            (st,) = app_status(site)["apps"]
            assert not st["running"] and st["exit_code"] == 0
            assert stop_app(site, "model")["was_running"] is False
    finally:
        _kill_apps(workdir)


def test_port_in_use_fails_with_the_apps_own_error(env, lab, workdir: Path, bundles) -> None:
    sshd = lab.devices["dev-b"]
    dev = device_for(sshd, workdir=workdir)
    blocker = socket.socket()
    try:
        blocker.bind((sshd.address, 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        with open_site(dev) as site, Timer() as t, pytest.raises(RemoteCommandError) as exc:
            deploy_app(site, bundles["v1"], app="serve", port=port, device=dev, health_timeout=30,
                       host=sshd.address)
        assert t.seconds < 30
        e = exc.value
        assert e.exit_code == 25
        assert "exited with code 1" in e.message and f"cannot listen on {sshd.address}:{port}" in e.message
        assert "serve: error:" in e.message  # the log tail is in the message
        assert "pick another --port" in e.hint
        pid = int((workdir / "apps" / "model" / "app.pid").read_text())
        assert _gone(pid)
    finally:
        blocker.close()
        _kill_apps(workdir)


def test_missing_packages_are_named_and_nothing_starts(env, lab, workdir: Path, bundles, tmp_path: Path) -> None:
    py = sshlab.python_without_engines(tmp_path)  # numpy only: no starlette, uvicorn, prometheus-client
    dev = device_for(lab.devices["dev-c"], workdir=workdir, python=py)
    with open_site(dev) as site:
        before = deploy(site, bundles["v2"], device=dev).digest  # what the device runs now
    with open_site(dev) as site, Timer() as t, pytest.raises(EngineMissingError) as exc:
        deploy_app(site, bundles["v1"], app="serve", port=_free_port(), device=dev)
    assert sshlab.installed(workdir, "model")["digest"] == before  # probed first: `current` was not switched
    assert t.seconds < 30
    e = exc.value
    assert e.exit_code == 11
    for mod in ("starlette", "uvicorn", "prometheus_client"):
        assert mod in e.message
    assert "does not install packages" in e.message
    assert f"{py} -m pip install" in e.hint and "'uvicorn>=0.22'" in e.hint and "[serve] extra" in e.hint
    assert not (workdir / "apps" / "model").exists()  # refused before starting anything


def test_health_timeout_stops_the_app(env, lab, workdir: Path, bundles, tmp_path: Path) -> None:
    """An app (a file of one's own) that never answers /healthz: the deadline holds and the app is stopped."""
    app = tmp_path / "sleeper.py"
    app.write_text("import sys, time\nprint('sleeper: up, never listening', flush=True)\ntime.sleep(120)\n")
    dev = device_for(lab.devices["dev-a"], workdir=workdir)
    try:
        with open_site(dev) as site, Timer() as t, pytest.raises(RemoteCommandError) as exc:
            deploy_app(site, bundles["v1"], app=str(app), port=_free_port(), device=dev, health_timeout=2,
                       stop_timeout=5)
        assert t.seconds < 20
        e = exc.value
        assert e.exit_code == 25 and "not healthy after 2 s" in e.message
        assert "the app was stopped" in e.message and "sleeper: up, never listening" in e.message
        assert "--health-timeout" in e.hint
        pid = int((workdir / "apps" / "model" / "app.pid").read_text())
        assert _gone(pid)
    finally:
        _kill_apps(workdir)


def test_cli_deploy_app_status_stop(env, lab, workdir: Path, bundles) -> None:
    d = lab.devices["dev-c"]
    add = run_cli("devices", "add", "edge-1", "--host", d.address, "--port", str(d.port), "--user", "root",
                  "--python", sys.executable, "--workdir", str(workdir), "--target", "x86-avx2")
    assert add.returncode == 0, add.stderr
    port = _free_port()
    try:
        bad = run_cli("deploy", str(bundles["v1"]), "--device", "edge-1", "--app", "serve", "--app-option", "port=1")
        assert bad.returncode == 4 and "--port" in bad.stderr
        unknown = run_cli("deploy", str(bundles["v1"]), "--device", "edge-1", "--app", "sevre")
        assert unknown.returncode == 4 and "serve" in unknown.stderr
        assert not (workdir / "bundles").exists()  # both refused before connecting

        dep = run_cli("deploy", str(bundles["v1"]), "--device", "edge-1", "--app", "serve", "--port", str(port),
                      "--app-option", "max-batch=2", "--format", "json")
        assert dep.returncode == 0, dep.stderr
        r = json.loads(dep.stdout)
        # the service binds loopback unless told: reachable on the device only
        assert r["host"] == "127.0.0.1" and r["url"] == f"http://127.0.0.1:{port}" and not r["token"]
        assert r["health"]["bundle_digest"] == _digest(bundles["v1"]) and r["warnings"] == []
        status, _ = _request("127.0.0.1", port, "GET", "/healthz")
        assert status == 200

        # --host <a non-loopback address> is warned about; --token-file guards every endpoint
        token = env.tmp / "token"
        token.write_text("s3cret-token-0123456789abcdef\n")
        dep = run_cli("deploy", str(bundles["v1"]), "--device", "edge-1", "--app", "serve", "--port", str(port),
                      "--host", "0.0.0.0", "--token-file", str(token), "--format", "json")
        assert dep.returncode == 0, dep.stderr
        r = json.loads(dep.stdout)
        assert r["host"] == "0.0.0.0" and r["token"] is True
        assert any("anyone who can reach the device" in w for w in r["warnings"])
        assert "s3cret-token" not in dep.stdout + dep.stderr
        app_dir = workdir / "apps" / "model"
        assert all("s3cret-token" not in p.read_text() for p in app_dir.glob("app.*") if p.is_file())
        assert _request(d.address, port, "GET", "/healthz")[0] == 401
        conn = http.client.HTTPConnection(d.address, port, timeout=10)
        conn.request("GET", "/healthz", headers={"Authorization": "Bearer s3cret-token-0123456789abcdef"})
        assert conn.getresponse().status == 200
        conn.close()
        assert set(r["timings_s"]) >= {"deploy", "probe", "upload", "start", "health", "total"}

        table = run_cli("deploy", str(bundles["v1"]), "--device", "edge-1", "--app", "serve", "--port", str(port),
                        "--host", d.address)
        assert table.returncode == 0, table.stderr
        assert "healthy at" in table.stdout and f"was pid {r['pid']}" in table.stdout
        assert "edgeify apps stop model --device edge-1" in table.stdout

        st = run_cli("apps", "status", "--device", "edge-1", "--format", "json")
        assert st.returncode == 0, st.stderr
        (app,) = json.loads(st.stdout)["apps"]
        assert app["running"] and app["port"] == port

        stop = run_cli("apps", "stop", "model", "--device", "edge-1")
        assert stop.returncode == 0 and "stopped model" in stop.stdout, stop.stderr
        assert _port_closed(d.address, port) and _gone(app["pid"])
        missing = run_cli("apps", "stop", "nothing", "--device", "edge-1")
        assert missing.returncode == 4 and "no app named 'nothing'" in missing.stderr
    finally:
        _kill_apps(workdir)
