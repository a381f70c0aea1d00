"""Library noise kept in a per-run log the error message names (issue 23, rough edges): what edgeify keeps off the
terminal (native INFO lines, Python warnings and warning-level logs around converters, the torch exporter's
logger, a failed converter's output) is appended to one log per run under the cache dir, secrets masked; a failed
command names that log under its ``fix:`` line. Also: a fixed-batch ONNX source builds for a TFLite target (the
float check feeds the source its own batch)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from _kit import run_cli
from edgeify import noise

_SCRIPT = r"""
import logging, os, sys, warnings
from edgeify import noise
noise.begin_log()
with noise.native_stderr_filter():
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    os.write(2, b"a real error line\n")
with noise.captured_warnings("converter"), noise.captured_logging():
    warnings.warn("deprecated thing token=abc123", FutureWarning)
    logging.getLogger("somelib").warning("chatty warning Authorization: Bearer s3cr3t")
    logging.getLogger("somelib").error("real failure")
noise.quiet_python_loggers()
logging.getLogger("torch.onnx._internal.exporter._registration").warning("torchvision is not installed")
print(noise.log_with_content())
"""


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (noise.LOG_ENV, "EDGEIFY_DEBUG")}
    return {**env, "EDGEIFY_HOME": str(home)}


def test_kept_noise_goes_to_the_run_log_not_the_terminal(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120,
                          env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    log = Path(proc.stdout.strip())  # stdout holds only what the program prints
    assert log.parent == tmp_path / "cache" / "logs" and log.is_file(), proc.stdout
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    # the terminal: real errors only, at once
    assert "a real error line" in proc.stderr and "real failure" in proc.stderr
    for quiet in ("XNNPACK", "deprecated thing", "chatty warning", "torchvision"):
        assert quiet not in proc.stderr, proc.stderr
    text = log.read_text()
    assert "[native stderr] INFO: Created TensorFlow Lite XNNPACK delegate for CPU." in text
    assert "[converter] FutureWarning: deprecated thing token=***" in text
    assert "[somelib] WARNING: chatty warning Authorization: ***" in text
    assert "[torch.onnx._internal.exporter._registration] WARNING: torchvision is not installed" in text
    assert "a real error line" not in text and "real failure" not in text  # shown, not hidden
    assert "abc123" not in text and "s3cr3t" not in text  # secrets never reach the log


def test_run_logs_are_rotated_and_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEIFY_HOME", str(tmp_path))
    logs = tmp_path / "cache" / "logs"
    for i in range(noise.KEEP_LOGS + 5):
        monkeypatch.setenv(noise.LOG_ENV, str(logs / f"run-{i:03d}.log"))
        noise.keep("lib", f"line of run {i}")
        os.utime(logs / f"run-{i:03d}.log", (1_000_000 + i, 1_000_000 + i))  # creation order, 1 s apart
    kept = sorted(p.name for p in logs.glob("*.log"))
    assert len(kept) == noise.KEEP_LOGS and kept[0] == "run-005.log"
    assert kept[-1] == f"run-{noise.KEEP_LOGS + 4:03d}.log"
    monkeypatch.setattr(noise, "MAX_LOG_BYTES", 300)
    monkeypatch.setenv(noise.LOG_ENV, str(logs / "big.log"))
    for _ in range(20):
        noise.keep("lib", "x" * 50)
    data = (logs / "big.log").read_bytes()
    assert 300 <= len(data) < 400 and data.count(b"log cut at") == 1
    monkeypatch.setenv(noise.LOG_ENV, str(logs / "empty.log"))
    noise.keep("lib", "\n  \n")
    assert noise.log_with_content() is None  # nothing kept, nothing to point at


def _conv_onnx(path: Path, batch: int | str, big_weight: bool = False) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    if big_weight:
        w[0, 0, 0, 0] = 1e6  # beyond float16: the fp16 build differs from the source
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 8, 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(4, np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.slow  # a TFLite conversion (onnx2tf), ~17 s
def test_failed_tflite_build_names_its_log(tmp_path: Path) -> None:
    model = _conv_onnx(tmp_path / "big.onnx", "n", big_weight=True)
    res = run_cli("build", str(model), "--target", "rpi5", "--precision", "fp16", "-o", str(tmp_path / "b"),
                  "--no-cache", "--no-latency", "--format", "json", env={"EDGEIFY_HOME": str(tmp_path / "home")})
    assert res.returncode == 9, res.stderr
    data = json.loads(res.stdout)  # stdout: the JSON object only
    assert data["ok"] is False and data["error"]["exit_code"] == 9
    assert "XNNPACK" not in res.stderr and "oneDNN" not in res.stderr
    lines = res.stderr.splitlines()
    fix = next(i for i, ln in enumerate(lines) if ln.startswith("fix: "))
    m = re.fullmatch(r"log: library messages of this run \(kept off the terminal\): (\S+)", lines[fix + 1])
    assert m, res.stderr
    log = Path(m.group(1))
    assert log.parent == tmp_path / "home" / "cache" / "logs" and data["log"] == str(log)
    assert "[native stderr] INFO: Created TensorFlow Lite XNNPACK delegate for CPU" in log.read_text()


@pytest.mark.slow  # a TFLite conversion (onnx2tf), ~16 s
def test_fixed_batch_onnx_source_builds_for_tflite(tmp_path: Path) -> None:
    """A source whose input is [2, 3, 8, 8]: the float check fed it batch 1 and called that a converter fault."""
    model = _conv_onnx(tmp_path / "fixed2.onnx", 2)
    res = run_cli("build", str(model), "--target", "rpi5", "-o", str(tmp_path / "b"), "--no-cache", "--no-latency")
    assert res.returncode == 0, res.stderr
    assert "converter fault" not in res.stderr and "invalid dimensions" not in res.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["inputs"][0]["shape"] == [2, 3, 8, 8] and manifest["outputs"][0]["shape"] == [2, 4, 8, 8]
    assert manifest["facts"]["tflite"]["converter"] == "onnx2tf"  # the first route held: its float check passed
    assert manifest["validation"]["passed"] is True


@pytest.mark.slow  # an optimize run down the ladder to int8-mixed (real ORT builds), ~1 min
def test_ladder_names_the_layers_kept_in_float_by_source_module(tmp_path: Path, results_db: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The outlier CNN, its nodes carrying the dynamo exporter's module scopes (as a PyTorch model exported with
    ``torch.onnx.export(dynamo=True)`` has them): the int8-mixed rung names conv2/conv3 by their modules."""
    import importlib.util

    import edgeify
    import onnx
    from _kit import REPO
    from edgeify.cli.optimize import print_table

    spec = importlib.util.spec_from_file_location("edgeify_example_outlier_n", REPO / "examples/outlier/make_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    paths = mod.make(tmp_path / "outlier")
    model = onnx.load(str(paths["model"]))
    for node in model.graph.node:
        if node.op_type == "Conv":
            scope = f"blocks.{node.name[len('conv'):]}"
            for key, value in (("pkg.torch.onnx.name_scopes", repr(["", "blocks", scope, node.name])),
                               ("pkg.torch.onnx.class_hierarchy",
                                repr(["Net", "torch.nn.modules.container.Sequential",
                                      "torch.nn.modules.conv.Conv2d", "aten.conv2d.default"]))):
                prop = node.metadata_props.add()
                prop.key, prop.value = key, value
    onnx.save(model, str(paths["model"]))
    res = edgeify.optimize(paths["model"], target="x86-avx2", calib=paths["calib"], eval=paths["eval"],
                           max_accuracy_drop=1.0, engines=["onnxruntime"], precisions=["int8"],
                           out=tmp_path / "mixed", progress=lambda m: None)
    ch = res.chosen
    assert ch is not None and ch.precision == "int8-mixed" and "conv3" in ch.recipe.float_layers
    accepted = next(r for r in ch.ladder if r.accepted)
    assert accepted.float_modules["conv3"] == "blocks.3 (nn.Conv2d)", accepted.float_modules
    assert set(accepted.float_modules) == set(ch.recipe.float_layers) - {"fc"}  # the Gemm carries no scope here
    print_table(res)
    out = capsys.readouterr().out
    assert "kept in float (onnxruntime int8-mixed): " in out and "conv3 = blocks.3 (nn.Conv2d)" in out, out
