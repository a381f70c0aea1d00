"""Compression (issue 25): structured pruning, distillation from the source model and QAT, as the ``compress``
build step, on the digits CNN trained on sklearn's load_digits (the session fixture ``digits``).

Training runs by epochs (never by wall time) so each test does the same work on a busy machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _kit import REPO, run_cli

FACTORY = '''
import sys
import torch
sys.path.insert(0, {examples!r})
from model import DigitsCNN


def trained():
    model = DigitsCNN()
    model.load_state_dict(torch.load({weights!r}, weights_only=True))
    return model.eval()
'''

LOADER = '''
import numpy as np


def batches():
    data = np.load({train!r})
    for i in range(0, len(data["x"]), 64):
        yield {{"x": data["x"][i:i + 64], "labels": data["labels"][i:i + 64]}}


def nan_batches():
    yield {{"x": np.full((4, 1, 8, 8), np.nan, np.float32)}}
'''


@pytest.fixture(scope="module")
def cz(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The digits CNN trained here (examples/digits/train.py's data split and loop, 12 epochs, one thread: seconds)
    as ``module.py:factory`` (pruning needs the eager module), with train/calib/eval .npz files."""
    import importlib.util

    import torch

    root = tmp_path_factory.mktemp("compress")
    spec = importlib.util.spec_from_file_location("edgeify_compress_test_train", REPO / "examples/digits/train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    x_train, y_train, x_eval, y_eval = mod.load_data()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = mod.train(x_train, y_train, 12).eval()
    finally:
        torch.set_num_threads(threads)
    accuracy = mod.evaluate(model, x_eval, y_eval)
    assert accuracy >= 0.95
    weights = root / "weights.pt"
    torch.save(model.state_dict(), weights)
    (root / "digits_factory.py").write_text(FACTORY.format(examples=str(REPO / "examples" / "digits"),
                                                          weights=str(weights)))
    np.savez(root / "train.npz", x=x_train[:512], labels=y_train[:512])
    np.savez(root / "calib.npz", x=x_train[-128:])
    np.savez(root / "eval.npz", x=x_eval, labels=y_eval)
    (root / "digits_loader.py").write_text(LOADER.format(train=str(root / "train.npz")))
    return {"factory": root / "digits_factory.py", "train": root / "train.npz", "calib": root / "calib.npz",
            "eval": root / "eval.npz", "loader": root / "digits_loader.py", "root": root}


def _request(cz: dict[str, Path], out: Path, precision: str = "fp32", train: str | None = None, **options):
    from edgeify.request import Budgets, BuildRequest, DataSets

    return BuildRequest(model=f"{cz['factory']}:trained", target="x86-avx512", engine="onnxruntime", out=str(out),
                        precision=precision, input_shapes=("1,1,8,8",), measure_latency=False, use_cache=False,
                        data=DataSets(calibration=str(cz["calib"]), evaluation=str(cz["eval"]), train=train),
                        budgets=Budgets(), options={"compress": options})


def _source(cz: dict[str, Path]):
    from edgeify.sources import open_source

    return open_source(f"{cz['factory']}:trained", ["1,1,8,8"])


def test_pruned_build_exports_smaller_shapes(cz: dict[str, Path], tmp_path: Path) -> None:
    import onnx
    from edgeify import build
    from edgeify.compress.step import CompressionFacts
    from edgeify.steps.facts import facts_of

    res = build(_request(cz, tmp_path / "pruned", prune=0.5))
    model = onnx.load(str(tmp_path / "pruned" / "model.onnx"))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    shapes = {i.name: list(i.dims) for i in model.graph.initializer}
    widths = sorted(shapes[c.input[1]][0] for c in convs)
    assert widths == [8, 16]  # 16 and 32 output channels before: half of every conv's channels are gone
    facts = facts_of(res.manifest, CompressionFacts)
    assert facts.steps == ("prune",) and facts.prune_ratio == 0.5
    assert facts.macs["after"] < facts.macs["before"] / 2 and facts.params["after"] < facts.params["before"]
    assert facts.widths["features.0"] == (16, 8)
    assert res.validation.passed  # the parity gate checked the export against the pruned model
    assert facts.accuracy["against"] == "the original source model"
    assert facts.accuracy["original_accuracy"] >= 0.97


def test_distillation_lowers_the_students_loss_against_the_teacher(cz: dict[str, Path], tmp_path: Path) -> None:
    import copy

    import torch
    from edgeify.compress import CompressOptions, compress_source
    from edgeify.compress.prune import prune

    src = _source(cz)
    teacher = src.load()
    held_out = torch.from_numpy(np.load(cz["eval"])["x"])

    def kl(student) -> float:
        with torch.no_grad():
            t, s = teacher(held_out), student(held_out)
        return float(torch.nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True,
                                                reduction="batchmean"))

    pruned = copy.deepcopy(teacher)
    prune(pruned, (torch.randn(2, 1, 8, 8),), 0.75)
    before = kl(pruned.eval())
    comp = compress_source(src, CompressOptions(train=str(cz["train"]), prune=0.75, distill=True, epochs=4),
                           tmp_path / "c")
    after = kl(torch.export.load(str(comp.source.path)).module())
    assert after < before * 0.5, (before, after)
    stats = comp.record["distill"]
    assert stats["epochs"] == 4 and stats["final_loss"] < stats["first_loss"]
    assert comp.record["teacher"]["sha256"] == src.sha256
    assert comp.record["train_data"]["count"] == 512 and comp.record["train_data"]["labelled"]


