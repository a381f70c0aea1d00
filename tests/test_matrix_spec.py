"""matrix.toml: validation, path resolution, per-model narrowing/extension, cell expansion and ordering."""

from __future__ import annotations

from pathlib import Path

import pytest
from _kit import make_gemm_onnx, run_cli
from edgeify.errors import ConfigError
from edgeify.matrix.cells import expand, plan
from edgeify.matrix.spec import load_matrix
from edgeify.targets import load_registry


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "models").mkdir(exist_ok=True)
    make_gemm_onnx(tmp_path / "models" / "tiny.onnx")
    (tmp_path / "models" / "calib.npz").write_bytes(b"")
    p = tmp_path / "matrix.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_paths_resolve_against_the_matrix_file_and_lists_narrow_or_extend(tmp_path: Path) -> None:
    p = _write(tmp_path, """
targets = ["x86-avx2", "rpi5"]
precisions = ["fp32", "int8"]
[[models]]
name = "a"
path = "models/tiny.onnx"
calib = "models/calib.npz"
[[models]]
name = "b"
path = "models/tiny.onnx"
targets = ["x86-avx2"]
extra_precisions = ["fp16"]
input_shape = [1, 16]
""")
    m = load_matrix(p)
    a, b = m.models
    assert Path(a.path) == (tmp_path / "models" / "tiny.onnx").resolve()
    assert a.calib == (tmp_path / "models" / "calib.npz").resolve()
    assert m.lists_for(a) == (("x86-avx2", "rpi5"), ("fp32", "int8"), None)
    assert m.lists_for(b) == (("x86-avx2",), ("fp32", "int8", "fp16"), None)
    assert b.shapes() == ["1,16"]


def test_cells_default_engine_skips_and_output_names(tmp_path: Path) -> None:
    p = _write(tmp_path, """
targets = ["x86-avx2", "jetson-orin-nano"]
precisions = ["fp32", "int8-dynamic"]
[[models]]
name = "a"
path = "models/tiny.onnx"
[[models]]
name = "b"
path = "models/tiny.onnx"
targets = ["rpi5"]
precisions = ["fp16"]
engines = ["litert", "onnxruntime"]
""")
    cells = {c.id: c for c in expand(load_matrix(p), load_registry())}
    assert set(cells) == {"a/x86-avx2-fp32", "a/x86-avx2-int8-dynamic", "a/jetson-orin-nano-fp32",
                          "a/jetson-orin-nano-int8-dynamic", "b/rpi5-fp16-litert", "b/rpi5-fp16-onnxruntime"}
    assert cells["a/x86-avx2-fp32"].resolved_engine == "onnxruntime"  # the target's default for fp32
    assert cells["a/x86-avx2-int8-dynamic"].resolved_engine == "openvino"
    skipped = {k for k, c in cells.items() if c.status == "skipped"}
    assert skipped == {"a/jetson-orin-nano-int8-dynamic", "b/rpi5-fp16-onnxruntime"}
    assert "int8-dynamic" in cells["a/jetson-orin-nano-int8-dynamic"].reason
    assert cells["b/rpi5-fp16-litert"].out_dir(Path("OUT")) == Path("OUT/b/rpi5-fp16-litert")


def test_plan_runs_a_models_first_cell_then_one_per_pipeline_then_the_rest(tmp_path: Path) -> None:
    p = _write(tmp_path, """
targets = ["x86-avx2", "rpi5", "rpi4"]
precisions = ["fp32", "int8"]
[[models]]
name = "a"
path = "models/tiny.onnx"
[[models]]
name = "b"
path = "models/tiny.onnx"
targets = ["rpi5"]
""")
    deps = plan(expand(load_matrix(p), load_registry()))
    assert deps["a/x86-avx2-fp32"] == frozenset()
    assert deps["b/rpi5-fp32"] == frozenset()                       # models never wait for each other
    assert deps["a/x86-avx2-int8"] == {"a/x86-avx2-fp32"}          # OpenVINO pipeline: first of its kind
    assert deps["a/rpi5-fp32"] == {"a/x86-avx2-fp32"}              # the LiteRT pipeline's first cell
    # rpi4 and rpi5 share one LiteRT pipeline: the one onnx2tf conversion runs in a/rpi5-fp32
    for cell in ("a/rpi5-int8", "a/rpi4-fp32", "a/rpi4-int8"):
        assert deps[cell] == {"a/x86-avx2-fp32", "a/rpi5-fp32"}
    assert deps["b/rpi5-int8"] == {"b/rpi5-fp32"}


@pytest.mark.parametrize(("text", "needle"), [
    ("targets = [\n", "invalid TOML"),
    ('targets = ["x86-avx2"]\nprecisions = ["fp32"]\n', "models"),
    ('targets = ["x86-avx2"]\nprecisions = ["fp64"]\n[[models]]\nname = "a"\npath = "models/tiny.onnx"\n',
     "precisions"),
    ('targets = ["x86-avx2"]\nprecisions = ["fp32"]\n[[models]]\nname = "a"\npath = "models/nope.onnx"\n',
     "does not exist"),
    ('targets = ["x86-avx2"]\nprecisions = ["fp32"]\n[[models]]\nname = "a"\npath = "models/tiny.onnx"\n'
     '[[models]]\nname = "a"\npath = "models/tiny.onnx"\n', "listed twice"),
    ('targets = ["x86-avx2"]\nprecisions = ["fp32"]\ncolour = "red"\n[[models]]\nname = "a"\n'
     'path = "models/tiny.onnx"\n', "colour"),
    ('targets = ["x86-avx2"]\nprecisions = ["fp32"]\n[[models]]\nname = "Bad Name"\npath = "models/tiny.onnx"\n',
     "name"),
])
def test_bad_matrix_files_are_config_errors(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_matrix(_write(tmp_path, text))


def test_unknown_target_is_exit_4_with_a_suggestion(tmp_path: Path) -> None:
    p = _write(tmp_path, 'targets = ["x86-avx3"]\nprecisions = ["fp32"]\n[[models]]\nname = "a"\n'
                         'path = "models/tiny.onnx"\n')
    r = run_cli("build-matrix", str(p), "-o", str(tmp_path / "out"))
    assert r.returncode == 4, r.stderr
    assert "x86-avx3" in r.stderr and "did you mean" in r.stderr and "fix:" in r.stderr
    assert not (tmp_path / "out").exists()


def test_missing_matrix_file_is_exit_4(tmp_path: Path) -> None:
    r = run_cli("build-matrix", str(tmp_path / "nope.toml"), "-o", str(tmp_path / "out"), "--format", "json")
    assert r.returncode == 4
    assert '"ok": false' in r.stdout and "not found" in r.stderr
