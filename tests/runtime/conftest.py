"""Fixtures for the device-side tests: tiny real ONNX models, real bundles written per the manifest schema.

Tests may import onnx and openvino (to build artifacts); the runtime package under test may not.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
RUNTIMES = REPO / "runtimes"

if importlib.util.find_spec("edgeify_runtime") is None:  # not installed: test the source tree
    sys.path.insert(0, str(RUNTIMES))

from edgeify_runtime.manifest import dumps, files_digest, sha256_file  # noqa: E402

OPSET = 17
IR_VERSION = 8  # readable by every onnxruntime/openvino release we support

# name -> (inputs, outputs) as manifest TensorSpec dicts; the ONNX graphs are built in _build_* below
SIGNATURES: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {
    "gemm": ([{"name": "x", "shape": ["batch", 8], "dtype": "float32", "layout": "NC"}],
             [{"name": "y", "shape": ["batch", 4], "dtype": "float32", "layout": "NC"}]),
    "conv": ([{"name": "image", "shape": [1, 3, 8, 8], "dtype": "float32", "layout": "NCHW"}],
             [{"name": "features", "shape": [1, 4, 8, 8], "dtype": "float32", "layout": "NCHW"}]),
    # the artifact takes and returns NHWC; callers use NCHW (engine_layout differs from layout)
    "conv_nhwc": ([{"name": "image", "shape": [1, 3, 8, 8], "dtype": "float32", "layout": "NCHW",
                    "engine_layout": "NHWC"}],
                  [{"name": "features", "shape": [1, 4, 8, 8], "dtype": "float32", "layout": "NCHW",
                    "engine_layout": "NHWC"}]),
    # two inputs sharing the "batch" dim, an int64 input, and outputs listed in another order than the graph's
    "two_input": ([{"name": "x", "shape": ["batch", 4], "dtype": "float32"},
                   {"name": "k", "shape": ["batch", 4], "dtype": "int64"}],
                  [{"name": "z", "shape": ["batch", 4], "dtype": "float32"},
                   {"name": "y", "shape": ["batch", 4], "dtype": "float32"}]),
}


def _weights(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _finish(graph: Any) -> Any:
    from onnx import checker, helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edgeify-tests")
    model.ir_version = IR_VERSION
    checker.check_model(model)
    return model


def _build_gemm() -> Any:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(_weights(1, 8, 4), "W")
    b = numpy_helper.from_array(_weights(2, 4), "B")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "gemm_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[w, b])
    return _finish(graph)


def _conv_nodes(src: str, dst: str) -> list[Any]:
    from onnx import helper

    return [helper.make_node("Conv", [src, "W", "B"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], [dst])]


def _build_conv() -> Any:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        _conv_nodes("image", "features"), "conv_relu",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 4, 8, 8])],
        initializer=[numpy_helper.from_array(_weights(3, 4, 3, 3, 3), "W"),
                     numpy_helper.from_array(_weights(4, 4), "B")])
    return _finish(graph)


def _build_conv_nhwc() -> Any:
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Transpose", ["image"], ["image_nchw"], perm=[0, 3, 1, 2]),
             *_conv_nodes("image_nchw", "features_nchw"),
             helper.make_node("Transpose", ["features_nchw"], ["features"], perm=[0, 2, 3, 1])]
    graph = helper.make_graph(
        nodes, "conv_relu_nhwc",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 8, 8, 3])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 8, 8, 4])],
        initializer=[numpy_helper.from_array(_weights(3, 4, 3, 3, 3), "W"),
                     numpy_helper.from_array(_weights(4, 4), "B")])
    return _finish(graph)


def _build_two_input() -> Any:
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["x", "kf"], ["y"]),
             helper.make_node("Mul", ["x", "x"], ["z"])]
    graph = helper.make_graph(
        nodes, "two_input",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("k", TensorProto.INT64, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 4])])
    return _finish(graph)


_BUILDERS: dict[str, Callable[[], Any]] = {
    "gemm": _build_gemm, "conv": _build_conv, "conv_nhwc": _build_conv_nhwc, "two_input": _build_two_input,
}


def write_bundle(dest: Path, payload: dict[str, Path], *, engine: str, artifact: str,
                 inputs: list[dict[str, Any]], outputs: list[dict[str, Any]], precision: str = "fp32",
                 min_version: str | None = None, options: dict[str, Any] | None = None,
                 target: str = "x86-avx2") -> Path:
    """Write a bundle directory the way the host toolchain does: payload files, sha256 table, digest."""
    dest.mkdir(parents=True)
    files: dict[str, dict[str, Any]] = {}
    for rel, src in payload.items():
        shutil.copyfile(src, dest / rel)
        files[rel] = {"sha256": sha256_file(dest / rel), "size": (dest / rel).stat().st_size}
    raw = {
        "schema_version": 1,
        "format": "edgeify-bundle",
        "created_at": "2026-11-24T10:00:00+00:00",
        "target": {"name": target, "family": "x86", "arch": "x86_64"},
        "engine": {"name": engine, "min_version": min_version, "artifact": artifact,
                   "format": "onnx" if artifact.endswith(".onnx") else "openvino-ir",
                   "options": options or {}},
        "precision": precision,
        "inputs": inputs,
        "outputs": outputs,
        "files": files,
        "bundle_digest": files_digest(files),
        "labels": None,
        "preprocessing": None,
    }
    (dest / "manifest.json").write_text(dumps(raw), encoding="utf-8")
    (dest / "report.md").write_text("# test bundle\n", encoding="utf-8")
    return dest


def rewrite_manifest(bundle: Path, mutate: Callable[[dict[str, Any]], None], *,
                     redigest: bool = True) -> None:
    """Edit a bundle's manifest in place; by default recompute bundle_digest so only the edit is wrong."""
    path = bundle / "manifest.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    mutate(raw)
    if redigest:
        raw["bundle_digest"] = files_digest(raw["files"])
    path.write_text(dumps(raw), encoding="utf-8")


