"""Checked before the first step (issue 17 items 3, 4, 6): data against the model's signature, --input-shape
against the source's own shapes, and which dynamic dims the bundle ends up fixing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _kit import make_gemm_onnx, run_cli
from edgeify.preflight import Preflight, fixed_dims
from edgeify_runtime.manifest import TensorSpec


def _build(model: Path, out: Path, *extra: str):
    return run_cli("build", str(model), "--target", "x86", "--no-latency", "-o", str(out), *extra)


def _refused_early(res, code: int, *needles: str) -> None:
    assert res.returncode == code, res.stderr
    for needle in needles:
        assert needle in res.stderr, res.stderr
    assert "fix:" in res.stderr and "✓" not in res.stderr, "a step ran before the refusal"


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    return make_gemm_onnx(tmp_path / "m.onnx")  # input [N, 16] -> y [N, 4]


def test_wrong_shape_calibration_is_exit_7_before_any_step(tiny: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", input=np.zeros((8, 15), np.float32))
    res = _build(tiny, tmp_path / "o", "--precision", "int8", "--calib", str(tmp_path / "c.npz"))
    _refused_early(res, 7, "expected [N, 16], got [8, 15]")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_data_is_named(tiny: Path, tmp_path: Path, bad: float) -> None:
    x = np.ones((8, 16), np.float32)
    x[3, 2] = bad
    np.savez(tmp_path / "c.npz", input=x)
    res = _build(tiny, tmp_path / "o", "--precision", "int8", "--calib", str(tmp_path / "c.npz"))
    _refused_early(res, 7, f"your data has {'NaN' if np.isnan(bad) else 'inf'}", "1 of 8 samples")


def test_labels_outside_the_models_classes(tiny: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "e.npz", input=np.ones((6, 16), np.float32), labels=np.array([0, 1, 2, 3, 4, 12]))
    _refused_early(_build(tiny, tmp_path / "o", "--eval", str(tmp_path / "e.npz")), 7, "[4, 12]",
                   "outside the model's classes 0..3")
    np.savez(tmp_path / "f.npz", input=np.ones((2, 16), np.float32), labels=np.array([0.0, 1.0]))
    _refused_early(_build(tiny, tmp_path / "o", "--eval", str(tmp_path / "f.npz")), 7, "integer class ids")
    np.savez(tmp_path / "empty.npz")
    _refused_early(_build(tiny, tmp_path / "o", "--eval", str(tmp_path / "empty.npz")), 7, "holds no arrays")


def test_uint8_pixels_are_cast_with_a_warning(tiny: Path, tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 256, (8, 16)).astype(np.uint8)
    np.savez(tmp_path / "e.npz", input=x, labels=np.zeros(8, np.int64))
    res = _build(tiny, tmp_path / "o", "--eval", str(tmp_path / "e.npz"))
    assert res.returncode == 0, res.stderr
    assert "uint8, cast to the model's float32" in res.stderr and "raw 0-255 pixels" in res.stderr


def test_input_shape_applies_to_onnx_dynamic_dims(tiny: Path, tmp_path: Path) -> None:
    res = _build(tiny, tmp_path / "o", "--input-shape", "input:3,16")
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["inputs"][0]["shape"] == [3, 16]
    assert m["fixed_dims"] == [{"input": "input", "axis": 0, "dim": "batch", "value": 3, "by": "--input-shape"}]
    assert "fixed to 3 by --input-shape" in res.stderr


@pytest.mark.parametrize(("shape", "needle"), [
    ("1,5,9,9", "has 4 dims"), ("foo:1,16", "does not have"), ("2,17", "axis 1 is fixed to 16"),
    ("1,16", None),
])
def test_input_shape_that_cannot_apply_is_refused(tiny: Path, tmp_path: Path, shape: str, needle: str | None) -> None:
    res = _build(tiny, tmp_path / "o", "--input-shape", shape, *(["--input-shape", "x:1,2"] if needle is None else []))
    _refused_early(res, 5, needle or "all positionally, not a mix")
    assert not (tmp_path / "o").exists()


def test_input_shape_sets_a_static_batch_on_a_pt2(tmp_path: Path) -> None:
    import torch

    pt2 = tmp_path / "lin.pt2"
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(torch.nn.Linear(4, 3), (torch.randn(2, 4),), dynamic_shapes=({0: batch},))
    torch.export.save(ep, str(pt2))
    res = _build(pt2, tmp_path / "o", "--input-shape", "5,4")
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["inputs"][0]["shape"] == [5, 4] and m["fixed_dims"][0]["value"] == 5


def test_dims_a_conversion_freezes_are_reported() -> None:
    pre = Preflight([TensorSpec("x", ("batch", "seq", 4), "float32")], None, [])
    fixed = fixed_dims(pre, [{"name": "x", "shape": [1, 1, 4]}], "rpi5")
    assert [(f["axis"], f["dim"], f["value"], f["by"]) for f in fixed] == [
        (0, "batch", 1, "the conversion for rpi5"), (1, "seq", 1, "the conversion for rpi5")]
