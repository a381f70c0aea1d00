"""The device side installs and runs alone: a fresh venv with numpy + onnxruntime + edgeify-runtime only.

This is what a device gets. It proves the runtime package needs no torch, onnx, tensorflow or host code, that
the agent works there, and that a bundle for an engine the device lacks fails with the install command. pip
uses the machine's configured indexes and its cache; outside CI a pip failure (e.g. offline) skips, in CI it
fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

RUNTIMES = Path(__file__).resolve().parents[2] / "runtimes"
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")

pytestmark = pytest.mark.slow  # a fresh venv with only the runtime and one engine


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "EDGEIFY_DEBUG")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


@pytest.fixture(scope="module")
def device_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("device")
    venv = root / "venv"
    src = root / "runtimes-src"  # build from a copy: pip writes build/ and *.egg-info next to the sources
    shutil.copytree(RUNTIMES, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, env=_clean_env())
    py = _venv_python(venv)
    import onnxruntime

    # the versions this suite already runs against: reproducible, and usually already in pip's cache
    cmd = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "--quiet",
           f"numpy=={np.__version__}", f"onnxruntime=={onnxruntime.__version__}", str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=_clean_env(), cwd=root)
    if proc.returncode != 0:
        message = f"pip install into a fresh venv failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n" \
                  f"{proc.stderr[-4000:]}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return py


def _run(py: Path, args: list[str], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(py), *args], input=stdin, capture_output=True, text=True, timeout=300,
                          env=_clean_env(), cwd=cwd)


def _agent(py: Path, request: dict[str, Any], cwd: Path) -> tuple[int, dict[str, Any]]:
    proc = _run(py, ["-m", "edgeify_runtime.bench"], cwd, stdin=json.dumps(request))
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, (proc.stdout, proc.stderr)
    return proc.returncode, json.loads(lines[0])


IMPORT_PROBE = """
import importlib, json
result = {}
for name in ("torch", "onnx", "tensorflow", "edgeify", "openvino", "pydantic", "edgeify_runtime"):
    try:
        mod = importlib.import_module(name)
    except ImportError as exc:
        result[name] = "ImportError: " + str(exc)
    else:
        result[name] = "ok " + str(getattr(mod, "__file__", ""))
print(json.dumps(result))
"""


def test_device_venv_has_only_the_runtime(device_python, tmp_path):
    proc = _run(device_python, ["-c", IMPORT_PROBE], tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for name in ("torch", "onnx", "tensorflow", "edgeify", "openvino", "pydantic"):
        assert result[name].startswith("ImportError"), (name, result[name])
    assert result["edgeify_runtime"].startswith("ok ")
    # the installed copy, not this source tree
    assert str(device_python.parent.parent) in result["edgeify_runtime"]


def test_device_venv_runs_the_agent(device_python, kit, tmp_path):
    bundle = kit.ort_bundle("gemm")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    request = {"bundle": str(bundle), "warmup": 2, "runs": 10, "min_duration_s": 0.05,
               "inputs_npz": str(tmp_path / "in.npz"), "outputs_npz": str(tmp_path / "out.npz")}
    code, res = _agent(device_python, request, tmp_path)
    assert code == 0, res
    assert res["ok"] is True and res["engine"]["name"] == "onnxruntime"
    assert len(res["samples_ms"]) == res["protocol"]["runs_done"] >= 10
    lat = res["latency_ms"]
    assert lat["p50"] <= lat["p95"] <= lat["p99"]
    assert res["fingerprint"]["engines"] == {"onnxruntime": res["engine"]["version"]}  # openvino absent
    with np.load(tmp_path / "out.npz", allow_pickle=False) as z:
        np.testing.assert_array_equal(z["y"], kit.reference("gemm", {"x": x})["y"])


def _openvino_bundle(kit) -> Path:
    """A real IR bundle when openvino is here to convert one; else the same manifest over placeholder files
    (the engine check comes before the artifact is read)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        placeholder = kit.tmp / "placeholder"
        placeholder.mkdir(exist_ok=True)
        (placeholder / "model.xml").write_text("<net/>", encoding="utf-8")
        (placeholder / "model.bin").write_bytes(b"\0" * 16)
        inputs, outputs = kit.signature("gemm")
        return kit.write_bundle(kit.tmp / "ov-placeholder", {"model.xml": placeholder / "model.xml",
                                                          "model.bin": placeholder / "model.bin"},
                            engine="openvino", artifact="model.xml", inputs=inputs, outputs=outputs)
    return kit.ov_bundle("gemm")


def test_device_without_openvino(device_python, kit, tmp_path):
    bundle = _openvino_bundle(kit)
    probe = (
        "import json, edgeify_runtime as er\n"
        "try:\n"
        f"    er.load({str(bundle)!r})\n"
        "except er.EngineMissingError as exc:\n"
        "    print(json.dumps(exc.to_dict()))\n"
    )
    proc = _run(device_python, ["-c", probe], tmp_path)
    assert proc.returncode == 0, proc.stderr
    err = json.loads(proc.stdout)
    assert err["type"] == "EngineMissingError" and err["exit_code"] == 11
    assert "pip install openvino" in err["message"] and err["hint"] == "pip install openvino"

    code, res = _agent(device_python, {"bundle": str(bundle), "runs": 1}, tmp_path)
    assert code == 11 and res["ok"] is False
    assert res["error"]["type"] == "EngineMissingError" and "openvino" in res["error"]["message"]