class BundleKit:
    """Builds (and caches per session) the test models, and writes bundles into a test's tmp dir."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.tmp: Path = cache
        self._count = 0

    rewrite_manifest = staticmethod(rewrite_manifest)
    write_bundle = staticmethod(write_bundle)

    def onnx(self, model: str) -> Path:
        path = self.cache / f"{model}.onnx"
        if not path.exists():
            import onnx

            onnx.save(_BUILDERS[model](), str(path))
        return path

    def ir(self, model: str) -> Path:
        """The OpenVINO IR (.xml + .bin, fp32 weights) converted from the ONNX model."""
        xml = self.cache / "ir" / f"{model}.xml"
        if not xml.exists():
            import openvino as ov

            xml.parent.mkdir(exist_ok=True)
            ov.save_model(ov.convert_model(str(self.onnx(model))), str(xml), compress_to_fp16=False)
        return xml

    def signature(self, model: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        inputs, outputs = SIGNATURES[model]
        return json.loads(json.dumps(inputs)), json.loads(json.dumps(outputs))

    def _dest(self, name: str) -> Path:
        self._count += 1
        return self.tmp / f"{name}-{self._count}"

    def ort_bundle(self, model: str = "gemm", **kw: Any) -> Path:
        inputs, outputs = self.signature(model)
        kw.setdefault("min_version", "1.16.0")
        return write_bundle(self._dest(f"{model}-ort"), {"model.onnx": self.onnx(model)},
                            engine="onnxruntime", artifact="model.onnx", inputs=inputs, outputs=outputs, **kw)

    def ov_bundle(self, model: str = "gemm", **kw: Any) -> Path:
        inputs, outputs = self.signature(model)
        xml = self.ir(model)
        kw.setdefault("min_version", "2024.0")
        payload = {"model.xml": xml, "model.bin": xml.with_suffix(".bin")}
        return write_bundle(self._dest(f"{model}-ov"), payload,
                            engine="openvino", artifact="model.xml", inputs=inputs, outputs=outputs, **kw)

    def reference(self, model: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """ONNX Runtime run directly on the ONNX file: the reference outputs, by graph output name."""
        import onnxruntime as ort

        sess = ort.InferenceSession(str(self.onnx(model)), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, feeds), strict=True))


@pytest.fixture(scope="session")
def _kit_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runtime-models")


@pytest.fixture
def kit(_kit_cache: Path, tmp_path: Path) -> BundleKit:
    k = BundleKit(_kit_cache)
    k.tmp = tmp_path
    return k


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for running the agent in a child process with this source tree importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(RUNTIMES), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("EDGEIFY_DEBUG", None)
    env.update(extra)
    return env


@pytest.fixture
def agent_env() -> Callable[..., dict[str, str]]:
    return subprocess_env
