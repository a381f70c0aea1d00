"""Model inputs: ONNX (any opset from 9), ExportedProgram, TorchScript, module.py:factory + --input-shape."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _kit import REPO, make_gemm_onnx
from edgeify.build import build
from edgeify.errors import InputSignatureError, ModelLoadError
from edgeify.sources import open_source, parse_input_shapes
from edgeify_runtime.manifest import TensorSpec


def test_onnx_opset9_source_is_upgraded(tmp_path: Path) -> None:
    src = make_gemm_onnx(tmp_path / "old.onnx", opset=9)
    res = build(src, target="x86", precision="int8-dynamic", out=tmp_path / "b", measure_latency=False)
    export = res.steps[0]
    assert res.manifest.raw["opset"] >= 13
    assert res.validation.passed
    assert export["uses"] == "onnx-export"
    assert res.manifest.inputs[0].shape == ("batch", 16)


def test_torchscript_source(tmp_path: Path) -> None:
    import torch
    from edgeify.sources import open_source as _open

    digits_cnn = _open(f"{REPO}/examples/digits/model.py:digits_cnn").load
    ts = tmp_path / "digits.pt"
    torch.jit.save(torch.jit.script(digits_cnn()), str(ts))
    res = build(ts, target="x86", precision="fp32", input_shapes=["1,1,8,8"], out=tmp_path / "b",
                measure_latency=False)
    assert res.manifest.source["kind"] == "torchscript"
    assert res.manifest.inputs[0] == TensorSpec("x", ("batch", 1, 8, 8), "float32", "NCHW")
    worst = max(res.validation.max_abs().values())
    assert worst < 1e-4


def test_module_factory_source_with_input_shape(tmp_path: Path) -> None:
    res = build(f"{REPO}/examples/digits/model.py:digits_cnn", target="x86-avx2", precision="fp16",
                input_shapes=["x:1,1,8,8"], out=tmp_path / "b", measure_latency=False)
    assert res.manifest.source["kind"] == "module-factory"
    assert res.manifest.source["factory"] == "digits_cnn"
    assert res.manifest.inputs[0].shape[0] == "batch"  # dynamic batch recorded


def test_factory_without_input_shape_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputSignatureError) as exc:
        build(f"{REPO}/examples/digits/model.py:digits_cnn", target="x86", out=tmp_path / "b")
    assert "input shape is unknown" in exc.value.message and "--input-shape" in exc.value.hint


def test_wrong_input_shape_for_the_model(tmp_path: Path) -> None:
    with pytest.raises(InputSignatureError) as exc:
        build(f"{REPO}/examples/digits/model.py:digits_cnn", target="x86", input_shapes=["1,3,32,32"],
              out=tmp_path / "b")
    assert exc.value.exit_code == 5 and "[1, 3, 32, 32]" in exc.value.message
    assert not (tmp_path / "b").exists()


def test_pickled_module_is_refused(tmp_path: Path) -> None:
    import torch

    p = tmp_path / "pickled.pt"
    torch.save(torch.nn.Linear(2, 2), str(p))
    with pytest.raises(ModelLoadError, match="TorchScript"):
        open_source(str(p)).load()


def test_corrupt_and_unknown_models(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    with pytest.raises(ModelLoadError, match="not a valid ONNX model"):
        open_source(str(bad)).load()
    other = tmp_path / "model.h5"
    other.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="unknown model kind"):
        open_source(str(other))
    with pytest.raises(ModelLoadError, match="not found"):
        open_source(str(tmp_path / "missing.onnx"))
    script = tmp_path / "m.py"
    script.write_text(textwrap.dedent("def build():\n    return 42\n"))
    with pytest.raises(ModelLoadError, match=r"not a torch\.nn\.Module"):
        open_source(f"{script}:build").load()
    with pytest.raises(ModelLoadError, match="no callable 'nope'"):
        open_source(f"{script}:nope").load()


def test_parse_input_shapes() -> None:
    assert parse_input_shapes(["1,3,224,224"]) == [(1, 3, 224, 224)]
    assert parse_input_shapes(["x:1,3,8,8", "m:1,4"]) == {"x": (1, 3, 8, 8), "m": (1, 4)}
    for bad in (["1,a"], ["0,3"], ["x:1,2", "1,2"]):
        with pytest.raises(InputSignatureError):
            parse_input_shapes(bad)


def test_fixed_batch_onnx_is_fed_in_its_batch_size(tmp_path: Path) -> None:
    src = make_gemm_onnx(tmp_path / "fixed.onnx", dynamic_batch=False)
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(1).standard_normal((40, 16)).astype(np.float32))
    res = build(src, target="x86", precision="int8", calib=calib, out=tmp_path / "b", measure_latency=False)
    assert res.manifest.inputs[0].shape == (1, 16)
    assert res.manifest.raw["calibration"]["count"] == 40


def _pt2_with_code_in_it(tmp_path: Path) -> tuple[Path, Path]:
    """A real torch.export.save archive whose sample inputs were swapped for a pickle that runs a command."""
    import io
    import zipfile

    import torch

    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(torch.nn.Linear(4, 2), (torch.randn(1, 4),)), str(good))
    buf = io.BytesIO()
    torch.save(Payload(), buf)
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = buf.getvalue() if info.filename.endswith("sample_inputs/model.pt") else src.read(info.filename)
            dst.writestr(info.filename, data)
    return evil, marker


def test_pt2_needing_full_unpickling_is_refused_unless_trusted(tmp_path: Path) -> None:
    """Issue 11 item 4: torch.export.load would unpickle (and run) this archive's payload."""
    evil, marker = _pt2_with_code_in_it(tmp_path)
    with pytest.raises(ModelLoadError) as exc:
        open_source(str(evil)).load()
    assert "full unpickling" in exc.value.message and "--trust-source" in exc.value.hint
    assert "posix.system" in exc.value.message
    assert not marker.exists()
    with pytest.raises(ModelLoadError):  # trusted: torch runs the payload (the archive is then unusable)
        open_source(str(evil), trust_source=True).load()
    assert marker.exists()
    assert open_source(str(tmp_path / "good.pt2")).load() is not None  # torch.export.save output: no flag


def test_state_dict_is_told_it_has_no_architecture(tmp_path: Path) -> None:
    import torch

    p = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), str(p))
    with pytest.raises(ModelLoadError) as exc:
        open_source(str(p)).load()
    assert "state_dict" in exc.value.message and "no architecture" in exc.value.message
    assert "module.py:factory" in exc.value.hint


def test_missing_model_has_a_fix_line(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as exc:
        open_source(str(tmp_path / "nope.onnx"))
    assert "not found" in exc.value.message and "module.py:factory" in exc.value.hint


def test_cli_refuses_an_unpickling_pt2_with_exit_6(tmp_path: Path) -> None:
    from _kit import run_cli

    evil, marker = _pt2_with_code_in_it(tmp_path)
    res = run_cli("build", str(evil), "--target", "x86", "--no-latency", "-o", str(tmp_path / "out"))
    assert res.returncode == 6 and "full unpickling" in res.stderr and "--trust-source" in res.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()
