"""MobileNetV2 (random weights, defined in examples/models) for x86: int8 size and parity with real converters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _kit import REPO
from edgeify.build import build

MNV2 = f"{REPO}/examples/models/mobilenetv2.py:mobilenet_v2"


@pytest.mark.slow
def test_mobilenet_v2_int8_weights_at_most_30_percent_of_fp32(tmp_path: Path) -> None:
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((16, 3, 224, 224)).astype(np.float32))
    fp32 = build(MNV2, target="x86", precision="fp32", input_shapes=["1,3,224,224"], out=tmp_path / "fp32",
                 measure_latency=False)
    int8 = build(MNV2, target="x86", precision="int8", engine="onnxruntime", input_shapes=["1,3,224,224"],
                 calib=calib, out=tmp_path / "int8", measure_latency=False)
    size = lambda r: sum(f["size"] for f in r.manifest.files.values())  # noqa: E731
    assert size(int8) <= 0.30 * size(fp32), (size(int8), size(fp32))
    assert int8.engine == "onnxruntime" and int8.quantization.details["scheme"] == "U8S8"
    real = [o for o in int8.validation.outputs if o.inputs.startswith("real")]
    assert real and real[0].cosine is not None and real[0].cosine >= 0.98 and real[0].gated
    assert max(fp32.validation.max_abs().values()) <= 1e-4 * max(
        o.ref_max_abs or 0.0 for o in fp32.validation.outputs) + 1e-5