def test_qat_int8_build_passes_the_ort_parity_gate(cz: dict[str, Path], tmp_path: Path) -> None:
    from edgeify import build
    from edgeify.compress.step import CompressionFacts
    from edgeify.steps.facts import facts_of

    res = build(_request(cz, tmp_path / "qat", precision="int8", train=str(cz["train"]), qat=True, epochs=1))
    assert res.validation.passed
    assert res.quantization.to_dict().get("quantized_ops", 1) > 0
    facts = facts_of(res.manifest, CompressionFacts)
    assert facts.qat and facts.steps == ("qat",) and facts.training[0]["phase"] == "qat"
    assert facts.train_data["sha256"] and facts.accuracy["drop_points"] < 2.0


def test_a_loader_reference_feeds_training(cz: dict[str, Path], tmp_path: Path) -> None:
    from edgeify.compress import CompressOptions, compress_source

    comp = compress_source(_source(cz), CompressOptions(train=f"{cz['loader']}:batches", distill=True, epochs=1),
                           tmp_path / "c")
    assert comp.record["train_data"]["count"] == 512 and comp.record["train_data"]["sha256"]
    assert comp.record["distill"]["steps"] == 8


@pytest.mark.parametrize("case", ["nan", "shape", "labels", "loader-nan", "missing"])
def test_bad_train_data_gets_the_data_errors(cz: dict[str, Path], tmp_path: Path, case: str) -> None:
    x = np.load(cz["train"])["x"]
    bad = tmp_path / "bad.npz"
    if case == "nan":
        x = x.copy()
        x[3, 0, 0, 0] = np.nan
        np.savez(bad, x=x)
        want = "NaN"
    elif case == "shape":
        np.savez(bad, x=x[:, :, :4])
        want = "expected"
    elif case == "labels":
        np.savez(bad, x=x, labels=np.full(len(x), 12, np.int64))
        want = "outside the model's classes"
    elif case == "loader-nan":
        bad = f"{cz['loader']}:nan_batches"  # type: ignore[assignment]
        want = "NaN"
    else:
        bad = tmp_path / "nope.npz"
        want = "not found"
    out = tmp_path / "b"
    if case == "missing":  # one run through the CLI: the exit code and message a user sees
        r = run_cli("build", f"{cz['factory']}:trained", "--input-shape", "1,1,8,8", "--target", "x86-avx512",
                    "--train", str(bad), "--distill", "--epochs", "1", "--no-latency", "-o", str(out))
        assert r.returncode == 7, r.stderr
        assert want in r.stderr and Path(str(bad)).name in r.stderr and "Traceback" not in r.stderr
    else:
        from edgeify import build
        from edgeify.errors import DataError

        with pytest.raises(DataError) as err:
            build(_request(cz, out, train=str(bad), distill=True, epochs=1))
        assert want in err.value.message and Path(str(bad).split(":")[0]).name in err.value.message
        assert err.value.exit_code == 7
    assert not out.exists() and not list(tmp_path.glob(".edgeify-*"))


