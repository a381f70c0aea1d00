"""``edgeify optimize --compress`` (issue 25): compression as rungs of the search, on the digits CNN trained here
(the ``cz`` fixture of tests/test_compress.py). The refusals run no build; the search tests train for real (by
epochs, never by wall time) and measure on this machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from _kit import run_cli
from test_compress import cz  # noqa: F401  (the module fixture: trained digits CNN + data)

UNTRAINED = '''
import sys
sys.path.insert(0, {examples!r})
from model import DigitsCNN


def untrained():
    return DigitsCNN().eval()
'''


@pytest.fixture
def untrained(tmp_path: Path) -> dict[str, Path]:
    """A module.py:factory of the (untrained) digits CNN and data files: enough for the refusals (no build)."""
    from _kit import REPO

    (tmp_path / "untrained.py").write_text(UNTRAINED.format(examples=str(REPO / "examples" / "digits")))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "x.npz", x=rng.random((16, 1, 8, 8), dtype=np.float32), labels=np.arange(16) % 10)
    np.savez(tmp_path / "nolabels.npz", x=rng.random((16, 1, 8, 8), dtype=np.float32))
    return {"model": tmp_path / "untrained.py", "data": tmp_path / "x.npz", "nolabels": tmp_path / "nolabels.npz"}


def _optimize(u: dict[str, Path], out: Path, *extra: str):
    return run_cli("optimize", f"{u['model']}:untrained", "--input-shape", "1,1,8,8", "--target", "x86-avx512",
                   "--engine", "onnxruntime", "-p", "int8", "--calib", str(u["data"]), "-o", str(out), *extra)


def test_compress_refusals_before_any_build(untrained: dict[str, Path], tmp_path: Path, results_db: Path) -> None:
    import edgeify
    from edgeify.errors import DataError, UsageError

    out = tmp_path / "out"
    no_train = _optimize(untrained, out, "--eval", str(untrained["data"]), "--compress", "prune,distill")
    assert no_train.returncode == 2, no_train.stderr[-2000:]
    assert "needs training data" in no_train.stderr and "--train" in no_train.stderr
    assert "building" not in no_train.stderr  # refused up front
    lines: list[str] = []

    def opt(**kw):
        return edgeify.optimize(f"{untrained['model']}:untrained", target="x86-avx512", out=out,
                                calib=untrained["data"], input_shapes=["1,1,8,8"], engines=["onnxruntime"],
                                precisions=["int8"], progress=lines.append, **kw)

    with pytest.raises(UsageError, match="shrink"):
        opt(eval=untrained["data"], train=untrained["data"], compress="prune,shrink")
    with pytest.raises(UsageError, match="--compress"):
        opt(eval=untrained["data"], train=untrained["data"])
    with pytest.raises(UsageError, match="labelled --eval"):
        opt(eval=untrained["nolabels"], train=untrained["data"], compress="qat")
    with pytest.raises(DataError, match=r"nope\.npz") as missing:
        opt(eval=untrained["data"], train=tmp_path / "nope.npz", compress="prune,distill")
    assert missing.value.exit_code == 7  # as for --calib
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.full((4, 1, 8, 8), np.nan, np.float32))
    with pytest.raises(DataError, match=r"bad\.npz"):
        opt(eval=untrained["data"], train=bad, compress="qat")
    assert not any("building" in m for m in lines)
    assert not out.exists() and not list(tmp_path.glob(".edgeify-optimize-*"))


def test_compress_parse() -> None:
    from edgeify.errors import UsageError
    from edgeify.optimize.compress_rungs import RATIOS, parse_compress

    assert parse_compress(None, None) is None
    req = parse_compress(" prune , distill,qat ", "t.npz", "30s", 2, lr=0.01)
    assert req.phases == ("prune", "distill", "qat") and req.prunes and req.qat and req.ratios == RATIOS
    assert req.train_seconds == 30.0 and req.epochs == 2 and req.lr == 0.01
    with pytest.raises(UsageError, match="positive learning rate"):
        parse_compress("qat", "t.npz", lr=0.0)
    with pytest.raises(UsageError, match="distillation fine-tunes a pruned student"):
        parse_compress("distill", "t.npz")
    with pytest.raises(UsageError, match="not a duration"):
        parse_compress("qat", "t.npz", "soon")


@pytest.mark.slow
def test_optimize_compress_prune_distill(cz: dict[str, Path], tmp_path: Path, results_db: Path,  # noqa: F811
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """One prune ratio (0.5) + distillation beside the uncompressed int8 search: every candidate says its
    compression (None when not compressed), the compressed ones' drop is against the ORIGINAL model, and only
    those on the Pareto front may be chosen."""
    import edgeify
    from edgeify.optimize import compress_rungs

    monkeypatch.setattr(compress_rungs, "RATIOS", (0.5,))
    lines: list[str] = []
    res = edgeify.optimize(f"{cz['factory']}:trained", target="x86-avx512", out=tmp_path / "best",
                           calib=cz["calib"], eval=cz["eval"], input_shapes=["1,1,8,8"], engines=["onnxruntime"],
                           precisions=["int8"], max_accuracy_drop=5.0, compress="prune,distill",
                           train=cz["train"], epochs=3, progress=lines.append)
    plain = [c for c in res.candidates if c.compression is None]
    comp = [c for c in res.candidates if c.compression is not None]
    assert plain and comp
    original = next(c.accuracy.source_accuracy for c in plain if c.accuracy and c.accuracy.source_accuracy)
    for c in comp:
        rec = c.compression
        assert rec["phases"] == ["prune", "distill"] and rec["prune_ratio"] == 0.5 and rec["distilled"]
        assert rec["macs"]["after"] < rec["macs"]["before"] / 2
        assert rec["original_accuracy"] == pytest.approx(original)
        assert rec["training"][0]["epochs"] == 3
        assert isinstance(rec["on_front"], bool)
        if c.accuracy is not None and c.accuracy.built_accuracy is not None:  # against the original, not the student
            assert c.accuracy_drop == pytest.approx(round((original - c.accuracy.built_accuracy) * 100, 3))
            assert c.accuracy.source_accuracy == pytest.approx(original)
            assert rec["compressed_accuracy"] is not None
        if not rec["on_front"] and c.latency("p50") is not None:
            assert "not on the Pareto front" in c.reason and not c.meets_budget
    assert any("compression rung prune 0.5 + distill" in m for m in lines)
    rows = res.to_json()["candidates"]
    assert all("compression" in r for r in rows)
    assert [r["compression"] is None for r in rows] == [c.compression is None for c in res.candidates]
    ch = res.chosen
    assert ch is not None
    picked = res.candidates[ch.index]
    assert picked.compression is None or picked.compression["on_front"]
    assert ch.compression == picked.compression
    manifest = json.loads((tmp_path / "best" / "manifest.json").read_text())
    assert manifest["optimize"]["compression"] == ch.compression


# examples/outlier's ONNX model as an eager PyTorch module with its weights: the benchmark's own template
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from compress_outlier import TORCH_MODEL as OUTLIER_TORCH  # noqa: E402


@pytest.mark.slow
def test_qat_rung_first_in_the_ladder_of_the_outlier_model(tmp_path: Path, results_db: Path) -> None:
    """The outlier model (two conv2 channels 1000x: plain int8 fails its parity gate): with --compress qat the
    ladder tries QAT before keeping layers in float; QAT's int8 keeps every compute op in int8 and holds a
    2.5 pt budget against the original model (lr 1e-2, 30 epochs on the training split)."""
    import importlib.util

    import edgeify
    from _kit import REPO
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    spec = importlib.util.spec_from_file_location("edgeify_example_outlier_q", REPO / "examples/outlier/make_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    files = mod.make(tmp_path / "outlier")
    (tmp_path / "outlier_torch.py").write_text(OUTLIER_TORCH.format(onnx=str(files["model"])))
    d = load_digits()
    x_tr, _, y_tr, _ = train_test_split((d.images.astype(np.float32) / 16.0)[:, None], d.target.astype(np.int64),
                                        test_size=0.3, stratify=d.target, random_state=0)
    np.savez(tmp_path / "train.npz", x=x_tr, labels=y_tr)
    res = edgeify.optimize(f"{tmp_path / 'outlier_torch.py'}:model", target="x86-avx512", out=tmp_path / "best",
                           calib=files["calib"], eval=files["eval"], input_shapes=["1,1,8,8"],
                           engines=["onnxruntime"], precisions=["int8"], max_accuracy_drop=2.5, compress="qat",
                           train=tmp_path / "train.npz", epochs=30, train_lr=1e-2, progress=lambda m: None)
    ladder = [r for r in res.ladder if r.engine == "onnxruntime"]
    assert ladder[0].rung == "int8" and not ladder[0].accepted  # plain int8 fails (parity / accuracy)
    assert ladder[1].rung == "qat"  # QAT is tried before any layer is kept in float
    qat = ladder[1]
    assert qat.accepted and qat.quantized_ops == qat.total_ops and qat.accuracy_drop <= 2.5
    assert not any(r.precision == "int8-mixed" for r in ladder)  # the ladder stopped at QAT
    ch = res.chosen
    assert ch is not None and ch.compression["qat"] and ch.compression["phases"] == ["qat"]
    assert ch.precision == "int8" and ch.quantized_ops == ch.total_ops
    assert ch.accuracy_drop <= 2.5


@pytest.mark.slow
def test_ctrl_c_during_a_compression_rung_keeps_the_best_so_far(cz: dict[str, Path], tmp_path: Path,  # noqa: F811
                                                                 results_db: Path) -> None:
    """SIGINT while a prune ratio trains: exit 130, the uncompressed best so far published at -o, no work dir."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out, marker = tmp_path / "best", tmp_path / "paused"
    env = {**os.environ, "EDGEIFY_TEST_PAUSE_AT": "train", "EDGEIFY_TEST_PAUSE_FILE": str(marker)}
    env.pop("EDGEIFY_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "edgeify", "optimize", f"{cz['factory']}:trained",
                             "--input-shape", "1,1,8,8", "--target", "x86-avx512", "--engine", "onnxruntime",
                             "-p", "int8", "--calib", str(cz["calib"]), "--eval", str(cz["eval"]),
                             "--train", str(cz["train"]), "--compress", "prune,distill", "--epochs", "1",
                             "--max-accuracy-drop", "5", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 600
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"training never started: {proc.communicate()}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted" in err and "Traceback" not in err
    assert "compression rung prune 0.25" in err
    manifest = json.loads((out / "manifest.json").read_text())  # the uncompressed search had finished
    assert manifest["precision"] == "int8" and manifest["optimize"]["compression"] is None
    assert not list(tmp_path.glob(".edgeify-optimize-*")) and not list(tmp_path.glob(".edgeify-staging-*"))


def test_a_compressed_candidate_must_beat_the_uncompressed_beyond_noise() -> None:
    from edgeify.optimize.compress_rungs import choose_kept, mark_front
    from edgeify.optimize.records import Accuracy, Budgets, Candidate

    def cand(p50: float, drop: float = 0.0, size: int = 100, comp: dict | None = None) -> Candidate:
        return Candidate(engine="e", precision="int8", latency_ms={"p50": p50}, size_bytes=size, status="measured",
                         accuracy=Accuracy(measure="labels", drop=drop), accuracy_drop=drop, compression=comp)

    budgets = Budgets(max_accuracy_drop=1.0)
    pruned = {"prune_ratio": 0.5}
    tied = mark_front([cand(0.012), cand(0.0121, 0.18, 50, pruned)], "p50")
    assert tied[1].compression["on_front"]  # on the front by size alone
    assert choose_kept(tied, budgets, "latency") == 0  # within noise: the uncompressed model
    faster = mark_front([cand(0.054), cand(0.024, -0.5, 50, pruned)], "p50")
    assert choose_kept(faster, budgets, "latency") == 1
    dominated = mark_front([cand(0.020, 0.0, 40), cand(0.024, 0.1, 50, pruned)], "p50")
    assert dominated[1].compression["on_front"] is False and not dominated[1].meets_budget
    assert "not on the Pareto front" in dominated[1].reason
    assert choose_kept(dominated, budgets, "latency") == 0
