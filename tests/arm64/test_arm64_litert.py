"""rpi5 LiteRT bundles built on this x86 host, deployed by the real deployer to the emulated aarch64 device (a Pi 5
stand-in with ai-edge-litert's aarch64 wheel), give the host's answers there: ARM XNNPACK kernels, the NCHW<->NHWC
transposes of an onnx2tf model and the adapter's int8 quantization of a PT2E model, on aarch64.

The device's Python runs with ``QEMU_CPU=cortex-a76``, the Pi 5's core. Under qemu's default CPU ("max": i8mm,
SVE... in the hardware capabilities, while the device's /proc/cpuinfo reads like an A76) XNNPACK's int8 kernels
gave wrong answers (digits: 3 of 8 argmaxes right, for litert-torch and onnx2tf int8 models alike; fp32,
int8-dynamic and int16x8 exact; int8 without XNNPACK exact), and with those same int8 models on cortex-a76 all
8 match: an emulator artifact, which this CPU model avoids."""

from __future__ import annotations

import json
from pathlib import Path

import edgeify_runtime
import numpy as np
import pytest
from edgeify.bench import outputs_on_device
from edgeify.build import build
from edgeify.deploy.connect import open_site
from edgeify.deploy.deployer import deploy

pytestmark = pytest.mark.arm64  # every test here starts the emulated arm64 device


@pytest.mark.parametrize(("source_kind", "precision"), [("onnx", "fp32"), ("pt2", "int8")])
def test_digits_litert_bundle_matches_host_on_arm64(pi5_device, digits, digits_onnx, tmp_path: Path,
                                                    source_kind: str, precision: str) -> None:
    bundle = tmp_path / "bundle"
    source = digits["model"] if source_kind == "pt2" else digits_onnx
    res = build(source, target="rpi5", precision=precision, calib=digits["calib"], out=bundle,
                measure_latency=False)
    with np.load(digits["eval"]) as z:
        x = z["x"][3:4]  # the .tflite has batch 1: the agent runs its inputs once
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, x=x)
    with open_site(pi5_device) as site:
        report = deploy(site, bundle, device=pi5_device)  # an rpi5 bundle on an rpi5 device: no --force
        record, out_path = outputs_on_device(site, report, inputs, tmp_path / "fetched")
        result = record.to_dict()
    assert result["fingerprint"]["arch"] == "aarch64"
    assert result["engine"]["name"] == "litert" and result["engine"]["module"] == "ai_edge_litert"
    name = res.manifest.outputs[0].name
    with np.load(out_path, allow_pickle=False) as z:
        got = z[name]
    with edgeify_runtime.load(bundle) as model:
        ref = model.run({"x": x})[name]
    diff = float(np.abs(got - ref).max())
    print(json.dumps({"bundle": f"digits {source_kind} litert {precision}", "max_abs_diff_host_vs_arm64": diff,
                      "agent_p50_ms": result["latency_ms"]["p50"]}))
    assert got.shape == ref.shape == (1, 10) and got.argmax() == ref.argmax()
    if precision == "fp32":
        assert diff <= 1e-4 * float(np.abs(ref).max()) + 1e-5
    else:  # the same int8 model: requantization may round one step differently on ARM
        assert diff <= 0.05 * float(np.abs(ref).max())


@pytest.mark.parametrize("precision", ["fp32"])
def test_onnx_transformer_litert_bundle_matches_host_on_arm64(pi5_device, tmp_path: Path, precision: str) -> None:
    """A ViT exported to ONNX (examples/models/vit_tiny.py: LayerNorm, softmax attention, GELU) takes the ONNX ->
    PyTorch -> litert-torch route; its rpi5 bundle gives the host's answers on aarch64."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("edgeify_example_vit_tiny_arm64", Path(__file__).parents[2] /
                                                  "examples" / "models" / "vit_tiny.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    onnx_path = mod.export_onnx(mod.vit_tiny(seed=3), tmp_path / "vit.onnx", opset=18)
    bundle = tmp_path / "bundle"
    res = build(onnx_path, target="rpi5", precision=precision, out=bundle, measure_latency=False)
    assert res.manifest.facts["tflite"]["details"]["route"] == "onnx2torch"
    x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "inputs.npz", x=x)
    with open_site(pi5_device) as site:
        report = deploy(site, bundle, device=pi5_device)
        record, out_path = outputs_on_device(site, report, tmp_path / "inputs.npz", tmp_path / "fetched")
    assert record.to_dict()["fingerprint"]["arch"] == "aarch64"
    name = res.manifest.outputs[0].name
    with np.load(out_path, allow_pickle=False) as z:
        got = z[name]
    with edgeify_runtime.load(bundle) as model:
        ref = model.run({"x": x})[name]
    assert got.shape == ref.shape == (1, 10)
    assert float(np.abs(got - ref).max()) <= 1e-4 * float(np.abs(ref).max()) + 1e-5


def test_onnx_text_encoder_int8_litert_bundle_agrees_with_host_and_benchmarks_on_arm64(pi5_device,
                                                                                       tmp_path: Path) -> None:
    """A small text encoder of our own (token embedding, PyTorch's encoder layers, LayerNorm; int64 ids) exported
    to ONNX, built for rpi5 int8 on --calib (the route in the manifest): on aarch64 it gives the host's answers,
    and the on-device agent benchmarks it (the result carries the device's fingerprint)."""
    import importlib.util
    import sys

    import torch
    from edgeify.bench import BenchSettings, bench

    spec = importlib.util.spec_from_file_location("edgeify_transformers_models_arm64",
                                                  Path(__file__).parents[1] / "test_transformers_tflite.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    net, name, data = mod._models()["text"]
    onnx_path = tmp_path / "text.onnx"
    torch.onnx.export(net, (torch.from_numpy(data[:1]),), str(onnx_path), input_names=[name], output_names=["y"],
                      external_data=False)
    np.savez(tmp_path / "calib.npz", **{name: data})
    bundle = tmp_path / "bundle"
    res = build(onnx_path, target="rpi5", precision="int8", calib=tmp_path / "calib.npz", out=bundle,
                measure_latency=False)
    assert res.manifest.facts["tflite"]["details"]["route"]  # the route taken is recorded
    x = data[:1]
    np.savez(tmp_path / "inputs.npz", **{name: x})
    with open_site(pi5_device) as site:
        report = deploy(site, bundle, device=pi5_device)
        record, out_path = outputs_on_device(site, report, tmp_path / "inputs.npz", tmp_path / "fetched")
    assert record.to_dict()["fingerprint"]["arch"] == "aarch64"
    out_name = res.manifest.outputs[0].name
    with np.load(out_path, allow_pickle=False) as z:
        got = z[out_name]
    with edgeify_runtime.load(bundle) as model:
        ref = model.run({name: x})[out_name]
    assert got.shape == ref.shape == (1, 4) and got.argmax() == ref.argmax()
    assert float(np.abs(got - ref).max()) <= 0.05 * float(np.abs(ref).max()) + 1e-4  # one int8 step at most
    quick = BenchSettings(warmup=2, runs=10, min_duration_s=0.0, max_duration_s=120.0, threads=1)
    result = bench(bundle, pi5_device, settings=quick)[0].unwrap().to_dict()
    assert result["fingerprint"]["arch"] == "aarch64" and result["latency_ms"]["p50"] > 0
    print(json.dumps({"bundle": "text encoder onnx litert int8", "route": res.manifest.facts["tflite"]["details"]
                      ["route"], "max_abs_diff_host_vs_arm64": float(np.abs(got - ref).max()),
                      "device_p50_ms": result["latency_ms"]["p50"]}))
