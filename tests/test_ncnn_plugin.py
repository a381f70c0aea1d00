"""The ncnn engine plugin (plugins/ncnn, distribution ``edgeify-ncnn``; issue 26).

Installed beside edgeify (install.sh: ``pip install ./plugins/ncnn[host]``), it registers only through entry points.
Real pnnx conversions and the real ncnn wheel through the device-side adapter and the benchmark agent. Without
the plugin, ``--engine ncnn`` is a ConfigError (exit 4) that says how to install it. No timing is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _kit import REPO, run_cli
from edgeify_runtime.manifest import Manifest

pytest.importorskip("edgeify_ncnn")
pytest.importorskip("ncnn")
pytest.importorskip("pnnx")

# runs the CLI with the plugin's distribution hidden from entry-point discovery (as if it were not installed)
WITHOUT_PLUGIN = """
import importlib.metadata as md, sys
_orig = md.entry_points
def entry_points(**kw):
    eps = _orig(**kw)
    return md.EntryPoints([e for e in eps if getattr(getattr(e, "dist", None), "name", "") != "edgeify-ncnn"])
md.entry_points = entry_points
_dists = md.distributions
md.distributions = lambda **kw: [d for d in _dists(**kw) if d.metadata["Name"] != "edgeify-ncnn"]
from edgeify.cli.main import main
sys.argv = ["edgeify", *sys.argv[1:]]
main()
"""


@pytest.fixture(scope="module")
def ncnn_fp32(digits: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ncnn") / "digits-ncnn"
    res = run_cli("build", str(digits["model"]), "--target", "rpi5", "--engine", "ncnn", "--precision", "fp32",
                  "--calib", str(digits["calib"]), "--eval", str(digits["eval"]), "--no-latency", "-o", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_plugin_registers_only_through_entry_points() -> None:
    from importlib.metadata import entry_points

    mine = {(ep.group, ep.name) for group in ("edgeify.steps", "edgeify.engines", "edgeify_runtime.engines",
                                              "edgeify.targets")
            for ep in entry_points(group=group) if ep.dist is not None and ep.dist.name == "edgeify-ncnn"}
    assert mine == {("edgeify.steps", "ncnn-convert"), ("edgeify.engines", "ncnn"),
                    ("edgeify_runtime.engines", "ncnn"), ("edgeify.targets", "ncnn")}
    core = [p for d in ("toolchain", "targets", "runtimes") for p in (REPO / d).rglob("*")
            if p.suffix in (".py", ".toml") and "ncnn" in p.read_text(encoding="utf-8", errors="replace")]
    assert core == [], f"core files name the plugin: {core}"


def test_fp32_build_passes_parity_benchmarks_and_profiles(ncnn_fp32: Path) -> None:
    m = Manifest.read(ncnn_fp32)
    assert m.engine.name == "ncnn" and m.engine.artifact == "model.ncnn.param" and m.precision == "fp32"
    assert (ncnn_fp32 / "model.ncnn.bin").is_file()
    assert m.validation and m.validation["passed"] is True and m.validation["accuracy"]["drop_points"] <= 0.5
    facts = dict(m.facts or {})["ncnn"]
    assert facts["converter"] == "pnnx (torchscript)" and facts["layers"]["Convolution"] == 2
    assert facts["weights"] == "float32"
    res = run_cli("bench", str(ncnn_fp32), "--threads", "2", "--runs", "20", "--min-duration", "0.2", "--profile",
                  "--format", "json")
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(res.stdout)
    assert data["engine"]["name"] == "ncnn" and data["latency_ms"]["p50"] > 0
    prof = data["profile"]
    assert [op["type"] for op in prof["ops"]][:2] == ["Convolution", "Convolution"]
    assert all(op["time_ms"] is None for op in prof["ops"]) and "no per-layer profiler" in prof["time_ms_missing"]


def test_fp16_from_an_onnx_source(digits_onnx: Path, digits: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "onnx-ncnn-fp16"
    res = run_cli("build", str(digits_onnx), "--target", "x86-avx2", "--engine", "ncnn", "--precision", "fp16",
                  "--calib", str(digits["calib"]), "--no-latency", "-o", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    m = Manifest.read(out)
    facts = dict(m.facts or {})["ncnn"]
    assert facts["converter"] == "pnnx (onnx)" and facts["weights"] == "float16"
    assert m.quantization["method"] == "fp16" and m.validation["passed"] is True


def test_int8_is_not_offered(digits: dict[str, Path], tmp_path: Path) -> None:
    res = run_cli("build", str(digits["model"]), "--target", "rpi5", "--engine", "ncnn", "--precision", "int8",
                  "--calib", str(digits["calib"]), "--no-latency", "-o", str(tmp_path / "o"))
    assert res.returncode == 3, res.stderr[-2000:]
    assert "does not support precision 'int8'" in res.stderr


def test_without_the_plugin_engine_ncnn_says_how_to_install_it(digits: dict[str, Path], tmp_path: Path) -> None:
    env = {**os.environ}
    env.pop("EDGEIFY_DEBUG", None)
    base = [sys.executable, "-c", WITHOUT_PLUGIN]
    res = subprocess.run([*base, "build", str(digits["model"]), "--target", "rpi5", "--engine", "ncnn",
                          "--no-latency", "-o", str(tmp_path / "o")], capture_output=True, text=True, timeout=300,
                         env=env)
    assert res.returncode == 4, res.stderr[-2000:]
    assert "engine 'ncnn' is not installed" in res.stderr and "plugins/ncnn" in res.stderr
    listing = subprocess.run([*base, "targets", "--format", "json"], capture_output=True, text=True, timeout=300,
                             env=env)
    assert listing.returncode == 0, listing.stderr[-2000:]
    assert "ncnn" not in listing.stdout and "executorch" in listing.stdout  # everything else unchanged