def test_sources_that_cannot_be_compressed_are_refused(cz: dict[str, Path], tmp_path: Path) -> None:
    from _kit import make_gemm_onnx

    onnx_model = make_gemm_onnx(tmp_path / "m.onnx")
    r = run_cli("build", str(onnx_model), "--target", "x86", "--prune", "0.5", "-o", str(tmp_path / "a"))
    assert r.returncode == 2 and "module.py:factory" in r.stderr and "ONNX" in r.stderr
    import torch

    pt2 = tmp_path / "m.pt2"
    net = torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()
    torch.export.save(torch.export.export(net, (torch.randn(2, 8),)), str(pt2))
    from edgeify.compress import CompressOptions, refuse_unsupported
    from edgeify.errors import UsageError
    from edgeify.sources import open_source

    with pytest.raises(UsageError, match="--prune needs the eager model"):
        refuse_unsupported(open_source(str(pt2)), CompressOptions(prune=0.5))
    refuse_unsupported(open_source(str(pt2)), CompressOptions(train="t.npz", distill=True, qat=True))  # fine
    with pytest.raises(UsageError, match="need training data"):
        CompressOptions(distill=True)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_training_leaves_nothing(cz: dict[str, Path], tmp_path: Path) -> None:
    out, marker, home = tmp_path / "bundle", tmp_path / "paused", tmp_path / "home"
    env = {**os.environ, "EDGEIFY_TEST_PAUSE_AT": "train", "EDGEIFY_TEST_PAUSE_FILE": str(marker),
           "EDGEIFY_HOME": str(home)}
    env.pop("EDGEIFY_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "edgeify", "build", f"{cz['factory']}:trained", "--input-shape",
                             "1,1,8,8", "--target", "x86-avx512", "--train", str(cz["train"]), "--prune", "0.5",
                             "--distill", "--epochs", "1", "--no-latency", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_default_sigint)
    deadline = time.monotonic() + 300
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"training never started: {proc.communicate()}")
        time.sleep(0.05)
    assert list(tmp_path.glob(".edgeify-staging-*/work/source-compress"))  # the compress step was writing there
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".edgeify-*"))
    assert not list(home.rglob(".tmp-*"))


def test_pruning_keeps_residual_depthwise_and_attention_blocks_consistent() -> None:
    import torch
    from edgeify.compress.prune import prune
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 32, 3, padding=1)
            self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
            self.pw = nn.Conv2d(32, 32, 1)
            self.proj = nn.Linear(32, 64)
            self.attn = nn.MultiheadAttention(64, 4, batch_first=True)
            self.fc = nn.Linear(64, 5)

        def forward(self, x):
            y = self.stem(x)
            y = y + self.pw(self.dw(y)).relu()  # a residual add over a depthwise conv
            t = self.proj(y.flatten(2).transpose(1, 2))
            t = t + self.attn(t, t, t, need_weights=False)[0]
            return self.fc(t.mean(1))

    torch.manual_seed(0)
    model, x = Block().eval(), torch.randn(2, 3, 8, 8)
    report = prune(model, (x,), 0.5)
    assert report.widths == {"stem": [32, 16], "dw": [32, 16], "pw": [32, 16]}  # the residual group, together
    assert model.dw.groups == model.dw.in_channels == 16  # still depthwise
    assert model.attn.embed_dim % model.attn.num_heads == 0 and model.fc.out_features == 5
    assert model(x).shape == (2, 5) and report.macs_after < report.macs_before
    torch.export.export(model, (x,))  # the pruned model still exports


def test_distill_and_qat_work_from_a_pt2(cz: dict[str, Path], tmp_path: Path) -> None:
    """A .pt2's module (a GraphModule with its own batch range and eval-form BatchNorm) fine-tunes too."""
    import torch
    from edgeify.compress import CompressOptions, compress_source
    from edgeify.sources import open_source

    model = _source(cz).load()
    pt2 = tmp_path / "digits.pt2"
    dyn = ({0: torch.export.Dim("batch", min=1, max=1024)},)
    torch.export.save(torch.export.export(model, (torch.randn(2, 1, 8, 8),), dynamic_shapes=dyn), str(pt2))
    comp = compress_source(open_source(str(pt2)), CompressOptions(train=str(cz["train"]), distill=True, qat=True,
                                                                  epochs=1), tmp_path / "c")
    assert comp.record["steps"] == ["distill", "qat"] and comp.record["teacher"]["kind"] == "exported-program"
    out = torch.export.load(str(comp.source.path)).module()(torch.from_numpy(np.load(cz["eval"])["x"][:5]))
    assert out.shape == (5, 10)  # the batch dimension stayed dynamic
