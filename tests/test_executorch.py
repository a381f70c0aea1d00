"""ExecuTorch (issue 26): the built-in engine from a PyTorch source to a checked, benchmarked, profiled bundle.

Real conversions (torch.export -> XNNPACK lowering -> .pte), the real ExecuTorch Python runtime through the
device-side adapter and the benchmark agent. No timing is asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _kit import run_cli
from edgeify_runtime.manifest import Manifest

pytest.importorskip("executorch")

# a tiny model with one op XNNPACK does not take (cumsum): the fallback must show in the facts and the profile
FALLBACK_MODEL = """import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.conv(x)).mean((2, 3))
        return self.fc(y).cumsum(1)

def build():
    torch.manual_seed(0)
    return Net().eval()
"""


def _facts(bundle: Path) -> dict:
    return dict(Manifest.read(bundle).facts or {}).get("executorch") or {}


@pytest.fixture(scope="module")
def et_int8(digits: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("et") / "digits-et-int8"
    res = run_cli("build", str(digits["model"]), "--target", "rpi5", "--engine", "executorch", "--precision", "int8",
                  "--calib", str(digits["calib"]), "--eval", str(digits["eval"]), "--no-latency", "-o", str(out),
                  "--format", "json")
    assert res.returncode == 0, res.stderr[-3000:]
    return out


@pytest.mark.slow  # an int8 PT2E build (the quick tier's ExecuTorch build is the engine contract round trip)
def test_int8_build_passes_parity_and_records_the_delegation(et_int8: Path) -> None:
    m = Manifest.read(et_int8)
    assert m.engine.name == "executorch" and m.engine.artifact == "model.pte" and m.precision == "int8"
    assert (et_int8 / "model.pte").read_bytes()[4:8] == b"ET12"  # an ExecuTorch flatbuffer program
    assert m.validation and m.validation["passed"] is True
    assert m.validation["accuracy"]["drop_points"] <= 1.0
    facts = _facts(et_int8)
    assert facts["backend"] == "XnnpackBackend" and facts["partitions"] >= 1
    assert facts["delegated_ops"].get("aten.convolution.default") == 2  # the digits CNN's two convs
    assert any(op.startswith("quantized_decomposed.") for op in facts["delegated_ops"])  # really int8 (PT2E)
    assert facts["portable_ops"] == {} and facts["calibration_samples"] > 0
    assert m.quantization["method"] == "static" and m.quantization["per_channel"] is True


@pytest.mark.slow  # the int8 build above
def test_int8_bundle_benchmarks_and_profiles_locally(et_int8: Path) -> None:
    res = run_cli("bench", str(et_int8), "--threads", "2", "--runs", "20", "--min-duration", "0.2", "--profile",
                  "--format", "json")
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(res.stdout)
    assert data["engine"]["name"] == "executorch" and data["latency_ms"]["p50"] > 0
    prof = data["profile"]
    assert prof["engine"] == "executorch" and "ETDump" in prof["source"]
    types = {op["type"] for op in prof["ops"]}
    assert any("QC8" in t or "QS8" in t for t in types), types  # XNNPACK's int8 kernels ran
    assert all(op["placement"] == "XNNPACK delegate" and op["time_ms"] is not None for op in prof["ops"])
    assert prof["placement"]["fallback_count"] == 0


@pytest.mark.slow  # a second export and lowering
def test_an_op_xnnpack_does_not_take_shows_as_portable_fallback(tmp_path: Path) -> None:
    model = tmp_path / "fallback.py"
    model.write_text(FALLBACK_MODEL)
    out = tmp_path / "fallback-et"
    res = run_cli("build", f"{model}:build", "--input-shape", "1,3,12,12", "--target", "x86-avx2", "--engine",
                  "executorch", "--precision", "fp32", "--no-latency", "-o", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    facts = _facts(out)
    assert facts["portable_ops"] == {"aten.cumsum.default": 1, "aten.mean.dim": 1}, facts
    assert {"aten.convolution.default", "aten.linear.default"} <= set(facts["delegated_ops"])
    res = run_cli("bench", str(out), "--threads", "1", "--runs", "10", "--min-duration", "0.1", "--profile",
                  "--format", "json")
    assert res.returncode == 0, res.stderr[-3000:]
    prof = json.loads(res.stdout)["profile"]
    fallback = {op["type"] for op in prof["ops"] if op["fallback"]}
    assert fallback == {"aten.cumsum", "aten.mean"}, prof["ops"]
    assert prof["placement"]["fallback_count"] == 2


def test_an_onnx_source_is_refused_naming_the_pytorch_route(digits_onnx: Path, tmp_path: Path) -> None:
    res = run_cli("build", str(digits_onnx), "--target", "x86-avx2", "--engine", "executorch", "--no-latency",
                  "-o", str(tmp_path / "o"))
    assert res.returncode == 8, res.stderr[-2000:]
    assert "ExecuTorch builds from a PyTorch program" in res.stderr and ".pt2" in res.stderr


def test_the_engine_is_offered_where_the_issue_says_and_installs_by_name() -> None:
    from edgeify.targets import load_registry
    from edgeify_runtime.engines import adapter_class

    reg = load_registry()
    for name in ("rpi4", "rpi5", "android-arm64", "x86-avx2", "x86-avx512"):
        eng = reg.get(name).engines["executorch"]
        assert eng.artifact_format == "pte" and set(eng.precisions) == {"fp32", "fp16", "int8"}
    cls = adapter_class("executorch")
    assert "torch" in cls.engine_info().install_command and "executorch" in cls.engine_info().install_command
    assert cls.profile_source and cls.can_dump
