"""The OpenVINO adapter on real IR converted from the test ONNX models; ONNX Runtime is the reference."""

from __future__ import annotations

import edgeify_runtime as er
import numpy as np
import pytest
from edgeify_runtime import BundleError, EngineMissingError, InputSignatureError

pytest.importorskip("openvino", reason="openvino is an optional engine; CI installs it")

RTOL = 1e-4
ATOL = 1e-5  # for values that are (nearly) zero, where a relative bound means nothing


def _feeds(model: str, batch: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch)
    if model == "gemm":
        return {"x": rng.standard_normal((batch, 8)).astype(np.float32)}
    if model == "two_input":
        return {"x": rng.standard_normal((batch, 4)).astype(np.float32), "k": rng.integers(0, 9, (batch, 4))}
    return {"image": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}


@pytest.mark.parametrize("model", ["gemm", "conv", "two_input"])
def test_openvino_matches_onnxruntime(kit, model):
    feeds = _feeds(model)
    with er.load(kit.ov_bundle(model), threads=1) as ov_model:
        assert ov_model.engine_name == "openvino" and ov_model.engine_module == "openvino"
        got = ov_model.run(feeds)
    with er.load(kit.ort_bundle(model), threads=1) as ort_model:
        want = ort_model.run(feeds)
    assert list(got) == list(want) == [t["name"] for t in kit.signature(model)[1]]
    for name in want:
        assert got[name].shape == want[name].shape and got[name].dtype == want[name].dtype
        np.testing.assert_allclose(got[name], want[name], rtol=RTOL, atol=ATOL, err_msg=name)


def test_openvino_dynamic_batch_and_version(kit):
    import openvino

    with er.load(kit.ov_bundle("gemm")) as model:
        assert er.engines.version_tuple(model.engine_version)[:2] == \
            er.engines.version_tuple(openvino.__version__)[:2]
        for batch in (1, 6):
            assert model.run(_feeds("gemm", batch))["y"].shape == (batch, 4)
        with pytest.raises(InputSignatureError, match="'x'"):
            model.run({"x": np.zeros((2, 3), np.float32)})


def test_openvino_output_names_fall_back_to_order(kit):
    """Converters may rename tensors: when no manifest name matches, outputs map by position."""
    bundle = kit.ov_bundle("gemm")
    kit.rewrite_manifest(bundle, lambda m: m["outputs"][0].update(name="scores"))
    feeds = _feeds("gemm")
    with er.load(bundle) as model:
        out = model.run(feeds)
    assert list(out) == ["scores"]
    np.testing.assert_allclose(out["scores"], kit.reference("gemm", feeds)["y"], rtol=RTOL, atol=ATOL)


def test_openvino_compile_config(kit):
    with er.load(kit.ov_bundle("conv"), threads=1, options={"config": {"ENABLE_CPU_PINNING": "NO"}}) as model:
        adapter = model._adapter
        assert adapter.config["INFERENCE_NUM_THREADS"] == "1"
        assert adapter.config["PERFORMANCE_HINT"] == "LATENCY" and adapter.config["NUM_STREAMS"] == "1"
        assert adapter.config["INFERENCE_PRECISION_HINT"] == "f32"  # fp32 bundle: no silent bf16/fp16
        assert str(adapter._compiled.get_property("INFERENCE_NUM_THREADS")) == "1"


def test_openvino_missing_weights_and_min_version(kit):
    bundle = kit.ov_bundle("gemm")
    (bundle / "model.bin").unlink()
    with pytest.raises(BundleError, match=r"model\.bin"):
        er.load(bundle, verify=False)
    with pytest.raises(EngineMissingError, match=r"openvino >= 9999\.0"):
        er.load(kit.ov_bundle("gemm", min_version="9999.0"))
    with pytest.raises(EngineMissingError, match="NPU9"):
        er.load(kit.ov_bundle("gemm"), options={"device": "NPU9"})
