"""Calibration/eval data formats and their errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from _kit import REPO
from edgeify.build import build
from edgeify.data import load_dataset
from edgeify.errors import DataError
from edgeify_runtime.manifest import TensorSpec

SIG = [TensorSpec("x", ("batch", 1, 8, 8), "float32", "NCHW")]


def test_npz_by_name_single_key_and_npy(tmp_path: Path) -> None:
    a = np.random.default_rng(0).random((10, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "named.npz", x=a, labels=np.arange(10) % 3)
    np.savez(tmp_path / "other.npz", images=a.astype(np.float64))
    np.save(tmp_path / "plain.npy", a)
    named = load_dataset(tmp_path / "named.npz", SIG, need_labels=True)
    assert named.count == 10 and named.labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    single = load_dataset(tmp_path / "other.npz", SIG)
    assert single.inputs["x"].dtype == np.float32  # float64 cast to the model dtype
    assert load_dataset(tmp_path / "plain.npy", SIG).sha256 == single.sha256


def test_data_errors(tmp_path: Path) -> None:
    a = np.zeros((4, 1, 8, 8), np.float32)
    np.savez(tmp_path / "nolabels.npz", x=a)
    with pytest.raises(DataError, match="labels"):
        load_dataset(tmp_path / "nolabels.npz", SIG, need_labels=True)
    np.savez(tmp_path / "nhwc.npz", x=np.zeros((4, 8, 8, 1), np.float32))
    with pytest.raises(DataError) as exc:  # exit 7: the data is wrong, not the model (issue 17 item 6)
        load_dataset(tmp_path / "nhwc.npz", SIG)
    assert "axis 1: 8 != 1" in exc.value.message and "layout" in exc.value.hint
    np.savez(tmp_path / "two.npz", a=a, b=a)
    with pytest.raises(DataError, match="do not match the model inputs"):
        load_dataset(tmp_path / "two.npz", SIG)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="unpickling"):
        load_dataset(tmp_path / "obj.npy", SIG)
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "missing.npz", SIG)
    np.savez(tmp_path / "strs.npz", x=a, labels=np.array(["a", "b", "c", "d"]))
    with pytest.raises(DataError, match="integer class ids"):
        load_dataset(tmp_path / "strs.npz", SIG, need_labels=True)


def _make_pngs(out: Path) -> Path:
    spec = importlib.util.spec_from_file_location("make_pngs", REPO / "examples" / "images" / "make_pngs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main(out)


def test_image_folder_with_preprocessing(tmp_path: Path, digits) -> None:
    folder = _make_pngs(tmp_path / "pngs")
    ds = load_dataset(folder, SIG, need_labels=True)
    assert ds.count == 12 and ds.inputs["x"].shape == (12, 1, 8, 8)
    assert ds.inputs["x"].min() >= 0.0 and ds.inputs["x"].max() <= 1.0
    assert sorted(set(ds.labels.tolist())) == list(range(10))
    # the PNGs decode to the same inputs as eval.npz (8-bit rounding), so the trained model classifies them
    res = build(digits["model"], target="x86", precision="int8", calib=folder, eval=folder, out=tmp_path / "b",
                measure_latency=False)
    acc = res.validation.accuracy
    assert acc is not None and acc.samples == 12 and acc.source_accuracy >= 11 / 12
    assert res.manifest.preprocessing and res.manifest.preprocessing["size"] == [8, 8]
    assert res.manifest.labels == [str(i) for i in range(10)]


def test_image_folder_without_preprocessing_is_refused(tmp_path: Path) -> None:
    folder = _make_pngs(tmp_path / "pngs")
    (folder / "preprocess.toml").unlink()
    with pytest.raises(DataError, match="no preprocessing declared"):
        load_dataset(folder, SIG)
