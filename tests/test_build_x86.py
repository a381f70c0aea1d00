"""Real builds of the digits CNN for x86 with both engines in every precision, checked numerically."""

from __future__ import annotations

import json
from pathlib import Path

import edgeify_runtime
import numpy as np
import pytest
from edgeify.build import build
from edgeify_runtime.manifest import Manifest, files_digest, sha256_file

ENGINES = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic")


@pytest.fixture(scope="module")
def digits_eval(digits):
    with np.load(digits["eval"]) as z:
        return z["x"], z["labels"]


def torch_reference(digits, x: np.ndarray) -> np.ndarray:
    import torch

    m = torch.export.load(str(digits["model"])).module()
    with torch.no_grad():
        return m(torch.from_numpy(x)).numpy()


@pytest.mark.slow  # the whole engine x precision sweep; the quick tier builds int8 and ONNX->OpenVINO below
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_digits_every_engine_and_precision(digits, digits_eval, tmp_path: Path, engine: str, precision: str) -> None:
    out = tmp_path / "bundle"
    res = build(digits["model"], target="x86-avx2", precision=precision, engine=engine,
                calib=digits["calib"] if precision == "int8" else None, eval=digits["eval"], out=out,
                measure_latency=False)
    m = Manifest.read(out)
    m.verify_files(out)
    assert m.engine.name == engine and m.precision == precision and m.target == "x86-avx2"
    assert [t.name for t in m.inputs] == ["x"] and m.inputs[0].shape == ("batch", 1, 8, 8)
    assert m.inputs[0].layout == "NCHW" and m.outputs[0].shape == ("batch", 10)
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["source"]["sha256"] == sha256_file(digits["model"])
    assert raw["bundle_digest"] == files_digest(raw["files"])
    assert raw["steps"][0]["id"] == "export" and raw["steps"][-1]["id"] == "check"
    assert raw["tools"]["onnxruntime"] and raw["tools"]["edgeify"]
    val = res.validation
    assert val.passed and {r.inputs.split()[0] for r in val.outputs} == {"random", "real"}
    acc = val.accuracy
    assert acc is not None and acc.source_accuracy >= 0.97 and acc.samples == 540
    assert len(acc.per_class) == 10 and acc.worst_class in acc.per_class
    if precision == "int8":
        assert raw["calibration"]["count"] == 200 and len(raw["calibration"]["sha256"]) == 64
        assert acc.drop_points <= 0.5, acc
        assert raw["quantization"]["method"] == "static" and res.quantization.method == "static"
    if precision in ("fp32", "fp16"):
        assert acc.drop_points <= 0.2
    # the bundle, loaded by the device-side facade, matches torch eager on fresh inputs
    x, _ = digits_eval
    with edgeify_runtime.load(out) as model:
        got = model.run({"x": x[:64]})["output"]
    ref = torch_reference(digits, x[:64])
    if precision == "fp32":
        assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max() + 1e-5
    elif precision == "fp16":
        assert np.abs(got - ref).max() <= 1e-2 * np.abs(ref).max() + 1e-5
    else:
        assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.98


def test_int8_is_smaller_and_report_is_written(digits, tmp_path: Path) -> None:
    fp32 = build(digits["model"], target="x86", precision="fp32", out=tmp_path / "fp32", measure_latency=False)
    int8 = build(digits["model"], target="x86", precision="int8", calib=digits["calib"], out=tmp_path / "int8")
    assert int8.family_alias == "x86" and int8.target == "x86-avx2"
    size = lambda r: sum(f["size"] for f in r.manifest.files.values())  # noqa: E731
    assert size(int8) < 0.5 * size(fp32)
    report = (tmp_path / "int8" / "report.md").read_text()
    assert "## Parity" in report and "Local latency" in report
    assert int8.latency["latency_ms"]["p50"] > 0
    # the export step is shared through the cache
    assert int8.steps[0]["cached"] and int8.steps[0]["cache_key"] == fp32.steps[0]["cache_key"]


def test_onnx_source_through_openvino_int8(digits_onnx: Path, digits, tmp_path: Path) -> None:
    res = build(digits_onnx, target="x86-avx2", precision="int8", engine="openvino", calib=digits["calib"],
                eval=digits["eval"], out=tmp_path / "ov", measure_latency=False)
    assert res.manifest.outputs[0].name == "logits"
    assert res.manifest.source["kind"] == "onnx"
    assert res.validation.accuracy and res.validation.accuracy.drop_points <= 0.5
    assert sorted(res.manifest.files) == ["model.bin", "model.xml"]
