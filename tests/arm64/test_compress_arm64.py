"""A compressed model (pruned + distilled + QAT, issue 25) built for jetson-orin-nano int8 runs on the emulated
aarch64 device and gives the host's answers: the Jetson target's symmetric int8 Q/DQ ONNX, on the ONNX Runtime
fallback engine (TensorRT -> CUDA -> CPU providers; the device's CPU provider here: no NVIDIA GPU, so no TensorRT
engine is built or run, as in test_jetson_arm64.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import edgeify_runtime
import numpy as np
import pytest
from edgeify.bench import outputs_on_device
from edgeify.deploy.connect import open_site
from edgeify.deploy.deployer import deploy
from test_compress import _request, cz  # noqa: F401  (tests/: the trained digits CNN fixture and its data)

pytestmark = pytest.mark.arm64  # starts the emulated arm64 device


def test_compressed_jetson_int8_bundle_matches_host_on_arm64(jetson_device, cz: dict[str, Path],  # noqa: F811
                                                             tmp_path: Path) -> None:
    import onnx
    from edgeify import build
    from onnx import numpy_helper

    device = jetson_device
    bundle = tmp_path / "jetson-compressed"
    req = _request(cz, bundle, precision="int8", train=str(cz["train"]), prune=0.5, distill=True, qat=True,
                   epochs=2).model_copy(update={"target": "jetson-orin-nano", "engine": "onnxruntime"})
    res = build(req)
    assert res.manifest.engine.options["providers"][0] == "TensorrtExecutionProvider"
    model = onnx.load(str(bundle / res.manifest.engine.artifact))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_points = [init[n.input[2]] for n in model.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in init]
    assert zero_points and all(not z.any() for z in zero_points)  # symmetric, as TensorRT takes it
    with np.load(cz["eval"]) as z:
        x = z["x"][:64]
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, x=x)
    with open_site(device) as site:
        report = deploy(site, bundle, device=device)
        record, out_path = outputs_on_device(site, report, inputs, tmp_path / "fetched")
        result = record.to_dict()
    assert result["fingerprint"]["arch"] == "aarch64"
    with np.load(out_path, allow_pickle=False) as z:
        got = next(iter(z.values()))
    with edgeify_runtime.load(bundle, options={"graph_optimization_level": "basic"}) as m:
        ref = next(iter(m.run({"x": x}).values()))
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    print(json.dumps({"compressed jetson int8 on arm64": {"top1_agreement": agree,
                                                          "max_abs": float(np.abs(got - ref).max())}}))
    assert agree >= 0.98
