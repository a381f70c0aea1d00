"""Shared fixtures: an isolated EDGEIFY_HOME, the trained digits example, tiny ONNX models, a CLI runner."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session", autouse=True)
def edgeify_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One EDGEIFY_HOME per test session: the step cache is shared by the tests, the user's home is untouched."""
    home = tmp_path_factory.mktemp("edgeify-home")
    old = os.environ.get("EDGEIFY_HOME")
    os.environ["EDGEIFY_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("EDGEIFY_HOME", None)
    else:
        os.environ["EDGEIFY_HOME"] = old


@pytest.fixture()
def results_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tmp_path / "results.sqlite"
    monkeypatch.setenv("EDGEIFY_RESULTS_DB", str(db))
    return db


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The digits CNN trained for real on sklearn's load_digits (a few seconds), with calib/eval splits."""
    out = tmp_path_factory.mktemp("digits")
    train = _load_module(REPO / "examples" / "digits" / "train.py", "edgeify_example_digits_train")
    info = train.main(out_dir=out)
    assert info["accuracy"] >= 0.97
    return {"model": out / "model.pt2", "calib": out / "calib.npz", "eval": out / "eval.npz", "dir": out,
            "accuracy": info["accuracy"]}


@pytest.fixture(scope="session")
def digits_onnx(digits: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same digits model as a plain ONNX file (a source an ONNX-only user would bring)."""
    import torch

    out = tmp_path_factory.mktemp("digits-onnx") / "digits.onnx"
    ep = torch.export.load(str(digits["model"]))
    torch.onnx.export(ep, (), str(out), dynamo=True, external_data=False, input_names=["x"],
                      output_names=["logits"], verbose=False)
    return out


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real console script in a subprocess (exit codes and stdout/stderr as a user sees them)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("EDGEIFY_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "edgeify", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd)


def make_gemm_onnx(path: Path, *, opset: int = 17, in_features: int = 16, out_features: int = 4,
                   seed: int = 0, dynamic_batch: bool = True) -> Path:
    """A tiny real ONNX model (Gemm + Relu) built with onnx.helper."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((out_features, in_features)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(out_features).astype(np.float32), "B")
    batch = "N" if dynamic_batch else 1
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "W", "B"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["y"])],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, in_features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, out_features])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset <= 12 else 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture()
def tiny_onnx(tmp_path: Path) -> Path:
    return make_gemm_onnx(tmp_path / "tiny.onnx")
