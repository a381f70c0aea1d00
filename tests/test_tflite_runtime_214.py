"""The LiteRT adapter on a device that has tflite-runtime 2.14 (the last release; it needs numpy < 2).

A fresh venv with only numpy 1.26, tflite-runtime 2.14.0 and edgeify-runtime runs bundles built here through the
benchmark agent: models whose op versions 2.14 has give the host's outputs (NHWC bundles transposed, int8
models quantized by the adapter); a model that needs a newer runtime fails with EngineMissingError (exit 11)
naming the version. pip uses the machine's indexes and cache; outside CI a pip failure skips, in CI it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import edgeify_runtime
import numpy as np
import pytest
from _kit import IN_CI, REPO
from edgeify.build import build

TFLITE_RUNTIME = "tflite-runtime==2.14.0"
pytestmark = pytest.mark.slow  # a fresh venv (pip) and TFLite builds


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "EDGEIFY_DEBUG")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="module")
def tflite214_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tflite214")
    src = root / "runtimes-src"
    shutil.copytree(REPO / "runtimes", src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=300, env=_clean_env())
    py = root / "venv" / "bin" / "python"
    cmd = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "--quiet", "numpy<2", TFLITE_RUNTIME,
           str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=_clean_env(), cwd=root)
    if proc.returncode != 0:
        message = f"pip install {TFLITE_RUNTIME} into a fresh venv failed ({proc.returncode}):\n" \
                  f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return py


def _agent(py: Path, request: dict[str, Any], cwd: Path) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run([str(py), "-m", "edgeify_runtime.bench"], input=json.dumps(request), capture_output=True,
                          text=True, timeout=300, env=_clean_env(), cwd=cwd)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, (proc.stdout, proc.stderr)
    return proc.returncode, json.loads(lines[0])


def test_device_venv_has_numpy_1_and_tflite_runtime_only(tflite214_python: Path, tmp_path: Path) -> None:
    code = ("import json, importlib.util as u, numpy, tflite_runtime\n"
            "print(json.dumps({'numpy': numpy.__version__, 'tflite_runtime': tflite_runtime.__version__,\n"
            "  'others': [m for m in ('ai_edge_litert', 'tensorflow', 'torch', 'edgeify') if u.find_spec(m)]}))")
    proc = subprocess.run([str(tflite214_python), "-c", code], capture_output=True, text=True, timeout=120,
                          env=_clean_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["numpy"].startswith("1.") and info["tflite_runtime"] == "2.14.0" and info["others"] == []


@pytest.mark.parametrize(("source_kind", "precision"), [("pt2", "fp32"), ("onnx", "fp32"), ("pt2", "int8")])
def test_bundles_run_on_tflite_runtime_2_14_with_numpy_1(tflite214_python: Path, digits, digits_onnx,
                                                         tmp_path: Path, source_kind: str, precision: str) -> None:
    source = digits["model"] if source_kind == "pt2" else digits_onnx
    bundle = tmp_path / "bundle"
    res = build(source, target="rpi4", precision=precision, calib=digits["calib"], out=bundle,
                measure_latency=False)
    assert res.manifest.engine.min_version == "2.0.0"  # every op version here is in TF Lite 2.14
    with np.load(digits["eval"]) as z:
        x = z["x"][:1]
    np.savez(tmp_path / "in.npz", x=x)
    request = {"bundle": str(bundle), "warmup": 1, "runs": 5, "min_duration_s": 0.0, "threads": 1,
               "inputs_npz": str(tmp_path / "in.npz"), "outputs_npz": str(tmp_path / "out.npz")}
    code, result = _agent(tflite214_python, request, tmp_path)
    assert code == 0, result
    engine = result["engine"]
    assert (engine["name"], engine["version"], engine["module"]) == ("litert", "2.14.0", "tflite_runtime")
    name = res.manifest.outputs[0].name
    with np.load(tmp_path / "out.npz", allow_pickle=False) as z:
        got = z[name]
    with edgeify_runtime.load(bundle) as model:  # the same bundle on this host's ai-edge-litert
        ref = model.run({"x": x})[name]
    assert got.dtype == np.float32 and got.shape == ref.shape == (1, 10)
    if precision == "fp32":
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    else:  # same int8 model and quantization; kernels may round differently
        assert got.argmax() == ref.argmax() and np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()


def test_a_bundle_needing_a_newer_runtime_names_the_version(tflite214_python: Path, digits, tmp_path: Path) -> None:
    bundle = tmp_path / "dyn"
    res = build(digits["model"], target="rpi4", precision="int8-dynamic", out=bundle, measure_latency=False)
    assert res.manifest.engine.min_version == "2.17.0"  # dynamic-range FULLY_CONNECTED is version 12
    code, result = _agent(tflite214_python, {"bundle": str(bundle), "runs": 1, "warmup": 0}, tmp_path)
    assert code == 11 and result["ok"] is False
    err = result["error"]
    assert err["type"] == "EngineMissingError" and "2.17.0" in err["message"] and "2.14.0" in err["message"]
    assert "ai-edge-litert" in err["hint"]
