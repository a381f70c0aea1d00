"""Shared fixtures: an isolated EDGEIFY_HOME, the trained digits example, tiny ONNX models, a CLI runner; the test
tiers (``quick`` for every test that starts no system service and is not slow, see tests/_tiers.py)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
from _ci_skips import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401  (CI: a skip fails)
from _kit import REPO, make_gemm_onnx
from _tiers import pytest_collection_modifyitems, pytest_runtest_protocol  # noqa: F401  (the test tiers)


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


@pytest.fixture()
def tiny_onnx(tmp_path: Path) -> Path:
    return make_gemm_onnx(tmp_path / "tiny.onnx")
