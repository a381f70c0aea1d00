"""The facade against real ONNX Runtime sessions: outputs, signature checks, integrity, layouts, lifetimes."""

from __future__ import annotations

import edgeify_runtime as er
import numpy as np
import pytest
from edgeify_runtime import BundleError, EngineMissingError, InputSignatureError
from edgeify_runtime.fingerprint import default_threads


def _x(batch: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 8)).astype(np.float32)


def test_outputs_equal_onnxruntime_reference(kit):
    x = _x(5)
    with er.load(kit.ort_bundle("gemm")) as model:
        out = model.run({"x": x})
    ref = kit.reference("gemm", {"x": x})
    assert list(out) == ["y"]
    np.testing.assert_array_equal(out["y"], ref["y"])
    # and the math itself, so a wrong reference could not hide a wrong model
    import onnx
    from onnx import numpy_helper

    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(kit.onnx("gemm"))).graph.initializer}
    np.testing.assert_allclose(out["y"], np.maximum(x @ init["W"] + init["B"], 0), rtol=1e-5, atol=1e-6)


def test_signature_engine_and_threads(kit):
    model = er.load(kit.ort_bundle("gemm"))
    try:
        assert model.engine_name == "onnxruntime"
        assert model.engine_version == __import__("onnxruntime").__version__
        assert model.engine_module == "onnxruntime"
        assert [t.name for t in model.inputs] == ["x"] and model.inputs[0].shape == ("batch", 8)
        assert [t.name for t in model.outputs] == ["y"] and model.outputs[0].dynamic_axes == (0,)
        assert model.threads == default_threads() >= 1
        assert model.manifest.precision == "fp32" and model.manifest.target == "x86-avx2"
    finally:
        model.close()
    assert model.closed
    with pytest.raises(ValueError, match="closed"):
        model.run(_x())
    model.close()  # idempotent


def test_dynamic_batch_and_single_array_feed(kit):
    with er.load(kit.ort_bundle("gemm"), threads=1) as model:
        assert model.threads == 1
        for batch in (1, 7):
            x = _x(batch, seed=batch)
            out = model.run(x)  # a single array for a single-input model
            assert out["y"].shape == (batch, 4)
            np.testing.assert_array_equal(out["y"], model.run({"x": x})["y"])


def test_outputs_in_manifest_order_and_int_input(kit):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    k = rng.integers(0, 5, (2, 4))
    with er.load(kit.ort_bundle("two_input")) as model:
        out = model.run({"k": k, "x": x})
    assert list(out) == ["z", "y"]  # the manifest's order, not the graph's (y, z)
    np.testing.assert_array_equal(out["y"], x + k.astype(np.float32))
    np.testing.assert_array_equal(out["z"], x * x)


def test_safe_casts_are_applied(kit):
    x64 = _x(2).astype(np.float64)
    with er.load(kit.ort_bundle("gemm")) as model:
        out64 = model.run({"x": x64})["y"]
        out32 = model.run({"x": x64.astype(np.float32)})["y"]
        np.testing.assert_array_equal(out64, out32)
        # python lists are accepted as array-likes
        np.testing.assert_array_equal(model.run({"x": x64.tolist()})["y"], out32)
        # ints are cast to float ('same_kind' allows int -> float)
        assert model.run({"x": np.ones((1, 8), dtype=np.int32)})["y"].dtype == np.float32


@pytest.mark.parametrize(("feeds", "needle"), [
    ({"x": np.zeros((2, 4), np.float32), "k": np.zeros((2, 4), np.float32)}, "'k'"),  # float -> int64 refused
    ({"x": np.zeros((2, 4), np.complex64), "k": np.zeros((2, 4), np.int64)}, "'x'"),  # complex -> float
])
def test_unsafe_dtype_is_an_input_signature_error(kit, feeds, needle):
    with er.load(kit.ort_bundle("two_input")) as model, pytest.raises(InputSignatureError) as info:
        model.run(feeds)
    assert needle in str(info.value) and "dtype" in str(info.value)
    assert info.value.exit_code == 5


@pytest.mark.parametrize(("model_name", "feeds", "needles"), [
    ("gemm", {"x": np.zeros((2, 8, 1), np.float32)}, ["'x'", "rank 2"]),
    ("gemm", {"x": np.zeros((2, 5), np.float32)}, ["'x'", "dimension 1 must be 8"]),
    ("gemm", {"inp": np.zeros((2, 8), np.float32)}, ["'inp'", "missing input(s) 'x'"]),
    ("gemm", {"x": np.zeros((2, 8), np.float32), "extra": np.zeros(1)}, ["unknown input name(s) 'extra'"]),
    ("conv", {"image": np.zeros((1, 8, 8, 3), np.float32)}, ["'image'", "dimension 1 must be 3"]),
    ("two_input", {"x": np.zeros((2, 4), np.float32), "k": np.zeros((3, 4), np.int64)},
     ["'k'", "'batch'"]),
    ("two_input", np.zeros((2, 4), np.float32), ["2 inputs", "x, k"]),
])
def test_wrong_inputs_name_the_input(kit, model_name, feeds, needles):
    with er.load(kit.ort_bundle(model_name)) as model, pytest.raises(InputSignatureError) as info:
        model.run(feeds)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_engine_layout_is_transposed_both_ways(kit):
    x = np.random.default_rng(5).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with er.load(kit.ort_bundle("conv")) as nchw, er.load(kit.ort_bundle("conv_nhwc")) as nhwc:
        want = nchw.run({"image": x})["features"]
        got = nhwc.run({"image": x})["features"]  # caller uses NCHW; the artifact is NHWC
    assert got.shape == (1, 4, 8, 8) and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    ref = kit.reference("conv_nhwc", {"image": np.ascontiguousarray(x.transpose(0, 2, 3, 1))})["features"]
    np.testing.assert_allclose(got, ref.transpose(0, 3, 1, 2), rtol=1e-6, atol=1e-7)


