"""OpenVINO: an IR with a dynamic batch is compiled static for batch 1 at load (the CPU plugin runs a static
shape faster, benchmarks/engine_overhead.py), the next distinct shapes get static compiles of their own on first
use, and every other shape still runs on one dynamic compile: what a loaded model accepts does not change. Runs go
through start_async + wait (as benchmark_app): their outputs are copies."""

from __future__ import annotations

import edgeify_runtime as er
import numpy as np
import pytest
from edgeify_runtime import InputSignatureError

pytest.importorskip("openvino", reason="openvino is an optional engine; CI installs it")


def _x(batch: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(batch).standard_normal((batch, 8)).astype(np.float32)}


def _shape(compiled) -> str:
    return str(compiled.inputs[0].get_partial_shape())


def test_dynamic_batch_ir_compiles_static_shapes_and_still_accepts_every_batch(kit) -> None:
    bundle = kit.ov_bundle("gemm")
    with er.load(bundle, threads=1) as model:
        ad = model._adapter
        assert _shape(ad.compiled_model) == "[1,8]"  # static at load: batch 1, what bench and serve feed
        assert ad._dynamic is None
        want = {b: kit.reference("gemm", _x(b))["y"] for b in (1, 3, 5, 7)}
        np.testing.assert_allclose(model.run(_x(1))["y"], want[1], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(model.run(_x(3))["y"], want[3], rtol=1e-4, atol=1e-5)
        assert _shape(ad.compiled_model) == "[3,8]" and len(ad._shaped) == 2  # its own static compile
        for b in (5, 7, 1, 3):  # beyond static_shapes (2): one dynamic compile serves every other batch
            np.testing.assert_allclose(model.run(_x(b))["y"], want[b], rtol=1e-4, atol=1e-5)
        assert len(ad._shaped) == 2 and ad._dynamic is not None
        assert _shape(ad._dynamic[0].get_compiled_model()) == "[?,8]"
        with pytest.raises(InputSignatureError, match="'x'"):
            model.run({"x": np.zeros((2, 3), np.float32)})
        kept = model.run(_x(1))["y"]  # outputs are copies (start_async + wait): the next run does not change them
        model.run({"x": np.ones((1, 8), np.float32) * 100})
        np.testing.assert_allclose(kept, want[1], rtol=1e-4, atol=1e-5)


def test_static_shapes_0_keeps_one_dynamic_compile_and_the_option_is_checked(kit, tmp_path) -> None:
    bundle = kit.ov_bundle("gemm", options={"static_shapes": 0})
    with er.load(bundle, threads=1) as model:
        assert _shape(model._adapter.compiled_model) == "[?,8]"
        assert model.run(_x(4))["y"].shape == (4, 4) and model._adapter._shaped == {}
    from edgeify_runtime.engines import check_bundle_options
    from edgeify_runtime.errors import BundleError

    check_bundle_options("openvino", {"static_shapes": 3})
    with pytest.raises(BundleError, match="static_shapes"):
        check_bundle_options("openvino", {"static_shapes": "many"})
