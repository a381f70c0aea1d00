"""One manifest class for host and device (issue 10 item 4): the bundle writer builds manifest.json through
``edgeify_runtime.manifest.Manifest.create``; a reader refuses a newer or unknown schema version clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _kit import make_gemm_onnx
from edgeify import build
from edgeify.steps.base import Artifact, IoQuantization, QParams, Quantization, Signature
from edgeify.steps.records import ExportFacts, FixedDim, TfliteFacts
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
    assert read == res.manifest and read.raw == res.manifest.to_dict()
    assert [t.name for t in read.inputs] == ["input"] and read.raw["validation"]["passed"]


def test_typed_artifact_facts_round_trip(tmp_path: Path) -> None:
    io = IoQuantization({"x": QParams("int8", 0.5, -3)}, {})
    quant = Quantization("static", "int8", tool="x", io_quantization=io, calibration_samples=8,
                         details={"scheme": "U8S8"})
    art = Artifact("tflite", [tmp_path / "m.tflite"], Signature((TensorSpec("x", (1, 4), "int8"),), ()), quant,
                   export=ExportFacts("none (ONNX source)", 17, fixed_dims=(FixedDim("x", 0, "batch", 1, "t"),)),
                   tflite=TfliteFacts("onnx2tf", variant="int8", ops={"min_version": "2.14.0"}),
                   engine_min_version="2.14.0")
    d = json.loads(json.dumps(art.to_dict()))  # what the step cache stores
    assert d["quantization"] == {"method": "static", "weights": "int8", "tool": "x", "calibration_samples": 8,
                                 "scheme": "U8S8", "io_quantization": {
                                     "inputs": {"x": {"dtype": "int8", "scale": 0.5, "zero_point": -3}},
                                     "outputs": {}}}
    assert Artifact.from_dict(d, tmp_path) == art and art.opset == 17
    fp16 = Quantization.from_dict({"method": "fp16", "weights": "float16", "io": "float32 (cast)"})
    assert fp16.io_quantization is None and fp16.io == "float32 (cast)" and not fp16.details


def test_a_step_cache_entry_in_the_old_dict_form_is_a_miss(tmp_path: Path) -> None:
    from edgeify.cache import StepCache

    cache = StepCache(tmp_path)
    old = tmp_path / "steps" / "k1"
    old.mkdir(parents=True)
    (old / "model.onnx").write_bytes(b"x")
    (old / "artifact.json").write_text(json.dumps({"format": "onnx", "files": ["model.onnx"], "meta": {
        "inputs": [], "outputs": [], "quantization": {"method": "fp16", "io": "float32 (cast)"}}}))
    assert cache.get("k1") is None  # the layout before typed records: rebuilt, never a crash
    (old / "artifact.json").write_text("{torn")
    assert cache.get("k1") is None
    src = tmp_path / "out" / "model.onnx"
    src.parent.mkdir()
    src.write_bytes(b"y")
    art = Artifact("onnx", [src], Signature((TensorSpec("x", ("batch", 4), "float32"),), ()))
    got = cache.put("k2", art)
    assert got.path.parent == tmp_path / "steps" / "k2" and got.signature == art.signature


#: a manifest's ``validation`` and ``quantization`` as edgeify wrote them before the typed records
_OLD_VALIDATION = {
    "tolerance": {"metric": "max-abs", "rtol": 1e-4, "atol": 1e-5, "min_cosine": 0.999, "min_sample_cosine": None,
                  "sample_percentile": 5.0},
    "outputs": [{"output": "y", "inputs": "random", "shape": [8, 2], "gated": True, "max_abs": 1e-7,
                 "mean_abs": 1e-8, "ref_max_abs": 2.0, "cosine": 1.0, "top1_agreement": 1.0, "sample_cosine_p": 5.0,
                 "sample_cosine": 1.0, "sample_cosine_min": 1.0, "samples": 8, "limit": "max|Δ| ≤ 0.00021",
                 "bound": 0.00021, "pass": True},
                {"output": "z", "inputs": "random", "shape": [8, 3], "gated": True, "error": "shape mismatch"}],
    "random_samples": 8, "real_samples": 0, "passed": True,
    "accuracy": {"samples": 4, "source_accuracy": 1.0, "built_accuracy": 0.75, "drop_points": 25.0,
                 "top1_agreement": 0.75, "per_class": [{"class": 0, "count": 4, "source": 1.0, "built": 0.75,
                                                        "delta_points": -25.0}],
                 "worst_class": {"class": 0, "count": 4, "source": 1.0, "built": 0.75, "delta_points": -25.0},
                 "max_drop_points": None}}


def test_a_manifest_written_before_the_typed_records_still_reads() -> None:
    from edgeify.steps.records import ValidationReport

    raw = _create(validation=_OLD_VALIDATION).to_dict()
    raw["quantization"] = {"method": "static", "format": "QDQ", "weights": "int8", "calibration_samples": None}
    read = Manifest.from_dict(json.loads(json.dumps(raw)))
    v = ValidationReport.from_dict(read.raw["validation"])
    assert v.passed and v.tolerance.rtol == 1e-4 and v.accuracy is not None and v.accuracy.worst_class.label == 0
    assert [r.passed for r in v.outputs] == [True, False] and v.max_abs() == {"y": 1e-7}
    assert v.to_dict()["outputs"][0] == _OLD_VALIDATION["outputs"][0]
    assert Quantization.from_dict(read.raw["quantization"]).details == {"format": "QDQ"}


def test_host_facts_read_typed_and_an_update_goes_through_the_class() -> None:
    """The host reads a manifest's validation/quantization only as typed records (one helper each); publishing a
    ladder rewrites the manifest through ``Manifest.updated``, and the ladder round-trips as its own field."""
    from dataclasses import replace

    from edgeify.steps.records import quantization_of, validation_of

    m = _create(validation=_OLD_VALIDATION)
    v = validation_of(m)
    assert v is not None and v.accuracy is not None and v.accuracy.drop_points == 25.0
    assert validation_of(_create()) is None
    rung = {"rung": "int8", "precision": "int8", "accuracy_drop": 2.5, "accepted": False}
    q = replace(quantization_of(m), ladder=(rung,))
    m2 = m.updated(quantization=q.to_dict(), optimize={"run_id": "r1"})
    assert m2.quantization["ladder"] == [rung] and m2.raw["optimize"] == {"run_id": "r1"}
    assert quantization_of(m2).ladder == (rung,) and not quantization_of(m2).details
    assert Manifest.from_dict(json.loads(json.dumps(m2.to_dict()))) == m2 and m.quantization.get("ladder") is None
    assert quantization_of(m.updated(quantization={"method": "static", "weights": "int8", "ladder": []})).ladder == ()
    with pytest.raises(BundleError, match="digest"):  # a payload edit is refused
        m.updated(files={"model.onnx": {"sha256": "cd", "size": 1}})
    with pytest.raises(BundleError, match="malformed validation"):
        validation_of(m.updated(validation={"outputs": []}))
