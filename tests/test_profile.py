"""Per-operator profiles (issue 14): the real engines' profilers on real bundles, through the real agent.

No timing is asserted: the structure, the placements and invariants that hold on any machine (the per-op sum of
a sequential executor fits inside the profiled runs). The ratio of the per-op sum to the p50 is recorded in the
profile and printed (``-s``), not asserted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _kit import REPO
from edgeify.build import build
from edgeify_runtime.manifest import dumps, files_digest, sha256_file
from edgeify_runtime.profile import Profile, profile_bundle
from edgeify_runtime.trtexec import parse_profile

TRTEXEC_DATA = REPO / "tests" / "data" / "trtexec"


def agent(request: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "edgeify_runtime.bench"], input=json.dumps(request),
                          capture_output=True, text=True, timeout=300)
    out = json.loads(proc.stdout)
    assert proc.returncode == 0 and out["ok"], (proc.stdout, proc.stderr[-2000:])
    return out


@pytest.fixture(scope="module")
def ov_int8_bundle(digits: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits CNN as an NNCF int8 OpenVINO bundle, built by edgeify."""
    out = tmp_path_factory.mktemp("profile-ov") / "ov_int8"
    build(digits["model"], out=out, measure_latency=False, target="x86-avx2", precision="int8", engine="openvino",
          calib=digits["calib"])
    return out


