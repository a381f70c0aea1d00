"""Noise (issue 17.11): what libraries print on their own never reaches the user. Each build runs with
--no-cache so the noisy steps really run (a cached export prints nothing either way)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _kit import run_cli
from edgeify.noise import human_size, is_noise, strip_noise


def test_human_sizes_and_the_noise_patterns() -> None:
    assert [human_size(n) for n in (812, 46_300, 14_200_000, 0)] == ["812 B", "46.3 kB", "14.2 MB", "0 B"]
    assert is_noise("I0000 00:00:1796159828.772328   32291 port.cc:153] oneDNN custom operations are on. ...")
    assert is_noise("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
    assert not is_noise("error [8] onnx2tf failed (exit 1)")
    assert strip_noise("a\nWARNING: All log messages before absl::InitializeLog() is called are written to STDERR\nb") \
        == "a\nb"


@pytest.mark.slow  # an NNCF int8 build (the NNCF progress-bar test keeps one in the quick tier)
def test_x86_int8_build_is_quiet_and_reads_right(digits, tmp_path: Path) -> None:
    res = run_cli("build", str(digits["model"]), "--target", "x86", "--precision", "int8", "--calib",
                  str(digits["calib"]), "-o", str(tmp_path / "b"), "--no-cache", "--no-latency")
    assert res.returncode == 0, res.stderr
    text = res.stdout + res.stderr
    assert "torchvision is not installed" not in text
    assert "Statistics collection" not in text and "Applying Fast Bias correction" not in text  # NNCF's bars
    assert "0.000 MB" not in text and re.search(r"\d+(\.\d)? kB", res.stdout), res.stdout
    random_row = next(ln for ln in res.stdout.splitlines() if " random " in ln)
    assert "not gated" in random_row and "│ no " not in random_row, random_row  # reported, not a failure


@pytest.mark.slow  # a TFLite conversion (test_build_tflite's CLI build keeps one in the quick tier)
def test_tflite_build_has_no_native_info_lines(digits, tmp_path: Path) -> None:
    res = run_cli("build", str(digits["model"]), "--target", "rpi5", "--precision", "fp16", "-o",
                  str(tmp_path / "r"), "--no-cache", "--no-latency")
    assert res.returncode == 0, res.stderr
    for line in ("oneDNN custom operations", "XNNPACK delegate for CPU", "absl::InitializeLog",
                 "torchvision is not installed", "Quantization Ratio", "Original model size"):
        assert line not in res.stderr + res.stdout, line


def test_python_api_nncf_build_draws_no_progress_bars(digits, tmp_path: Path, capfd) -> None:
    from edgeify.build import build

    build(digits["model"], target="x86", precision="int8", engine="openvino", calib=digits["calib"],
          out=tmp_path / "api", use_cache=False, measure_latency=False)
    out, err = capfd.readouterr()
    assert "Statistics collection" not in out + err and "torchvision is not installed" not in out + err
