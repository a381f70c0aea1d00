"""``edgeify inspect`` (pipeline, op histogram, engine placement), per-op parity on a failed and a passing build,
and ``edgeify bench --profile`` as a user runs them (the real console script)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _kit import run_cli


def _overflow_onnx(path: Path) -> Path:
    """x -> MatMul with weights far beyond fp16's range (an activation of ~1e6) -> x1e-5 -> Relu -> MatMul."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((16, 32)) * 1e5).astype(np.float32), "W1"),
             numpy_helper.from_array(np.array(1e-5, np.float32), "S"),
             numpy_helper.from_array(rng.standard_normal((32, 4)).astype(np.float32), "W2")]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["big"], name="huge_matmul"),
             helper.make_node("Mul", ["big", "S"], ["scaled"], name="rescale"),
             helper.make_node("Relu", ["scaled"], ["act"], name="relu"),
             helper.make_node("MatMul", ["act", "W2"], ["y"], name="head")]
    graph = helper.make_graph(nodes, "overflow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_parity_failure_names_the_op_that_overflows_fp16(tmp_path: Path) -> None:
    src = _overflow_onnx(tmp_path / "overflow.onnx")
    out = tmp_path / "b16"
    proc = run_cli("build", str(src), "--target", "x86-avx2", "--engine", "onnxruntime", "--precision", "fp16",
                   "-o", str(out), timeout=300)
    assert proc.returncode == 9, proc.stderr[-3000:]  # ParityError
    err = proc.stderr
    assert "first divergent ops" in err and "huge_matmul" in err and "fp16 overflow" in err, err[-3000:]
    assert "looks like: precision" in err and "starting at huge_matmul (MatMul)" in err
    assert "downstream of huge_matmul" in err  # later ops are not blamed on their own
    assert "fp16 range" in err  # the hint says what to do about it
    assert not out.exists()
    # the same model in fp32 converts faithfully: no op diverges
    ok = run_cli("build", str(src), "--target", "x86-avx2", "--engine", "onnxruntime", "-o", str(tmp_path / "b32"),
                 "--no-latency", timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    par = run_cli("inspect", "--parity", str(tmp_path / "b32"), "--source", str(src), "--format", "json")
    assert par.returncode == 0, par.stderr[-2000:]
    table = json.loads(par.stdout)
    assert table["matched"] == 4 and table["divergent"] == [] and table["verdict"] is None


@pytest.fixture(scope="module")
def ort_bundle(digits_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeify.build import build

    out = tmp_path_factory.mktemp("inspect") / "digits-ort"
    build(digits_onnx, target="x86-avx2", precision="fp32", engine="onnxruntime", out=out, measure_latency=False)
    return out


def test_inspect_model_for_a_target(digits_onnx: Path) -> None:
    proc = run_cli("inspect", str(digits_onnx), "--target", "x86-avx2", "--engine", "openvino", "--format", "json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rep = json.loads(proc.stdout)
    assert rep["target"] == "x86-avx2" and rep["engine"] == "openvino" and rep["precision"] == "fp32"
    assert [s["id"] for s in rep["pipeline"]][-1] == "check" and rep["pipeline"][0]["input"] is None
    assert rep["op_histogram"]["Conv"] == 2 and rep["op_histogram"]["Gemm"] == 2
    er = rep["engine_report"]
    assert er["source"].startswith("openvino performance counters") and er["ops"] >= 4
    assert er["engine_types"]["Convolution"] == 2 and er["not_accelerated"] == []
    assert er["unsupported_on_cpu"] == []  # the CPU plugin's own query_model
    miss = run_cli("inspect", str(digits_onnx))
    assert miss.returncode == 2 and "--target" in miss.stderr


def test_inspect_parity_of_a_passing_bundle(ort_bundle: Path, digits_onnx: Path) -> None:
    proc = run_cli("inspect", "--parity", str(ort_bundle), "--source", str(digits_onnx))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "per-op parity:" in proc.stdout and "none diverges" in proc.stdout
    nosrc = run_cli("inspect", "--parity", str(ort_bundle))
    assert nosrc.returncode == 2 and "--source" in nosrc.stderr


def test_bench_profile_table_and_json(ort_bundle: Path) -> None:
    args = ("bench", str(ort_bundle), "--profile", "--no-store", "--runs", "5", "--min-duration", "0",
            "--warmup", "1")
    proc = run_cli(*args, "--top", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "top 3 of" in proc.stdout and "placement: intended CPUExecutionProvider" in proc.stdout
    assert "fallback: 0 op(s)" in proc.stdout and "per-op sum" in proc.stdout
    js = run_cli(*args, "--format", "json")
    assert js.returncode == 0, js.stderr[-2000:]
    res = json.loads(js.stdout)
    prof = res["profile"]
    assert prof["engine"] == "onnxruntime" and len(prof["ops"]) >= 5  # all ops, not just the top 3
    assert prof["placement"]["fallback_ops"] == [] and prof["overhead"]["latency_p50_ms"] == res["latency_ms"]["p50"]
    plain = run_cli("bench", str(ort_bundle), "--no-store", "--runs", "5", "--min-duration", "0", "--format", "json")
    assert json.loads(plain.stdout)["profile"] is None
