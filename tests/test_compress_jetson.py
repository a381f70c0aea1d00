"""Compression for Jetson (issue 25): a pruned + distilled + QAT-fine-tuned model goes through the Jetson target's
own int8 route, TensorRT's explicit quantization: symmetric int8 Q/DQ in the ONNX (every zero point 0), checked on
the host by the parity gate (ONNX Runtime runs the same ONNX the device builds its engine from). The engine plan
itself is built on the device (``where = "device"``), which this host test does not reach.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_compress import _request, cz  # noqa: F401  (the module fixture: trained digits CNN + data)


@pytest.mark.slow
def test_pruned_qat_model_gets_symmetric_qdq_for_tensorrt(cz: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    import onnx
    from edgeify import build
    from edgeify.compress.step import CompressionFacts
    from edgeify.steps.facts import facts_of
    from onnx import numpy_helper

    req = _request(cz, tmp_path / "jetson", precision="int8", train=str(cz["train"]), prune=0.5, distill=True,
                   qat=True, epochs=2).model_copy(update={"target": "jetson-orin-nano", "engine": "tensorrt"})
    res = build(req)
    assert res.manifest.engine.name == "tensorrt" and res.validation.passed  # host parity gate on the Q/DQ ONNX
    model = onnx.load(str(tmp_path / "jetson" / "model.onnx"))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    zero_points = [init[n.input[2]] for n in qdq if len(n.input) > 2 and n.input[2] in init]
    assert qdq and zero_points and all(z.dtype.name == "int8" and not z.any() for z in zero_points)  # symmetric
    producers = {o: n for n in model.graph.node for o in n.output}
    widths = []
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        dq = producers[conv.input[1]]  # weights: int8 initializer -> DequantizeLinear -> Conv
        assert dq.op_type == "DequantizeLinear" and init[dq.input[0]].dtype.name == "int8"
        widths.append(init[dq.input[0]].shape[0])
    assert sorted(widths) == [8, 16]  # half of 16 and 32 output channels: the pruned shapes reach TensorRT
    facts = facts_of(res.manifest, CompressionFacts)
    assert facts.steps == ("prune", "distill", "qat") and facts.accuracy["against"] == "the original source model"
    assert "engine" in [s["id"] for s in res.manifest.raw.get("device_steps", [])]  # plan built on the Jetson
