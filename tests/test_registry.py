"""The target registry: built-ins, user files, entry points, aliases, validation and the resolved pipelines."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from edgeify.errors import ConfigError, TargetError
from edgeify.pipeline import resolve
from edgeify.targets import load_registry

DATA = Path(__file__).parent / "data"


def test_builtin_targets_and_family_alias() -> None:
    reg = load_registry(user_dir=Path("/nonexistent"))
    assert {"x86-avx2", "x86-avx512"} <= set(reg.targets)
    spec, family = reg.resolve("x86")
    assert (spec.name, family) == ("x86-avx2", "x86")
    assert reg.resolve("x86-avx512") == (reg.targets["x86-avx512"], None)
    for s in (s for s in reg if s.family == "x86"):
        assert {"onnxruntime", "openvino", "executorch"} <= set(s.engines)  # + plugin engines (ncnn) when installed
        assert {"fp32", "fp16", "int8", "int8-mixed", "int8-dynamic"} <= set(s.precisions)
    # bf16 only on the board whose CPUs have bf16 arithmetic (AVX-512 BF16 / AMX)
    assert "bf16" in reg.targets["x86-avx512"].precisions and "bf16" not in reg.targets["x86-avx2"].precisions


def test_unknown_target_suggests_closest() -> None:
    reg = load_registry(user_dir=Path("/nonexistent"))
    with pytest.raises(TargetError) as exc:
        reg.resolve("x86-avx-512")
    assert exc.value.exit_code == 3
    assert "x86-avx512" in exc.value.hint


def test_avx512_pipeline_differs_from_avx2_where_it_matters() -> None:
    reg = load_registry(user_dir=Path("/nonexistent"))
    avx2 = resolve(reg.get("x86-avx2"), "onnxruntime", "int8").describe()
    avx512 = resolve(reg.get("x86-avx512"), "onnxruntime", "int8").describe()
    assert avx2 != avx512
    q2 = next(s for s in avx2 if s["id"] == "quantize")["config"]
    q5 = next(s for s in avx512 if s["id"] == "quantize")["config"]
    assert (q2["activation_type"], q2["reduce_range"]) == ("uint8", True)  # U8S8, 7-bit weights (no VNNI)
    # U8S8 with full 8-bit weights: measured 2.4-2.8x faster than S8S8 on AVX-512 VNNI CPUs (Xeon, EPYC Zen 5)
    assert (q5["activation_type"], q5["reduce_range"]) == ("uint8", False)
    assert "Intel Xeon" in reg.get("x86-avx512").status
    assert reg.get("x86-avx512").verified_on_hardware


def test_skipped_steps_pass_their_input_through() -> None:
    spec = load_registry(user_dir=Path("/nonexistent")).get("x86-avx2")
    fp32 = resolve(spec, "onnxruntime", "fp32")
    assert [s.id for s in fp32.steps] == ["export", "optimize", "check"]
    assert fp32.steps[-1].input == "optimize"
    ov8 = resolve(spec, "openvino", "int8")
    assert [(s.id, s.input) for s in ov8.steps] == [("export", None), ("optimize", "export"),
                                                    ("convert", "optimize"), ("quantize", "convert"),
                                                    ("check", "quantize")]


def test_unsupported_precision_and_engine() -> None:
    spec = load_registry(user_dir=Path("/nonexistent")).get("x86-avx2")
    with pytest.raises(TargetError, match="bf16"):  # x86-avx2 has no bf16 (int16x8 is an x86 precision now)
        resolve(spec, None, "bf16")
    with pytest.raises(TargetError, match="no engine 'tensorrt'"):
        resolve(spec, "tensorrt", "fp32")


def test_future_target_families_are_expressible() -> None:
    """Jetson (TensorRT built on the device), Raspberry Pi and Android (TFLite NHWC) fit the same format."""
    from edgeify.targets.registry import _read_toml, build_registry

    # alone: the built-in files now define these families for real (jetson.toml, arm.toml)
    reg = build_registry([_read_toml(DATA / "future_targets.toml")])
    jetson, fam = reg.resolve("jetson")
    assert (jetson.name, fam) == ("jetson-orin-nano", "jetson")
    assert jetson.engines["tensorrt"].build_on == "device"
    assert jetson.accelerators[0].compute_capability == "8.7"
    assert [s.where for s in jetson.engines["tensorrt"].pipeline][-1] == "device"
    rpi = reg.get("rpi5")
    assert rpi.engines["litert"].layout == "NHWC" and rpi.arch == "aarch64"
    assert reg.get("android-arm64").os == "android"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


USER_TARGET = """
[[targets]]
name = "my-box"
extends = "x86-cpu"
description = "a user's own board"
status = "user-defined"
precisions = ["fp32", "int8"]
default_engine = { fp32 = "openvino", int8 = "openvino" }
"""


def test_user_target_file_and_config_dir(tmp_path: Path) -> None:
    f = _write(tmp_path, "mine.toml", USER_TARGET)
    reg = load_registry([f], user_dir=Path("/nonexistent"))
    spec = reg.get("my-box")
    assert spec.default_engine["int8"] == "openvino" and spec.source == str(f)
    confdir = tmp_path / "conf"
    confdir.mkdir()
    _write(confdir, "mine.toml", USER_TARGET)
    assert "my-box" in load_registry(user_dir=confdir).targets


def test_duplicate_target_is_an_error_naming_both_sources(tmp_path: Path) -> None:
    f = _write(tmp_path, "dup.toml", USER_TARGET.replace("my-box", "x86-avx2"))
    with pytest.raises(ConfigError) as exc:
        load_registry([f], user_dir=Path("/nonexistent"))
    assert "defined twice" in exc.value.message and "builtin:x86.toml" in exc.value.message
    assert str(f) in exc.value.message


@pytest.mark.parametrize(("text", "needle"), [
    (USER_TARGET.replace('"fp32", "int8"]', '"fp32", "int9"]'), "precisions"),
    (USER_TARGET.replace('extends = "x86-cpu"', 'extends = "x86-gpu"'), "unknown template 'x86-gpu'"),
    (USER_TARGET + '\n[[targets.engines.onnxruntime.pipeline]]\nid = "quantize"\nconfig = { activation = "u8" }\n',
     "activation"),
    (USER_TARGET + '\n[[targets.engines.onnxruntime.pipeline]]\nid = "x"\nuses = "ort-quantise"\n', "ort-quantize"),
    (USER_TARGET.replace('int8 = "openvino"', 'int8 = "tflite"'), "not one of the engines"),
    ("[[targets]]\nname = 'Bad Name'\n", "name"),
    ("[target]\nname = 'typo'\n", "unknown top-level keys"),
    ("this is not toml", "invalid TOML"),
])
def test_invalid_specs_fail_clearly(tmp_path: Path, text: str, needle: str) -> None:
    f = _write(tmp_path, "bad.toml", text)
    with pytest.raises(ConfigError) as exc:
        load_registry([f], user_dir=Path("/nonexistent"))
    assert needle in exc.value.message + exc.value.hint
    assert exc.value.exit_code == 4


def test_entry_point_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real installed distribution (dist-info on sys.path) registering a spec file via `edgeify.targets`."""
    pkg = tmp_path / "acme_targets"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from pathlib import Path\n\n"
                                     "def spec():\n    return Path(__file__).with_name('acme.toml')\n")
    _write(pkg, "acme.toml", USER_TARGET.replace("my-box", "acme-gateway"))
    dist = tmp_path / "acme_targets-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-targets\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[edgeify.targets]\nacme = acme_targets:spec\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("acme_targets", None)
    reg = load_registry(user_dir=Path("/nonexistent"))
    assert "acme-gateway" in reg.targets
    assert "entry point acme" in reg.get("acme-gateway").source


