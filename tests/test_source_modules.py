"""Issue 23 §3: profiles, per-op parity, inspect and the report name the PyTorch module each op came from.

Real builds of a tiny nested PyTorch model (``file.py:factory``, random weights: seconds each), through the real
console script: the export step records ``facts.source_modules``, ``bench --profile`` puts the module beside each
engine op and sums time per module, per-op parity ranks modules by the error they add and a failed parity names
the first diverging op by module.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _kit import run_cli

MODEL = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = Block(1, 8)
        self.blocks = nn.Sequential(Block(8, 8), Block(8, 16))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class Overflow(nn.Module):
    """An activation of ~1e6 (beyond fp16's 65504) inside `big`, scaled back before the head."""

    def __init__(self):
        super().__init__()
        self.big = nn.Linear(16, 32, bias=False)
        self.head = nn.Linear(32, 4)
        with torch.no_grad():
            self.big.weight.mul_(1e6)

    def forward(self, x):
        return self.head(torch.relu(self.big(x) * 1e-5))


def net():
    torch.manual_seed(0)
    return Net().eval()


def overflow():
    torch.manual_seed(0)
    return Overflow().eval()
'''
SHAPE = ("--input-shape", "x:1,1,8,8")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("srcmod") / "tiny_net.py"
    path.write_text(MODEL, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ort_bundle(model_file: Path) -> Path:
    out = model_file.parent / "net-ort"
    proc = run_cli("build", f"{model_file}:net", "--target", "x86-avx2", "--engine", "onnxruntime", *SHAPE,
                   "-o", str(out), "--no-latency", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_source_map_lookup_of_engine_names() -> None:
    """The names engines give fused, quantized and reordered ops still find the recorded node or tensor."""
    from edgeify_runtime.profile.modules import SourceMap

    m = SourceMap({"modules": [["blocks.0.conv", "nn.Conv2d", "tiny_net.py:14"], ["head", "nn.Linear", ""],
                               ["blocks.0.act", "nn.ReLU", ""]],
                   "names": {"node_Conv_12": 0, "relu_1": 0, "node_relu_1": 2, "node_linear": 1, "output": 1}})
    assert m.lookup("relu_1_nchwc").path == "blocks.0.conv"  # ORT NCHWc conv named after its fused ReLU's output
    assert m.lookup("fused node_linear").type == "nn.Linear"  # ORT FusedGemm
    assert m.lookup("node_Conv_12_token_4").path == "blocks.0.conv"  # ORT int8 QLinearConv
    assert m.lookup("node_linear/WithoutBiases/DequantizationMultiply").path == "head"  # OpenVINO int8
    assert m.lookup("node_Conv_123") is None  # another node: digits continue the name
    assert m.lookup("x/fq_output_0") is None  # an OpenVINO input quantizer: not the graph output's module
    assert m.lookup("ReorderOutput") is None and not SourceMap(None)
    assert m.lookup("node_relu_1").path == "blocks.0.act"  # the longest recorded name wins


def test_litert_torch_op_names_carry_their_module() -> None:
    """litert-torch writes the module scope into each TFLite op's name (as the LiteRT profile shows them): the
    fused conv+bn+relu is the conv's; a plain map-less bundle still gets its modules."""
    from edgeify_runtime.profile.modules import SourceMap

    fused = ("#2 m.Net/torch.nn.modules.container.Sequential_blocks/m.Block_0/torch.nn.modules.activation.ReLU_act;;"
             "m.Net/torch.nn.modules.container.Sequential_blocks/m.Block_0/torch.nn.modules.batchnorm.BatchNorm2d_bn;;"
             "m.Net/torch.nn.modules.container.Sequential_blocks/m.Block_0/torch.nn.modules.conv.Conv2d_conv;1")
    got = SourceMap(None).lookup(fused)
    assert (got.path, got.type) == ("blocks.0.conv", "nn.Conv2d")
    pool = SourceMap({"modules": [["pool", "nn.AdaptiveAvgPool2d", "tiny_net.py:40"]], "names": {"node_mean": 0}})
    assert pool.lookup("#4 m.Net/torch.nn.modules.pooling.AdaptiveAvgPool2d_pool;1").at == "tiny_net.py:40"
    assert SourceMap(None).lookup("x/fq_output_0") is None  # an OpenVINO name is no scope


def test_scope_names_of_the_torchscript_exporter() -> None:
    from edgeify.steps._source_modules import _from_scope_name

    assert _from_scope_name("/layer1/layer1.0/conv1/Conv").path == "layer1.0.conv1"
    assert _from_scope_name("/features/features.0/Conv").path == "features.0"
    assert _from_scope_name("node_Conv_38") is None


def test_profile_names_source_modules(ort_bundle: Path, tmp_path: Path, results_db: Path) -> None:
    facts = json.loads((ort_bundle / "manifest.json").read_text())["facts"]["source_modules"]
    paths = {m[0]: m[1] for m in facts["modules"]}
    # every Block's conv by its full path (the BatchNorm the exporter folded into it does not take its name)
    assert {"stem.conv", "blocks.0.conv", "blocks.1.conv", "head"} <= set(paths), paths
    assert paths["blocks.1.conv"] == "nn.Conv2d" and paths["head"] == "nn.Linear"
    assert any(m[2].startswith("tiny_net.py:") for m in facts["modules"])  # the user's line
    args = ("bench", str(ort_bundle), "--profile", "--runs", "5", "--min-duration", "0", "--warmup", "1")
    js = run_cli(*args, "--format", "json")
    assert js.returncode == 0, js.stderr[-2000:]
    prof = json.loads(js.stdout)["profile"]
    mods = {o["module"] for o in prof["ops"] if o["module"] is not None}
    assert {"stem.conv", "blocks.0.conv", "blocks.1.conv", "head"} <= mods, prof["ops"]
    convs = [o for o in prof["ops"] if o["type"] == "Conv"]
    assert convs and all(o["module"].endswith(".conv") and o["module_type"] == "nn.Conv2d" for o in convs)
    by = {g["module"]: g for g in prof["modules"]}
    assert by["blocks.1.conv"]["ops"] >= 1 and by["blocks.1.conv"]["time_ms"] is not None
    assert abs(sum(g["share"] or 0 for g in prof["modules"]) - 1) < 1e-3
    text = run_cli(*args, "--no-store", "--top", "20")
    assert text.returncode == 0, text.stderr[-2000:]
    assert "source module" in text.stdout and "time by source module" in text.stdout
    assert "blocks.1.conv" in text.stdout and "nn.Conv2d" in text.stdout
    # the stored result's report shows them too
    page = tmp_path / "report.html"
    rep = run_cli("report", "-o", str(page))
    assert rep.returncode == 0, rep.stderr[-2000:]
    html = page.read_text(encoding="utf-8")
    assert "time by source module" in html and "blocks.1.conv (nn.Conv2d)" in html


def test_inspect_shows_modules_of_engine_ops_and_parity(ort_bundle: Path, model_file: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from edgeify.cli.profile_view import print_inspect
    from edgeify.inspect import InspectReport, engine_report

    er = engine_report(ort_bundle)  # what `edgeify inspect MODEL --target T` reports of its quick build
    groups = {g["module"]: g["ops"] for g in er["source_modules"]}
    assert "blocks.0.conv" in groups and "head" in groups, groups
    print_inspect(InspectReport("tiny_net.py:net", "x86-avx2", "onnxruntime", "fp32", (), engine_report=er))
    shown = capsys.readouterr().out
    assert "engine ops by source module" in shown and "blocks.0.conv" in shown, shown
    par = run_cli("inspect", "--parity", str(ort_bundle), "--source", f"{model_file}:net", *SHAPE,
                  "--format", "json")
    assert par.returncode == 0, par.stderr[-2000:]
    table = json.loads(par.stdout)
    assert table["modules_from"] and table["divergent"] == []  # fp32 ORT: faithful
    assert {"stem.conv", "blocks.1.conv", "head"} <= {m["module"] for m in table["modules"]}


def test_int8_parity_ranks_source_modules(model_file: Path, tmp_path: Path) -> None:
    import numpy as np

    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32))
    out = tmp_path / "int8"
    proc = run_cli("build", f"{model_file}:net", "--target", "x86-avx2", "--engine", "onnxruntime", "--precision",
                   "int8", "--calib", str(calib), *SHAPE, "-o", str(out), "--no-latency", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # inspect --parity feeds random normal inputs, far outside the [0, 1) calibration range: the stem saturates
    par = run_cli("inspect", "--parity", str(out), "--source", f"{model_file}:net", *SHAPE, "--format", "json")
    assert par.returncode == 0, par.stderr[-2000:]
    table = json.loads(par.stdout)
    ranked = [m for m in table["modules"] if m["error_added"] > 0]
    assert ranked and ranked[0]["module"] == "stem.conv", table["modules"]
    assert abs(sum(m["share"] for m in table["modules"]) - 1) < 1e-3
    assert ranked == sorted(ranked, key=lambda m: -m["error_added"])
    # ONNX Runtime fused conv+relu: the error is the conv's, and the first diverging op says so in module terms
    assert table["first_divergent"] == "node_relu (Conv+Relu) in stem.conv (nn.Conv2d)", table["first_divergent"]
    assert {d["module"] for d in table["divergent"]} >= {"stem.conv", "blocks.0.conv"}


def test_failed_parity_names_the_first_diverging_op_by_module(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "b16"
    proc = run_cli("build", f"{model_file}:overflow", "--target", "x86-avx2", "--engine", "onnxruntime",
                   "--precision", "fp16", "--input-shape", "x:1,16", "-o", str(out), timeout=600)
    assert proc.returncode == 9, proc.stderr[-3000:]  # ParityError
    err = proc.stderr
    assert "first diverging op:" in err and "in big (nn.Linear)" in err, err[-3000:]
    assert "fp16 overflow" in err and "source modules by the error they add" in err
    ranking = err[err.index("source modules by the error they add"):]
    assert ranking.splitlines()[2].split()[0] == "big", ranking  # big adds the error, head only passes it on
    assert not out.exists()


def _chain_onnx(path: Path) -> Path:
    """x -> MatMul -> Mul -> Relu -> MatMul, as onnx.helper writes it (node names, no modules)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "W1"),
             numpy_helper.from_array(np.array(0.5, np.float32), "S"),
             numpy_helper.from_array(rng.standard_normal((32, 4)).astype(np.float32), "W2")]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="proj"),
             helper.make_node("Mul", ["h", "S"], ["scaled"], name="rescale"),
             helper.make_node("Relu", ["scaled"], ["act"], name="relu"),
             helper.make_node("MatMul", ["act", "W2"], ["y"], name="head")]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_tensors_renamed_by_the_converter_are_matched_by_value(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """onnx2tf keeps no source tensor names: parity matches tensors by value, and a conversion that goes wrong at
    one op is named as the first diverging op (the built model here is the source's real intermediates, renamed
    as TFLite names them, with the Mul's output and everything after it off)."""
    import numpy as np
    from edgeify import parity_ops

    src = _chain_onnx(tmp_path / "chain.onnx")
    x = {"x": np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)}
    ref, _ = parity_ops._onnx_all_outputs(src, x)
    renamed = {"model/tf.linalg.matmul/MatMul": ref["h"], "model/tf.math.multiply/Mul": ref["scaled"],
               "model/tf.nn.relu/Relu": ref["act"], "PartitionedCall:0": ref["y"]}
    monkeypatch.setattr(parity_ops, "_built_outputs", lambda *a: dict(renamed))
    ok = parity_ops.compare_ops(src, src, "litert", "fp32", x)
    assert ok.matched == 4 and ok.divergent == () and "matched by value" in (ok.note or "")
    broken = {**renamed, "model/tf.math.multiply/Mul": ref["scaled"] * 1.3, "model/tf.nn.relu/Relu": ref["act"] * 1.3,
              "PartitionedCall:0": ref["y"] * 1.3}
    monkeypatch.setattr(parity_ops, "_built_outputs", lambda *a: dict(broken))
    bad = parity_ops.compare_ops(src, src, "litert", "fp32", x)
    assert bad.first is not None and bad.first.name == "rescale", bad
    assert bad.first.cause.startswith("conversion") and "first diverging op: rescale (Mul)" in bad.table()


@pytest.mark.slow
def test_onnx2tf_bundle_parity_matches_tensors(digits_onnx: Path, tmp_path: Path) -> None:
    """A real onnx2tf build (the digits CNN's ONNX for rpi5, fp32): per-op parity compares its intermediates."""
    out = tmp_path / "rpi5"
    proc = run_cli("build", str(digits_onnx), "--target", "rpi5", "-o", str(out), "--no-latency", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "manifest.json").read_text())["facts"]["tflite"]["details"]["route"] == "onnx2tf"
    par = run_cli("inspect", "--parity", str(out), "--source", str(digits_onnx), "--format", "json")
    assert par.returncode == 0, par.stderr[-2000:]
    table = json.loads(par.stdout)
    assert table["matched"] >= 4 and table["divergent"] == [], table  # before: "0 of 9 source tensors matched"
    assert "matched by value" in table["note"]
    assert any(m["module"].startswith("features.") for m in table["modules"])  # the ONNX's own module metadata
