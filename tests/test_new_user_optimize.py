"""``optimize`` on an old-vintage graph (opset 9, LRN, old-style Dropout and Gemm, a concat block; the kind of ONNX
file the ONNX model zoo ships), built here with ``onnx.helper``: a rung whose tooling fails is recorded as failed
and the ladder goes on; ONNX Runtime's augmented ``qdq_loss_debug`` model is made loadable; the sensitivity
ranking scores every quantized op (the output Softmax too); ``--format json`` always prints its object; the
``--max-time`` budget is said up front.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _kit import run_cli


def old_vintage_onnx(path: Path) -> Path:
    """Conv -> Relu -> LRN -> MaxPool -> (1x1 Conv | 3x3 Conv) -> Concat -> Relu -> Dropout -> Flatten -> Gemm ->
    Softmax, opset 9, IR 4 (initializers not listed as inputs)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name: str, *shape: int, scale: float = 0.3) -> Any:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [init("w1", 8, 1, 3, 3), init("b1", 8), init("w2a", 4, 8, 1, 1), init("b2a", 4), init("w2b", 4, 8, 3, 3),
             init("b2b", 4), init("wf", 10, 8 * 4 * 4, scale=0.1), init("bf", 10)]
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             n("Relu", ["c1"], ["r1"], name="relu1"),
             n("LRN", ["r1"], ["n1"], size=3, alpha=1e-4, beta=0.75, bias=1.0, name="norm1"),
             n("MaxPool", ["n1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
             n("Conv", ["p1", "w2a", "b2a"], ["c2a"], name="fire_squeeze"),
             n("Conv", ["p1", "w2b", "b2b"], ["c2b"], pads=[1, 1, 1, 1], name="fire_expand"),
             n("Concat", ["c2a", "c2b"], ["cat"], axis=1, name="concat"),
             n("Relu", ["cat"], ["r2"], name="relu2"),
             n("Dropout", ["r2"], ["d2"], ratio=0.5, name="drop"),
             n("Flatten", ["d2"], ["f"], axis=1, name="flatten"),
             n("Gemm", ["f", "wf", "bf"], ["logits"], transB=1, name="fc"),
             n("Softmax", ["logits"], ["prob"], axis=1, name="softmax")]
    graph = helper.make_graph(nodes, "oldnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], producer_name="zoo-like")
    model.ir_version = 4
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("oldnet")
    np.savez(root / "calib.npz", x=np.random.default_rng(1).random((32, 1, 8, 8), dtype=np.float32))
    return {"dir": root, "onnx": old_vintage_onnx(root / "old.onnx"), "calib": root / "calib.npz"}


@pytest.fixture(scope="module")
def qdq(old: dict[str, Path]) -> Path:
    """The graph's ONNX Runtime int8 (QDQ) build, as the ladder's sensitivity ranking reads it."""
    from edgeify.build import build

    res = build(old["onnx"], target="x86", precision="int8", engine="onnxruntime", calib=old["calib"],
                out=old["dir"] / "ort-int8", measure_latency=False)
    return res.out / res.manifest.engine.artifact


def _feeds(old: dict[str, Path]) -> list[dict[str, np.ndarray]]:
    x = np.load(old["calib"])["x"]
    return [{"x": x[i:i + 1]} for i in range(4)]


def test_augmented_model_with_untyped_value_info_is_made_loadable(qdq: Path, tmp_path: Path) -> None:
    """ONNX Runtime refuses a model with an untyped value_info ("Invalid tensor data type 0"), which its
    modify_model_output_intermediate_tensors leaves on such graphs; loadable() drops them."""
    import onnx
    import onnxruntime as ort
    from edgeify.optimize.sensitivity import loadable
    from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors

    aug = tmp_path / "aug.onnx"
    modify_model_output_intermediate_tensors(str(qdq), str(aug))
    model = onnx.load(str(aug))
    name = next(n.output[0] for n in model.graph.node if n.op_type == "Conv")
    for vi in [v for v in model.graph.value_info if v.name == name]:
        model.graph.value_info.remove(vi)
    untyped = onnx.ValueInfoProto(name=name)
    untyped.type.tensor_type.SetInParent()  # a tensor type without an element type: what such graphs end up with
    model.graph.value_info.append(untyped)
    onnx.save(model, str(aug))
    with pytest.raises(Exception, match="Invalid tensor data type 0"):
        ort.InferenceSession(str(aug), providers=["CPUExecutionProvider"])
    assert loadable(aug) == 1
    ort.InferenceSession(str(aug), providers=["CPUExecutionProvider"])  # loads now
    assert loadable(aug) == 0


def test_sensitivity_ranks_every_quantized_op(qdq: Path, old: dict[str, Path], tmp_path: Path) -> None:
    """Not only Conv/MatMul/Gemm: the int8 output Softmax (and Concat, LRN...) are ranked too, so a collapsed
    Softmax can be kept in float; a ReLU folded into an op's output quantization is not counted as an error."""
    from edgeify.optimize.sensitivity import rank_layers

    ranked = rank_layers(qdq, _feeds(old), tmp_path / "sens")
    names = {name for name, _, _ in ranked}
    assert {"softmax", "concat", "conv1", "fc"} <= names
    assert all(0.0 <= score < 0.2 for _, score, _ in ranked), ranked  # folded ReLUs read as ~0.9 before


class _Runner:
    """The ladder's view of a search over already-built candidates; its sensitivity tool runs for real on a
    QDQ file that ONNX Runtime cannot read (truncated), as a broken tool would fail."""

    def __init__(self, base: Any, broken: Path) -> None:
        self.base, self.broken, self.plans = base, broken, []

    def try_plan(self, plan: Any) -> tuple[Any, float | None]:
        import dataclasses

        from edgeify.optimize.records import Accuracy

        self.plans.append(plan.precision)
        ok = plan.precision == "fp32"
        acc = Accuracy(measure="agreement", drop=0.0 if ok else 30.0, parity_passed=ok)
        return dataclasses.replace(self.base, plan=plan, accuracy=acc), 1.0

    def accuracy_ok(self, built: Any) -> bool:
        return bool(built.accuracy and built.accuracy.parity_passed)

    def rank_layers(self, built: Any) -> list[tuple[str, float, tuple[str, ...]]]:
        from edgeify.optimize.sensitivity import rank_layers

        return rank_layers(self.broken, [], self.broken.parent / "sens")

    def precisions_for(self, engine: str) -> list[str]:
        return ["int8", "int8-mixed", "fp16", "fp32"]

    def out_of_time(self) -> bool:
        return False

    def fp16_overflow(self, engine: str) -> tuple[str, ...]:
        return ()

    def max_accuracy_drop(self) -> float | None:
        return 1.0


def test_a_rung_whose_tool_fails_is_recorded_and_the_ladder_goes_on(qdq: Path, tmp_path: Path) -> None:
    from edgeify.optimize.candidates import Built
    from edgeify.optimize.ladder import run_ladder
    from edgeify.optimize.space import ArtifactPlan
    from edgeify.targets import load_registry

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(qdq.read_bytes()[:200])
    spec = load_registry(()).get("x86-avx2")
    base = Built(ArtifactPlan(engine="onnxruntime", precision="int8"), None, "onnxruntime", None,
                 status="parity-failed", error="cosine 0.0")
    runner = _Runner(base, broken)
    rungs, got = run_ladder(runner, base, None, spec)
    failed = [r for r in rungs if r.rung == "int8-mixed"]
    assert failed and not failed[0].accepted and failed[0].reason.startswith("failed: sensitivity ranking raised")
    assert got is not None and got.plan.precision == "fp32"  # the ladder went on past the failed rung
    assert rungs[-1].accepted and rungs[-1].precision == "fp32"


def test_optimize_json_always_prints_its_object_and_says_the_budget(old: dict[str, Path]) -> None:
    """--max-time 1: the budget (and that a bare number is seconds) is said before the search; nothing meets an
    impossible latency budget, and stdout still holds one JSON object with "ok": false and what was tried."""
    res = run_cli("optimize", str(old["onnx"]), "--target", "x86", "--calib", str(old["calib"]), "--max-time", "1",
                  "--max-latency-ms", "0.000001", "-o", str(old["dir"] / "opt"), "--format", "json", cwd=old["dir"])
    first = res.stderr.strip().splitlines()[0]
    assert "search budget: 1 s (--max-time 1)" in first and "a bare number is seconds" in first, res.stderr
    data = json.loads(res.stdout)
    assert data["ok"] is False and res.returncode == data["error"]["exit_code"] == 13
    assert data["candidates"] and "max-time" in data["stopped"]
    progress = [ln for ln in res.stderr.splitlines() if ln.startswith("optimize: [1] ")]
    assert progress and "None/None" not in res.stderr and "done" in progress[-1] and "left" in progress[-1]
