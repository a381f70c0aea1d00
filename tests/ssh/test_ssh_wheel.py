"""``edgeify deploy --app serve`` from wheels (issue 10.7): the two wheels (``./runtimes`` and ``.``) built with
``pip wheel --no-deps``, installed in a fresh venv, and that venv's ``edgeify`` deploys the service to a
loopback sshd device, where it runs from the runtime zip built out of the installed wheel.

The venv sees this environment's third-party packages through a ``.pth`` line (as ``--system-site-packages``
would for a system Python) so nothing heavy is installed again; edgeify and edgeify_runtime themselves come from
the wheels, which the test proves with their ``__file__``.
"""

from __future__ import annotations

import http.client
import json
import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import sshlab
from test_ssh_apps import _kill_apps

pytestmark = pytest.mark.ssh
REPO = Path(__file__).resolve().parents[2]


def _run(*cmd: str, timeout: float = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wheels")
    wheels = root / "dist"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
         str(REPO / "runtimes"), str(REPO))
    found = sorted(p.name for p in wheels.glob("*.whl"))
    assert any(n.startswith("edgeify_runtime-") for n in found) and any(n.startswith("edgeify-") for n in found)
    rt_wheel = next(wheels.glob("edgeify_runtime-*.whl"))
    assert "edgeify_runtime/serve/cli.py" in zipfile.ZipFile(rt_wheel).namelist()  # the service is packaged
    venv = root / "venv"
    _run(sys.executable, "-m", "venv", str(venv))
    py = venv / "bin" / "python"
    purelib = _run(str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    # this environment's third-party packages, after the venv's own (like --system-site-packages)
    Path(purelib, "zz-host-packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run(str(py), "-m", "pip", "install", "--no-deps", "--no-index", *map(str, sorted(wheels.glob("*.whl"))))
    return venv


def test_deploy_app_serve_from_wheels(env, lab, workdir: Path, bundles, wheel_venv: Path) -> None:
    py = str(wheel_venv / "bin" / "python")
    where = _run(py, "-c", "import edgeify, edgeify_runtime, edgeify_runtime.serve; "
                           "print(edgeify.__file__); print(edgeify_runtime.__file__)", cwd="/").stdout.split()
    assert all(p.startswith(str(wheel_venv)) for p in where), where  # not the source tree, not the dev venv

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([py, "-m", "edgeify", *args], capture_output=True, text=True, timeout=180,
                              env=dict(os.environ), cwd="/")

    d = lab.devices["dev-b"]
    add = cli("devices", "add", "wheel-dev", "--host", d.address, "--port", str(d.port), "--user", "root",
              "--python", sys.executable, "--workdir", str(workdir), "--target", "x86-avx2")
    assert add.returncode == 0, add.stderr
    port = sshlab.free_port("127.0.0.1")
    try:
        dep = cli("deploy", str(bundles["v1"]), "--device", "wheel-dev", "--app", "serve", "--port", str(port),
                  "--format", "json")
        assert dep.returncode == 0, dep.stderr
        report = json.loads(dep.stdout)
        assert report["app"] == "serve" and report["health"]["status"] == "ok"
        zip_path = workdir / "runtime" / report["deploy"]["runtime"]
        assert "edgeify_runtime/serve/http.py" in zipfile.ZipFile(zip_path).namelist()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/v1/predict", body=json.dumps({"inputs": {"x": [[0.25] * 16]}}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        out = json.loads(resp.read())
        conn.close()
        assert resp.status == 200 and len(out["outputs"]["y"][0]) == 4
        stop = cli("apps", "stop", "model", "--device", "wheel-dev")
        assert stop.returncode == 0, stop.stderr
    finally:
        _kill_apps(workdir)