def test_specs_are_frozen_and_hashable() -> None:
    spec = load_registry(user_dir=Path("/nonexistent")).get("x86-avx2")
    with pytest.raises(ValueError, match="frozen"):
        spec.name = "other"  # type: ignore[misc]
    assert len({spec, spec}) == 1 and len(spec.digest) == 64


UNCHECKED = USER_TARGET.replace('default_engine = { fp32 = "openvino", int8 = "openvino" }',
                                'default_engine = { fp32 = "bare", int8 = "openvino" }') + """
[targets.engines.bare]
runtime = "onnxruntime"
artifact_format = "onnx"
artifact = "model.onnx"
precisions = ["fp32"]
pipeline = [{ id = "export", uses = "onnx-export" }]
"""


def test_a_pipeline_without_a_check_step_is_refused(tmp_path: Path) -> None:
    """Issue 11 item 10: an unchecked bundle would deploy and benchmark silently; refuse it when resolved."""
    f = _write(tmp_path, "unchecked.toml", UNCHECKED)
    spec = load_registry([f], user_dir=Path("/nonexistent")).get("my-box")
    with pytest.raises(ConfigError) as exc:
        resolve(spec, None, "fp32")
    assert exc.value.exit_code == 4 and "does not end in a `check` step" in exc.value.message
    assert 'uses = "check"' in exc.value.hint
    assert resolve(spec, None, "int8").steps[-1].kind == "check"  # the inherited engines keep their check
    from _kit import make_gemm_onnx, run_cli

    res = run_cli("build", str(make_gemm_onnx(tmp_path / "m.onnx")), "--target", "my-box", "--target-file", str(f),
                  "-o", str(tmp_path / "out"))
    assert res.returncode == 4 and "check" in res.stderr and not (tmp_path / "out").exists()