@pytest.fixture(scope="module")
def ort_bundle(digits_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits CNN's ONNX as an ONNX Runtime bundle (cheap: the profile is under test here, not the build)."""
    out = tmp_path_factory.mktemp("profile-ort") / "ort"
    out.mkdir()
    shutil.copyfile(digits_onnx, out / "model.onnx")
    return _write_bundle(out, "onnxruntime", "model.onnx", "onnx", "fp32",
                         [{"name": "x", "shape": ["batch", 1, 8, 8], "dtype": "float32", "layout": "NCHW"}],
                         [{"name": "logits", "shape": ["batch", 10], "dtype": "float32", "layout": None}])


@pytest.fixture(scope="module")
def litert_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tflite_bundle(tmp_path_factory.mktemp("profile-litert") / "litert", lrn=False)


def _request(bundle: Path, **kw: Any) -> dict[str, Any]:
    return {"bundle": str(bundle), "warmup": 2, "runs": 20, "min_duration_s": 0.0, "threads": 2, **kw}


def _check_record(prof: dict[str, Any], engine: str) -> Profile:
    p = Profile.from_dict(prof)
    assert p.engine == engine and p.runs == 10 and p.ops
    assert {"ops", "placement", "overhead"} <= set(prof)
    assert {"fallback_ops", "fallback_share"} <= set(prof["placement"])
    for op in prof["ops"]:
        assert {"name", "type", "time_ms", "share", "placement"} <= set(op)
    assert len({o.name for o in p.ops}) == len(p.ops)  # one row per operator
    timed = [o.time_ms for o in p.ops if o.time_ms is not None]
    assert timed == sorted(timed, reverse=True)
    return p


def test_onnxruntime_profile_in_the_agent(ort_bundle: Path) -> None:
    plain = agent(_request(ort_bundle))
    res = agent(_request(ort_bundle, profile=10))
    assert plain.get("profile") is None
    assert len(res["samples_ms"]) == len(plain["samples_ms"]) == 20  # the profile adds no latency samples
    p = _check_record(res["profile"], "onnxruntime")
    types = {o.type for o in p.ops}
    assert types & {"Conv", "FusedConv"} and types & {"Gemm", "FusedGemm"} and "MaxPool" in types, types
    assert {o.placement for o in p.ops} == {"CPUExecutionProvider"}
    assert p.placement.fallback_count == 0 and p.placement.fallback_share == 0.0 and p.warning is None
    assert abs(sum(o.share for o in p.ops) - 1.0) < 1e-3
    over = p.overhead
    # a sequential executor: kernels run inside model_run, model_run inside Model.run
    assert 0 < over["ops_sum_ms"] <= over["engine_run_ms"] * 1.001 <= over["profiled_run_ms"] * 1.01
    assert over["latency_p50_ms"] == res["latency_ms"]["p50"] and over["ops_sum_vs_p50"] > 0
    print(f"\nORT digits fp32: per-op sum / p50 = {over['ops_sum_vs_p50']}")


def test_onnxruntime_nodes_left_on_the_cpu_provider_are_fallbacks(ort_bundle: Path) -> None:
    """The bundle asks for another execution provider first; ONNX Runtime assigns it no node (the Azure EP, in
    every onnxruntime wheel, takes none), so every node runs on the CPU provider: all fallbacks, warning."""
    import onnxruntime as ort

    assert "AzureExecutionProvider" in ort.get_available_providers()
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    opts = {"providers": ["AzureExecutionProvider", "CPUExecutionProvider"]}
    p = profile_bundle(ort_bundle, feeds={"x": x}, threads=2, runs=3, options=opts)
    assert p.placement.intended == "AzureExecutionProvider" and p.placement.counts == {"CPUExecutionProvider":
                                                                                        len(p.ops)}
    assert p.placement.fallback_count == len(p.ops) and p.placement.fallback_share == pytest.approx(1.0)
    assert all("not AzureExecutionProvider" in o.reason for o in p.ops)
    assert p.warning is not None and f"{len(p.ops)} of {len(p.ops)} ops" in p.warning


def test_openvino_int8_profile_exec_precision(ov_int8_bundle: Path) -> None:
    res = agent(_request(ov_int8_bundle, profile=10))
    p = _check_record(res["profile"], "openvino")
    convs = [o for o in p.ops if o.type == "Convolution"]
    assert len(convs) == 2 and all(o.precision == "I8" and o.placement.startswith("CPU ") for o in convs)
    assert any(o.type.startswith("FullyConnected") and o.precision == "I8" for o in p.ops)
    assert p.placement.intended.startswith("CPU int8") and p.placement.fallback_count == 0
    # per-op times are one run's (not the sum over the 10 profiled runs); OpenVINO counts each op in whole
    # microseconds, so on a 0.04 ms model the sum can exceed the run's wall time by a few µs per op
    assert p.overhead["ops_sum_ms"] <= p.overhead["profiled_run_ms"] * 2 + 0.001 * len(p.ops)
    assert p.overhead["fused_layers"] >= 1  # ReLU and friends fused into the convolutions
    print(f"\nOpenVINO digits int8: per-op sum / p50 = {p.overhead['ops_sum_vs_p50']}")


def test_litert_profile_placement_without_times(litert_bundle: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    res = agent(_request(litert_bundle, profile=10))
    p = _check_record(res["profile"], "litert")
    it = Interpreter(model_path=str(litert_bundle / "model.tflite"))
    it.allocate_tensors()
    model_ops = sorted(o["op_name"] for o in it._get_ops_details() if o["op_name"] != "DELEGATE")
    assert sorted(o.type for o in p.ops) == model_ops  # every model op once, no DELEGATE rows
    assert {o.placement for o in p.ops} == {"XNNPACK delegate"} and p.placement.fallback_count == 0
    assert all(o.time_ms is None and o.share is None for o in p.ops)
    assert "no per-op profiler" in p.time_ms_missing and p.overhead["ops_sum_ms"] is None
    assert p.overhead["profiled_run_ms"] > 0 and p.overhead["delegate_partitions"] == 1


def _write_bundle(dest: Path, engine: str, artifact: str, fmt: str, precision: str, inputs: list[dict[str, Any]],
                  outputs: list[dict[str, Any]]) -> Path:
    """The manifest for the model files already in ``dest`` (the schema the host's bundle writer writes)."""
    files = {f.name: {"sha256": sha256_file(f), "size": f.stat().st_size} for f in sorted(dest.iterdir())}
    raw = {"schema_version": 1, "format": "edgeify-bundle", "created_at": "2026-12-01T00:00:00+00:00",
           "target": {"name": "rpi5" if engine == "litert" else "x86-avx2"},
           "engine": {"name": engine, "artifact": artifact, "format": fmt, "options": {}}, "precision": precision,
           "inputs": inputs, "outputs": outputs, "files": files, "bundle_digest": files_digest(files),
           "labels": None, "preprocessing": None}
    (dest / "manifest.json").write_text(dumps(raw), encoding="utf-8")
    return dest


def _tflite_bundle(dest: Path, *, lrn: bool) -> Path:
    """A real TFLite CNN (conv, relu, max-pool, dense); with ``lrn`` a LOCAL_RESPONSE_NORMALIZATION (an op XNNPACK
    does not take) between the conv and a second 1x1 conv instead."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    w1 = tf.constant(rng.standard_normal((3, 3, 3, 8)).astype(np.float32))
    w2 = tf.constant(rng.standard_normal((1, 1, 8, 4)).astype(np.float32))
    dense = tf.constant(rng.standard_normal((32, 10)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32, name="image")])
    def f(x: Any) -> Any:
        y = tf.nn.relu(tf.nn.conv2d(x, w1, 1, "SAME"))
        if lrn:
            return {"features": tf.nn.conv2d(tf.nn.local_response_normalization(y, depth_radius=2), w2, 1, "SAME")}
        y = tf.nn.max_pool2d(y, 4, 4, "VALID")
        return {"features": tf.matmul(tf.reshape(y, [1, 32]), dense)}

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    dest.mkdir()
    (dest / "model.tflite").write_bytes(conv.convert())
    out = [1, 8, 8, 4] if lrn else [1, 10]
    return _write_bundle(dest, "litert", "model.tflite", "tflite", "fp32",
                         [{"name": "image", "shape": [1, 8, 8, 3], "dtype": "float32", "layout": "NHWC"}],
                         [{"name": "features", "shape": out, "dtype": "float32", "layout": None}])


def _int8_ir_with_float_layers(dest: Path) -> Path:
    """An int8 OpenVINO IR whose convolution has a quantized input but float weights, then a Softmax after a
    FakeQuantize: both are meant int8 by the IR, and the CPU plugin runs them in float."""
    import openvino as ov
    import openvino.opset13 as ops

    def fq(t: Any, lim: float, name: str) -> Any:
        lo, hi = ops.constant(np.float32(-lim)), ops.constant(np.float32(lim))
        return ops.fake_quantize(t, lo, hi, lo, hi, 256, name=name)

    x = ops.parameter([1, 8, 8, 8], np.float32, name="x")
    w = ops.constant(np.random.default_rng(0).standard_normal((8, 8, 3, 3)).astype(np.float32))
    conv = ops.convolution(fq(x, 4.0, "fq_in"), w, [1, 1], [1, 1], [1, 1], [1, 1], name="conv_float_weights")
    soft = ops.softmax(fq(conv, 20.0, "fq_mid"), 1, name="softmax_after_fq")
    dest.mkdir()
    ov.save_model(ov.Model([soft], [x], "fallback"), str(dest / "model.xml"), compress_to_fp16=False)
    spec = {"shape": [1, 8, 8, 8], "dtype": "float32", "layout": "NCHW"}
    return _write_bundle(dest, "openvino", "model.xml", "openvino-ir", "int8", [{"name": "x", **spec}],
                         [{"name": "y", **spec}])


def test_openvino_int8_layers_run_in_float_are_fallbacks(tmp_path: Path) -> None:
    bundle = _int8_ir_with_float_layers(tmp_path / "ov")
    x = np.random.default_rng(2).standard_normal((1, 8, 8, 8)).astype(np.float32)
    p = profile_bundle(bundle, feeds={"x": x}, threads=2, runs=5)
    by_name = {o.name: o for o in p.ops}
    conv, soft = by_name["conv_float_weights"], by_name["softmax_after_fq"]
    for op in (conv, soft):
        assert op.fallback and op.precision in ("FP32", "BF16", "FP16") and "int8 layer" in op.reason, op
    assert {o.name for o in p.ops if o.fallback} == {"conv_float_weights", "softmax_after_fq"}
    assert p.placement.fallback_count == 2 and 0 < p.placement.fallback_share <= 1
    if p.placement.fallback_share >= 0.2:
        assert p.warning is not None and "conv_float_weights" in p.warning


def test_placement_warning_for_an_op_xnnpack_leaves(tmp_path: Path) -> None:
    bundle = _tflite_bundle(tmp_path / "lrn", lrn=True)
    x = np.random.default_rng(1).standard_normal((1, 8, 8, 3)).astype(np.float32)
    p = profile_bundle(bundle, feeds={"image": x}, threads=2, runs=3)
    by_type = {o.type: o for o in p.ops}
    assert sorted(by_type) == ["CONV_2D", "LOCAL_RESPONSE_NORMALIZATION"] and len(p.ops) == 3
    lrn = by_type["LOCAL_RESPONSE_NORMALIZATION"]
    assert lrn.fallback and lrn.placement == "LiteRT built-in kernels" and "XNNPACK" in lrn.reason
    assert [o.placement for o in p.ops if o.type == "CONV_2D"] == ["XNNPACK delegate"] * 2
    assert p.placement.fallback_count == 1 and p.placement.fallback_ops[0]["type"] == lrn.type
    assert p.overhead["delegate_partitions"] == 2  # XNNPACK split around the LRN
    assert p.warning is not None and "1 of 3 ops" in p.warning and lrn.name in p.warning
    # without XNNPACK nothing is a fallback: the bundle asked for the built-in kernels
    q = profile_bundle(bundle, feeds={"image": x}, threads=2, runs=3, options={"xnnpack": False})
    assert q.placement.fallback_count == 0 and q.warning is None
    assert {o.placement for o in q.ops} == {"LiteRT built-in kernels"}


def test_tensorrt_layer_profile_from_the_recorded_trtexec_run() -> None:
    from edgeify_runtime.profile import build_profile
    from edgeify_runtime.profile.tensorrt import rows_from_profile

    raw = json.loads((TRTEXEC_DATA / "trt8.5.2_jetson-orin_int8_qdq_profile.json").read_text())
    parsed = parse_profile(raw)
    assert parsed["iterations"] == 11 and len(parsed["layers"]) == 12
    conv = next(la for la in parsed["layers"] if la["name"].endswith("/backbone/conv1/Conv"))
    assert conv["average_ms"] == pytest.approx(59.7861) and conv["percentage"] == pytest.approx(14.8053)
    assert conv["type"] is None and conv["precision"] is None  # built with layer names only
    p = build_profile("tensorrt", "trtexec", 11, rows_from_profile(parsed, "TensorRT GPU"), "TensorRT GPU")
    assert p.ops[0].name.startswith("{ForeignNode[") and p.ops[0].type == "ForeignNode"
    assert p.ops[1].name == conv["name"]
    # trtexec's percentages are of its whole profile; this excerpt keeps 12 layers, so compare ratios
    assert p.ops[0].share / p.ops[1].share == pytest.approx(28.0299 / 14.8053, rel=1e-3)
    assert any(o.type == "Reformat" for o in p.ops) and p.placement.fallback_count == 0
