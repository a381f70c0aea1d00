"""A device with Python 3.8 (Raspberry Pi OS bullseye, JetPack 5): the runtime's device side runs there.

The host's own deploy and benchmark path drives a "device" whose Python is CPython 3.8 with numpy 1.24 and
onnxruntime 1.19 (the newest cp38 wheels) over ``LocalTransport``: the runtime zip's bootstrap, the file
operations (``python -m edgeify_runtime.device_files`` prepare / install / status / rollback), the benchmark agent
(``python -m edgeify_runtime.bench``) with host-vs-device parity, and the runtime's pure parts (manifest read and
verify, reply envelope, result record) imported from the zip the deployer installed.

The venv is made once per machine under the user's cache dir (``~/.cache/edgeify-tests/``): a fresh machine
builds it in the first run (pip, about a minute); the interpreter is pyenv's 3.8 (``EDGEIFY_TEST_PY38`` names
another). Without one the test skips locally and fails in CI (tests/_ci_skips.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _kit import make_gemm_onnx
from edgeify import build

WHEELS = ("numpy==1.24.4", "onnxruntime==1.19.2")  # the newest releases with cp38 wheels
pytestmark = pytest.mark.slow  # a fresh Python 3.8 venv (pip, about a minute the first time)


def _base_python() -> Path | None:
    given = os.environ.get("EDGEIFY_TEST_PY38")
    if given:
        return Path(given)
    roots = [os.environ.get("PYENV_ROOT"), str(Path.home() / ".pyenv")]
    for root in filter(None, roots):
        found = sorted(Path(root, "versions").glob("3.8.*/bin/python"))
        if found:
            return found[-1]
    exe = shutil.which("python3.8")
    return Path(exe) if exe else None


@pytest.fixture(scope="session")
def py38() -> Path:
    base = _base_python()
    if base is None or not base.is_file():
        pytest.skip("no CPython 3.8 here (pyenv install 3.8, or set EDGEIFY_TEST_PY38)")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeify-tests" / "py38-device"
    py = cache / "bin" / "python"
    marker = cache / ".installed"
    if not marker.is_file() or marker.read_text().split() != [str(base), *WHEELS]:
        subprocess.run([str(base), "-m", "venv", "--clear", str(cache)], check=True, timeout=300)
        proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "--only-binary=:all:", *WHEELS],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"cannot install {' '.join(WHEELS)} for Python 3.8 into {cache}: {proc.stderr[-2000:]}")
        marker.write_text(" ".join([str(base), *WHEELS]) + "\n")
    version = subprocess.run([str(py), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                             text=True, timeout=60, check=True).stdout.strip()
    assert version == "(3, 8)", version
    return py


def _bundle(tmp: Path, name: str, seed: int) -> Path:
    out = tmp / name
    build(make_gemm_onnx(tmp / f"{name}.onnx", seed=seed), target="x86", out=out, measure_latency=False)
    return out


def test_the_device_side_runs_on_python38(py38: Path, tmp_path: Path) -> None:
    from edgeify.bench import BenchSettings, outputs_on_device
    from edgeify.deploy.deployer import deploy, rollback, status
    from edgeify.deploy.local import LocalTransport
    from edgeify.deploy.site import DeviceSite
    from edgeify_runtime.envelope import parse_reply
    from edgeify_runtime.result import BenchResult

    v1, v2 = _bundle(tmp_path, "v1", 0), _bundle(tmp_path, "v2", 1)
    # runtime_path None: the deployer installs the runtime zip into the work directory, as on a remote device
    site = DeviceSite(LocalTransport("py38"), name="py38", python=[str(py38)], workdir=str(tmp_path / "device"))
    first = deploy(site, v1, name="gemm")
    assert first.status == "installed" and first.runtime
    again = deploy(site, v1, name="gemm")
    assert again.status == "unchanged" and again.uploaded_bytes == 0
    deploy(site, v2, name="gemm")
    back = rollback(site, "gemm")
    assert back, back
    listed = json.dumps(status(site))
    assert first.digest[:12] in listed

    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    np.savez(tmp_path / "in.npz", input=x)
    quick = BenchSettings(warmup=2, runs=10, min_duration_s=0.1, max_duration_s=30)
    result, got = outputs_on_device(site, first, tmp_path / "in.npz", tmp_path / "back", settings=quick)
    assert isinstance(result, BenchResult) and result.bundle_digest == first.digest
    assert result.fingerprint["python"]["version"].startswith("3.8.")
    assert result.engine.name == "onnxruntime" and result.engine.version == "1.19.2"
    assert result.protocol.runs_done >= 10 and result.latency_ms.p50 > 0
    import edgeify_runtime as er

    with er.load(v1) as model:
        want = model.run({"input": x})
    with np.load(got) as z:
        for k, v in want.items():
            np.testing.assert_allclose(z[k], v, rtol=1e-5, atol=1e-6)

    # the pure parts from the zip the deployer installed: manifest read + verify, the envelope, the result record
    zip_path = Path(site.workdir) / "runtime" / first.runtime
    current = Path(site.workdir) / "bundles" / "gemm" / "current"
    code = (
        "import json, sys, time\n"
        "from edgeify_runtime.manifest import Manifest\n"
        "from edgeify_runtime.envelope import respond\n"
        "from edgeify_runtime.result import BenchResult\n"
        "def work():\n"
        "    if sys.argv[3] == 'sleep':\n"
        "        time.sleep(30)\n"
        "    m = Manifest.read(sys.argv[1]); m.verify_files(sys.argv[1])\n"
        "    r = BenchResult.from_dict(json.loads(sys.argv[2]))\n"
        "    return {'ok': True, 'digest': m.bundle_digest, 'inputs': [t.name for t in m.inputs],\n"
        "            'round_trip': r.to_dict() == BenchResult.from_dict(r.to_dict()).to_dict()}\n"
        "sys.exit(respond(work))\n")

    def pure(mode: str, **env: str) -> tuple[int, dict]:
        proc = subprocess.run([str(py38), "-c", code, str(current), json.dumps(result.to_dict()), mode],
                              env={**os.environ, "PYTHONPATH": str(zip_path), **env}, capture_output=True, text=True,
                              timeout=120)
        reply = parse_reply(proc.stdout)
        assert reply is not None, proc.stderr[-3000:]
        return proc.returncode, reply

    assert pure("read") == (0, {"ok": True, "digest": first.digest, "inputs": ["input"], "round_trip": True})
    code, reply = pure("sleep", EDGEIFY_DEADLINE_S="1")  # the agent's own deadline, as on a device without timeout
    assert code == 25 and reply["ok"] is False and reply["error"]["type"] == "DeadlineError", reply
    assert sys.version_info[:2] != (3, 8)  # the host side stays on its own Python