def test_layout_permutation():
    from edgeify_runtime.session import layout_permutation

    assert layout_permutation("NCHW", "NHWC") == (0, 2, 3, 1)
    assert layout_permutation("NHWC", "NCHW") == (0, 3, 1, 2)
    assert layout_permutation("NCHW", "NCHW") is None and layout_permutation(None, "NHWC") is None
    with pytest.raises(BundleError):
        layout_permutation("NCHW", "NHWD")


@pytest.mark.parametrize("how", ["append", "flip"])
def test_tampered_model_file_is_refused(kit, how):
    bundle = kit.ort_bundle("gemm")
    path = bundle / "model.onnx"
    data = bytearray(path.read_bytes())
    if how == "append":
        data += b"\0"
    else:
        data[len(data) // 2] ^= 0xFF  # same size: only the sha256 can tell
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.onnx: (size|sha256)") as info:
        er.load(bundle)
    assert info.value.exit_code == 12


def test_missing_payload_file_and_missing_manifest(kit, tmp_path):
    bundle = kit.ort_bundle("gemm")
    (bundle / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx: missing"):
        er.load(bundle)
    with pytest.raises(BundleError, match=r"no manifest\.json"):
        er.load(tmp_path / "nowhere")


def test_edited_manifest_is_refused(kit):
    bundle = kit.ort_bundle("gemm")
    kit.rewrite_manifest(bundle, lambda m: m["files"]["model.onnx"].update(sha256="0" * 64), redigest=False)
    with pytest.raises(BundleError, match="bundle_digest"):
        er.load(bundle)


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../x", "~/x"])
@pytest.mark.parametrize("where", ["files", "artifact"])
def test_path_traversal_is_refused(kit, bad, where):
    bundle = kit.ort_bundle("gemm")

    def mutate(m):
        if where == "files":
            m["files"][bad] = {"sha256": "0" * 64, "size": 1}
        else:
            m["engine"]["artifact"] = bad

    kit.rewrite_manifest(bundle, mutate)
    with pytest.raises(BundleError, match="unsafe file name"):
        er.load(bundle, verify=False)


def test_min_version_newer_than_installed(kit):
    bundle = kit.ort_bundle("gemm", min_version="999.1")
    with pytest.raises(EngineMissingError) as info:
        er.load(bundle)
    assert "999.1" in str(info.value) and "onnxruntime" in str(info.value)
    assert "pip install --upgrade 'onnxruntime>=999.1'" in info.value.hint
    assert info.value.exit_code == 11


def test_engine_not_in_bundle_is_refused(kit):
    with pytest.raises(BundleError, match="built for engine 'onnxruntime'"):
        er.load(kit.ort_bundle("gemm"), engine="openvino")
    with er.load(kit.ort_bundle("gemm"), engine="onnxruntime") as model:
        assert model.engine_name == "onnxruntime"


def test_unknown_engine_in_manifest(kit):
    bundle = kit.ort_bundle("gemm")
    kit.rewrite_manifest(bundle, lambda m: m["engine"].update(name="onnxruntim"))
    with pytest.raises(EngineMissingError, match="Did you mean 'onnxruntime'"):
        er.load(bundle)


def test_engine_options(kit):
    bundle = kit.ort_bundle("gemm", options={"graph_optimization_level": "basic"})
    with er.load(bundle, options={"session_config": {"session.intra_op.allow_spinning": "0"}}) as model:
        assert model.run(_x(2))["y"].shape == (2, 4)
    with pytest.raises(BundleError, match="'turbo' \\(not an option a bundle may set\\)"):  # the allow-list
        er.load(kit.ort_bundle("gemm", options={"turbo": True}))
    with pytest.raises(BundleError, match="does not understand"):  # a caller's own option the engine lacks
        er.load(kit.ort_bundle("gemm"), options={"turbo": True})
    with pytest.raises(EngineMissingError, match="NoSuchExecutionProvider"):
        er.load(kit.ort_bundle("gemm"), options={"providers": ["NoSuchExecutionProvider"]})


def test_bad_threads_argument(kit):
    with pytest.raises(ValueError, match="threads"):
        er.load(kit.ort_bundle("gemm"), threads=0)


def test_verify_false_skips_hashing(kit):
    bundle = kit.ort_bundle("gemm")
    kit.rewrite_manifest(bundle, lambda m: m["files"]["model.onnx"].update(sha256="0" * 64))
    with pytest.raises(BundleError, match="sha256 mismatch"):
        er.load(bundle)
    with er.load(bundle, verify=False) as model:
        assert model.run(_x(1))["y"].shape == (1, 4)


def test_bad_dtype_or_layout_in_manifest(kit):
    bundle = kit.ort_bundle("gemm")
    kit.rewrite_manifest(bundle, lambda m: m["inputs"][0].update(dtype="float99"))
    with pytest.raises(BundleError, match="unknown dtype 'float99'"):
        er.load(bundle)
    bundle = kit.ort_bundle("gemm")
    kit.rewrite_manifest(bundle, lambda m: m["inputs"][0].update(layout="NCHW", engine_layout="NHWC"))
    with pytest.raises(BundleError, match="has shape"):  # rank 2 cannot be NCHW
        er.load(bundle)
