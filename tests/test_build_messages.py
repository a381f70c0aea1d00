"""Build-side messages that point the right way (issue 17 item 13): the real engine, no staging paths, a fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from _kit import run_cli


def _custom_op_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("FancyRelu", ["x"], ["y"], domain="com.example")], "custom",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(("engine", "runtime"), [("openvino", "openvino"), ("onnxruntime", "onnxruntime")])
def test_custom_op_names_the_real_engine_and_no_staging_path(tmp_path: Path, engine: str, runtime: str) -> None:
    model = _custom_op_model(tmp_path / "custom.onnx")
    res = run_cli("build", str(model), "--target", "x86", "--engine", engine, "--no-latency",
                  "-o", str(tmp_path / "out"))
    assert res.returncode == 8, res.stderr
    assert "com.example::FancyRelu" in res.stderr and f"{runtime} (engine '{engine}'" in res.stderr
    assert ".edgeify-staging" not in res.stderr and "fix:" in res.stderr
    if engine == "openvino":
        assert "ONNX Runtime" not in res.stderr
    assert not (tmp_path / "out").exists()
