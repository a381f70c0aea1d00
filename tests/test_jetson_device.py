"""On a REAL Jetson (never in CI: there is none). Run it by hand against a device in the devices file:

    edgeify devices add orin --host 192.168.1.60 --user nvidia --target jetson-orin-nano
    EDGEIFY_JETSON_DEVICE=orin python -m pytest -m device tests/test_jetson_device.py -s

It builds MobileNetV2 fp16 on this host, deploys it (the engine is built on the Jetson), benchmarks it through
the TensorRT adapter, checks the engine is reused on the second run, and compares the Jetson's outputs with the
host's. As of this writing it has never been run: edgeify's TensorRT code has not run on real hardware."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from _kit import REPO
from edgeify.build import build

MNV2 = f"{REPO}/examples/models/mobilenetv2.py:mobilenet_v2"


@pytest.mark.device
def test_mobilenet_v2_fp16_on_a_real_jetson(tmp_path: Path) -> None:
    name = os.environ.get("EDGEIFY_JETSON_DEVICE")
    if not name:
        pytest.skip("set EDGEIFY_JETSON_DEVICE to a Jetson in `edgeify devices list` (JetPack with TensorRT)")
    from edgeify.bench import BenchSettings, bench, outputs_on_device
    from edgeify.deploy.connect import open_site
    from edgeify.deploy.deployer import deploy
    from edgeify.deploy.inventory import Inventory

    device = Inventory().get(name)
    calib = tmp_path / "calib.npz"
    x = np.random.default_rng(0).standard_normal((8, 3, 224, 224)).astype(np.float32)
    np.savez(calib, x=x)
    bundle = tmp_path / "mnv2-fp16"
    build(MNV2, target=device.target or "jetson-orin-nano", precision="fp16", input_shapes=["1,3,224,224"],
          calib=calib, out=bundle, measure_latency=False)
    proto = BenchSettings(warmup=20, runs=200, min_duration_s=2.0, max_duration_s=120.0)
    first = bench(bundle, device, settings=proto, store=False)[0].unwrap().to_dict()
    assert first["engine"]["name"] == "tensorrt" and first["fingerprint"]["jetson"]["is_jetson"]
    (step,) = first["deploy"]["device_steps"]
    assert step["decision"] in ("built", "reused", "rebuilt")
    assert first["extra"]["engine_build"]["decision"] == "reused"  # deploy built it; the adapter found it
    if first["extra"]["trtexec"]["available"]:
        assert first["extra"]["trtexec"]["summary"]["gpu_compute_ms"]["median"] > 0
    second = bench(bundle, device, settings=proto, store=False)[0].unwrap().to_dict()
    assert second["deploy"]["device_steps"][0]["decision"] == "reused"
    with open_site(device) as site:
        report = deploy(site, bundle, device=device)
        inputs = tmp_path / "inputs.npz"
        np.savez(inputs, x=x[:1])
        _, out_path = outputs_on_device(site, report, inputs, tmp_path / "fetched")
    with np.load(out_path) as z:
        got = z["output"]
    with _host_reference(bundle) as ref_model:
        ref = ref_model.run({"x": x[:1]})["output"]
    print(json.dumps({"p50_ms": first["latency_ms"]["p50"], "trtexec": first["extra"].get("trtexec"),
                      "max_abs_vs_host": float(np.abs(got - ref).max())}))
    assert np.abs(got - ref).max() <= 1e-2 * np.abs(ref).max() + 1e-5


def _host_reference(bundle: Path):
    """The same ONNX on this host's CPU (the tensorrt bundle's artifact is the ONNX)."""
    import onnxruntime as ort

    class _Ref:
        def __init__(self) -> None:
            self.s = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])

        def run(self, feeds):
            return dict(zip([o.name for o in self.s.get_outputs()], self.s.run(None, feeds), strict=True))

        def __enter__(self):
            return self

        def __exit__(self, *a) -> None:
            self.s = None

    return _Ref()
