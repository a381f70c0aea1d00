"""One manifest class for host and device (issue 10 item 4): the bundle writer builds manifest.json through
``edgeify_runtime.manifest.Manifest.create``; a reader refuses a newer or unknown schema version clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _kit import make_gemm_onnx
from edgeify import build
from edgeify.steps.base import Artifact, IoQuantization, QParams, Quantization
from edgeify_runtime.errors import BundleError
from edgeify_runtime.manifest import SCHEMA_VERSION, Manifest, TensorSpec


def _create(**extra):
    return Manifest.create(target={"name": "t"}, engine={"name": "onnxruntime", "artifact": "model.onnx"},
                           precision="fp32", quantization={"method": "none", "weights": "float32"},
                           inputs=[TensorSpec("x", ("batch", 4), "float32")],
                           outputs=[TensorSpec("y", ("batch", 2), "float32")],
                           files={"model.onnx": {"sha256": "ab", "size": 1}}, **extra)


def test_create_fills_in_the_schema_and_validates_like_a_reader(tmp_path: Path) -> None:
    m = _create(source={"file": "m.onnx"})
    raw = m.to_dict()
    assert raw["schema_version"] == SCHEMA_VERSION and raw["format"] == "edgeify-bundle"
    assert Manifest.from_dict(raw).bundle_digest == m.bundle_digest and raw["source"] == {"file": "m.onnx"}
    m.write(tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text()) == raw
    with pytest.raises(ValueError, match="set by create"):
        _create(bundle_digest="forged")
    with pytest.raises(BundleError, match="not listed in files"):
        Manifest.create(target={}, engine={"name": "onnxruntime", "artifact": "other.onnx"}, precision="fp32",
                        quantization={}, inputs=[], outputs=[], files={"model.onnx": {"sha256": "ab"}})


@pytest.mark.parametrize(("version", "needle"), [(SCHEMA_VERSION + 1, "newer than this edgeify-runtime"),
                                                 (0, "not supported"), ("1", "not supported")])
def test_unknown_or_newer_schema_is_a_clear_error(version, needle: str) -> None:
    raw = _create().to_dict()
    raw["schema_version"] = version
    with pytest.raises(BundleError, match=needle) as exc:
        Manifest.from_dict(raw)
    assert exc.value.exit_code == 12 and exc.value.hint


def test_a_built_bundle_reads_back_through_the_same_class(tmp_path: Path) -> None:
    out = tmp_path / "b"
    res = build(make_gemm_onnx(tmp_path / "m.onnx"), target="x86", out=out, measure_latency=False)
    read = Manifest.read(out)
    assert read.raw == res.manifest
    assert [t.name for t in read.inputs] == ["input"] and read.raw["validation"]["passed"]


def test_typed_artifact_facts_round_trip(tmp_path: Path) -> None:
    io = {"inputs": {"x": {"dtype": "int8", "scale": 0.5, "zero_point": -3}}, "outputs": {}}
    meta = {"inputs": [{"name": "x", "shape": [1, 4], "dtype": "int8", "layout": None}], "outputs": [],
            "quantization": {"method": "static", "weights": "int8", "tool": "x", "io_quantization": io}}
    art = Artifact("tflite", [tmp_path / "m.tflite"], meta)
    q = art.quantization
    assert q.io_quantization == IoQuantization({"x": QParams("int8", 0.5, -3)}, {})
    assert q.details == {"tool": "x"} and q.to_dict() == meta["quantization"]
    assert art.signature.inputs[0].shape == (1, 4)
    fp16 = Quantization.from_meta({"method": "fp16", "weights": "float16", "io": "float32 (cast)"})
    assert fp16.io_quantization is None and fp16.details == {"io": "float32 (cast)"}
