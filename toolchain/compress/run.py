"""Compress a PyTorch source before its build: prune, distill, QAT, then hand the build a new ``.pt2`` source.

The engine's pipeline (export, its own int8 quantizer, the parity gate) then runs on the compressed model as on
any source: the parity gate checks each conversion against its own input (the compressed model). Accuracy is
measured end to end, against the ORIGINAL model on ``--eval`` (:func:`finish`), and that is the drop the
manifest's ``compression`` record reports and ``--max-accuracy-drop`` budgets.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeify.checks import collect
from edgeify.errors import AccuracyGateError, ConversionError, EngineMissingError, UsageError
from edgeify.preflight import n_classes as classes_of

from . import train as tr
from .data import load_train
from .options import CompressOptions
from .prune import count, prune

if TYPE_CHECKING:
    from edgeify.sources import SourceModel

RECORD_SCHEMA = 1
#: below this many parameters training runs on one thread
SMALL_MODEL_PARAMS = 2_000_000
PYTORCH_ROUTE = ("build from the PyTorch source instead: module.py:factory (a function returning the trained "
                 "nn.Module; needed for --prune) or model.pt2 (torch.export.save)")


@dataclass
class Compressed:
    source: SourceModel  # the compressed model, as a .pt2 source for the build's pipeline
    original: SourceModel
    record: dict[str, Any]

    def end_to_end(self, validation: Any, eval_data: Any, n_outputs: int,
                   max_accuracy_drop: float | None) -> dict[str, Any] | None:
        """The built model's accuracy against the ORIGINAL model on labelled ``--eval`` (None without it), gated
        by ``max_accuracy_drop`` (``AccuracyGateError``)."""
        acc = getattr(validation, "accuracy", None)
        if acc is None or eval_data is None or eval_data.labels is None:
            return None
        original = original_accuracy(self.original, eval_data, n_outputs)
        drop = round((original - acc.built_accuracy) * 100, 3)
        if max_accuracy_drop is not None and drop > max_accuracy_drop:
            raise AccuracyGateError(
                f"compressed build: accuracy dropped {drop:.2f} points against the original model "
                f"({original:.2%} -> {acc.built_accuracy:.2%}), more than --max-accuracy-drop {max_accuracy_drop}",
                hint="prune less (--prune), train longer (--train-time), or add --distill")
        return {"samples": acc.samples, "original_accuracy": original, "compressed_accuracy": acc.source_accuracy,
                "built_accuracy": acc.built_accuracy, "drop_points": drop, "against": "the original source model"}


def original_accuracy(original: SourceModel, data: Any, n_outputs: int) -> float:
    ref = collect(original.reference().run, data, n_outputs)[0]
    pred = ref.reshape(len(ref), -1).argmax(1)
    return float((pred == data.labels[: len(ref)]).mean())


def _need(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise EngineMissingError(f"{what} needs the Python package {module!r}, which is not installed",
                                 hint="pip install 'edgeify[compress]'") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def refuse_unsupported(source: SourceModel, opts: CompressOptions) -> None:
    """Up front, before anything runs: what the source kind cannot do."""
    flags = " ".join(f for f, on in (("--prune", opts.prune is not None), ("--distill", opts.distill),
                                     ("--qat", opts.qat)) if on)
    if source.kind == "onnx":
        raise UsageError(f"{flags}: compression fine-tunes a PyTorch model; {source.path.name} is ONNX",
                         hint=PYTORCH_ROUTE)
    if source.kind == "torchscript":
        raise UsageError(f"{flags}: a TorchScript archive cannot be pruned or fine-tuned here", hint=PYTORCH_ROUTE)
    if opts.prune is not None and source.kind != "module-factory":
        raise UsageError(
            f"--prune needs the eager model: torch-pruning traces nn.Module layers, which the graph of "
            f"{source.path.name} ({source.kind}) no longer has",
            hint="pass module.py:factory, a function that builds the model and loads its trained weights "
                 "(model.load_state_dict(torch.load('weights.pt', weights_only=True))); --distill and --qat "
                 "also work from a .pt2")


def compress_source(source: SourceModel, opts: CompressOptions, out_dir: Path,
                    progress: Callable[[str], None] = lambda m: None) -> Compressed:
    """Prune / distill / QAT ``source`` into ``out_dir/model.pt2``; the returned ``Compressed.source`` is that
    model. Training data is opened and checked first (``DataError`` before any training)."""
    import torch

    refuse_unsupported(source, opts)
    if opts.prune is not None:
        _need("torch_pruning", "--prune")
    if opts.qat:
        import logging

        for name in ("torchao", "torch.utils._pytree"):  # "Failed to load <CUDA kernel library>" on CPU builds
            logging.getLogger(name).setLevel(logging.ERROR)
        _need("torchao", "--qat")
    t0 = time.perf_counter()
    torch.manual_seed(opts.seed)
    inputs, outputs = source.pre_signature()
    # a .pt2's module carries its own batch range (e.g. 2..1024): let export infer it; an eager module gets a named
    # batch dim, so a model that cannot take any batch size fails here instead of exporting a fixed batch
    batch = torch.export.Dim.AUTO if source.kind == "exported-program" else torch.export.Dim("batch", min=1, max=4096)
    dynamic = tuple({0: batch} if t.shape and not isinstance(t.shape[0], int) else {} for t in inputs)
    example = tuple(torch.randn(2 if d else s[0], *s[1:]) for s, d in
                    zip(source.example_shapes(batch=2), dynamic, strict=True))  # batch 2: 1 would specialize
    obj = source.load()
    teacher = obj.module() if source.kind == "exported-program" else obj
    tr.set_mode(teacher, False)
    n_classes = classes_of(outputs)
    if n_classes is None:
        with torch.no_grad():
            first = tr._flat(teacher(*example))[0]
        n_classes = int(first.shape[1]) if first.ndim == 2 and first.shape[1] > 1 else None
    data = None
    if opts.train is not None:
        data = load_train(opts.train, list(inputs), n_classes, batch_size=opts.batch_size, seed=opts.seed)
        progress(f"training data: {data.origin} ({data.count or '?'} samples"
                 f"{', labelled' if data.labelled else ', no labels: pure distillation'})")
    student = obj.module() if source.kind == "exported-program" else copy.deepcopy(obj)
    record: dict[str, Any] = {"schema": RECORD_SCHEMA, "steps": [], "options": opts.describe(),
                              "teacher": {"file": source.path.name, "sha256": source.sha256, "kind": source.kind}}
    eager = source.kind == "module-factory"
    if eager:
        macs, params = count(student, example)
        record.update(macs={"before": macs, "after": macs}, params={"before": params, "after": params})
    if opts.prune is not None:
        progress(f"pruning {opts.prune:.0%} of the channels ({opts.importance} importance)")
        grads = (lambda: tr.gradients(student, teacher, data, opts)) if opts.importance == "gradient" else None
        rep = prune(student, example, opts.prune, importance=opts.importance, gradient_batches=grads,
                    round_to=opts.round_to)
        record["steps"].append("prune")
        record["prune"] = rep.to_dict()
        record.update(macs={"before": rep.macs_before, "after": rep.macs_after},
                      params={"before": rep.params_before, "after": rep.params_after})
        progress(f"MACs {rep.macs_before:,} -> {rep.macs_after:,}; params {rep.params_before:,} -> "
                 f"{rep.params_after:,}")
    threads = torch.get_num_threads()
    if sum(p.numel() for p in student.parameters()) < SMALL_MODEL_PARAMS:
        torch.set_num_threads(1)  # tiny ops: a second thread only adds spin-waits (10x slower on a busy host)
    try:
        _train_phases(student, teacher, example, dynamic, data, opts, record, progress)
    finally:
        torch.set_num_threads(threads)
    if data is not None:
        record["train_data"] = {"origin": Path(data.origin).name if ":" not in data.origin else data.origin,
                                "sha256": data.sha256, "count": data.count, "labelled": data.labelled}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.pt2"
    tr.set_mode(student, False)
    try:
        ep = torch.export.export(student, example, dynamic_shapes=dynamic if any(dynamic) else None)
        torch.export.save(ep, str(path))
    except Exception as exc:
        raise ConversionError(f"exporting the compressed model failed: {type(exc).__name__}: {exc}") from None
    record["seconds"] = round(time.perf_counter() - t0, 2)
    record["model_sha256"] = _sha256(path)
    new = replace(source, spec=str(path), path=path, kind="exported-program", sha256=record["model_sha256"],
                  factory=None, trusted=False, _obj=None, _input_names=None,
                  input_shapes=source.input_shapes if source.kind == "exported-program" else None)
    return Compressed(new, source, record)


def _train_phases(student: Any, teacher: Any, example: tuple[Any, ...], dynamic: Any, data: Any,
                  opts: CompressOptions, record: dict[str, Any], progress: Callable[[str], None]) -> None:
    phases = int(opts.distill) + int(opts.qat)
    seconds = None if opts.budget_seconds is None else opts.budget_seconds / max(phases, 1)
    if opts.distill:
        assert data is not None
        stats = tr.distill(student, teacher, data, opts, seconds, progress)
        record["steps"].append("distill")
        record["distill"] = stats.to_dict()
    if opts.qat:
        assert data is not None
        stats = tr.qat(student, teacher, example, dynamic, data, opts, seconds, progress)
        record["steps"].append("qat")
        record["qat"] = {**stats.to_dict(), "scheme": tr.QAT_SCHEME}
