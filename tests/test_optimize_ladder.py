"""The lower rungs of the quantization ladder, each on a tiny real model with real builds and engines.

A user target without ``int8-mixed`` (``x86-ladder-low``) sends the ladder past mixed precision: int16
activations with int8 weights (``int16x8``, ONNX Runtime QDQ), then fp16 with the ops that overflow fp16 kept in
fp32. The outlier model (examples/outlier/make_model.py) crushes int8 with two 1000x channels; its 1e5x variant
also puts them beyond fp16's 65504, and beyond what 16-bit activations can resolve.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from _kit import REPO, run_cli

LOW = """
[[targets]]
name = "x86-ladder-low"
extends = "x86-cpu"
status = "test: the ladder's lower rungs (no int8-mixed)"
precisions = ["fp32", "fp16", "int8", "int16x8"]
default_engine = { fp32 = "onnxruntime", fp16 = "onnxruntime", int8 = "onnxruntime", int16x8 = "onnxruntime" }
cpu = { features = ["avx2", "fma"] }
"""


def _make(tmp: Path, scale: float) -> dict[str, Path]:
    spec = importlib.util.spec_from_file_location("edgeify_example_outlier_l", REPO / "examples/outlier/make_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make(tmp, outlier_scale=scale)


@pytest.fixture(scope="module")
def low_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    f = tmp_path_factory.mktemp("targets") / "low.toml"
    f.write_text(LOW)
    return f


def _optimize(paths: dict[str, Path], target_file: Path, out: Path):
    import edgeify

    return edgeify.optimize(paths["model"], target="x86-ladder-low", target_files=[str(target_file)],
                            calib=paths["calib"], eval=paths["eval"], max_accuracy_drop=1.0, engines=["onnxruntime"],
                            precisions=["int8"], out=out, progress=lambda m: None)


@pytest.mark.slow  # int8 recipes then an int16x8 build, 24 s (test_optimize's ladder test stays quick)
def test_int16x8_rung_holds_where_int8_and_its_recipes_fail(low_target: Path, tmp_path: Path,
                                                            results_db: Path) -> None:
    paths = _make(tmp_path / "m", 1000.0)
    res = _optimize(paths, low_target, tmp_path / "best")
    rungs = {r.rung: r for r in res.ladder}
    assert not rungs["int8"].accepted and not rungs["recipe calib-percentile"].accepted
    # ORT 1.32's quantize_static entropy (128 bins, 128 quantized bins) gives min-max's ranges: not tried twice
    entropy = rungs["recipe calib-entropy"]
    assert entropy.skipped and not entropy.accepted and "not measured again" in entropy.reason
    r16 = rungs["int16x8"]
    assert r16.accepted and r16.parity_passed and r16.accuracy_drop <= 1.0 and r16.latency_p50_ms > 0
    assert r16.quantized_ops == 0 and r16.total_ops == 5  # 16-bit Q/DQ: ORT computes in float between them
    ch = res.chosen
    assert ch.precision == "int16x8" and [r.rung for r in ch.ladder][-1] == "int16x8"
    manifest = json.loads((tmp_path / "best" / "manifest.json").read_text())
    assert manifest["precision"] == "int16x8" and manifest["quantization"]["activations"] == "uint16"
    assert manifest["quantization"]["scheme"] == "U16S8"
    assert [r["rung"] for r in manifest["quantization"]["ladder"]] == [r.rung for r in ch.ladder]


@pytest.mark.slow  # an fp16 overflow scan and build (test_optimize's ladder test keeps the ladder quick)
def test_fp16_rung_keeps_the_ops_that_overflow_in_fp32(low_target: Path, tmp_path: Path, results_db: Path) -> None:
    from edgeify.optimize.overflow import FP16_MAX

    paths = _make(tmp_path / "m", 1e5)
    plain = run_cli("build", str(paths["model"]), "--target", "x86-avx2", "--engine", "onnxruntime", "--precision",
                    "fp16", "--calib", str(paths["calib"]), "--no-latency", "-o", str(tmp_path / "plain"))
    assert plain.returncode == 9, plain.stderr[-2000:]  # plain fp16: conv2's outlier channels become inf
    res = _optimize(paths, low_target, tmp_path / "best")
    rungs = {r.rung: r for r in res.ladder}
    assert not rungs["int16x8"].accepted  # 1e5x channels: 16-bit per-tensor steps crush the others too
    fp16 = rungs["fp16 fp32: conv2, relu2, conv3"]  # the producer and consumers of c2 and r2 (|x| > 65504)
    assert fp16.accepted and fp16.parity_passed and fp16.cosine > 0.999 and fp16.latency_p50_ms > 0
    assert fp16.recipe.config["fp16_keep_fp32"] == ["conv2", "relu2", "conv3"] and FP16_MAX == 65504.0
    cand = [c for c in res.candidates if c.precision == "fp16" and c.recipe.float_layers]
    assert cand and all(c.accuracy.parity_passed for c in cand)
    assert res.chosen is not None and res.chosen.accuracy_drop <= 1.0  # fp32 (built to find the overflow) or fp16


@pytest.mark.slow  # NNCF accuracy-control quantization over the eval set
def test_openvino_accuracy_control_rung(tmp_path: Path, results_db: Path) -> None:
    """OpenVINO's int8-mixed rung is NNCF's quantize_with_accuracy_control over the labelled eval set: it keeps
    the layer that reads the outlier activation in float, the rest int8."""
    paths = _make(tmp_path / "m", 1000.0)
    import edgeify

    res = edgeify.optimize(paths["model"], target="x86-avx2", calib=paths["calib"], eval=paths["eval"],
                           max_accuracy_drop=1.0, engines=["openvino"], precisions=["int8"], out=tmp_path / "best",
                           progress=lambda m: None)
    rungs = {r.rung: r for r in res.ladder}
    assert not rungs["int8"].accepted
    qac = rungs["int8-mixed accuracy-control"]
    assert qac.accepted and qac.accuracy_drop <= 1.0 and qac.latency_p50_ms > 0
    assert 0 < qac.quantized_ops < qac.total_ops  # mostly int8, not all
    manifest = json.loads((tmp_path / "best" / "manifest.json").read_text())
    quant = manifest["quantization"]
    assert manifest["precision"] == "int8-mixed" and quant["accuracy_control"]["measure"] == "labels"
    assert quant["float_layers"] and any("conv3" in n for n in quant["float_layers"])
