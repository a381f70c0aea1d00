"""Helpers shared by the host-side tests (imported as `_kit`; conftest modules are not importable by name
because tests/runtime has its own conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

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
