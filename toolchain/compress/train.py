"""Fine-tuning against the source model: distillation (KL on logits at a temperature, plus label cross-entropy
when labels exist) and quantization-aware fine-tuning (torchao's PT2E QAT: fake-quant in the graph).

The teacher is always the source model as given (never the pruned intermediate), run in ``no_grad``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
from edgeify.errors import ConversionError
from edgeify.noise import quiet_python_loggers

from .data import Batch, TrainData
from .loop import TrainStats, train
from .options import CompressOptions

#: the QAT scheme: activations uint8 affine per tensor, weights int8 symmetric per channel -- what ONNX Runtime's
#: U8S8 QDQ and OpenVINO/NNCF int8 run; the engine's own int8 quantizer then writes the int8 model
QAT_SCHEME = "torchao PT2E QAT, X86InductorQuantizer (uint8 affine activations, int8 per-channel weights)"


def set_mode(model: Any, train: bool) -> None:
    """``train()``/``eval()`` on an eager module; an ExportedProgram's module keeps the mode it was exported in
    (torch refuses the switch; its BatchNorm statistics stay frozen, which fine-tuning tolerates)."""
    with contextlib.suppress(NotImplementedError):
        model.train(train)


def _flat(out: Any) -> list[Any]:
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flat(o)]
    if isinstance(out, dict):
        return [t for k in out for t in _flat(out[k])]
    return [out]


def kd_loss(student_out: list[Any], teacher_out: list[Any], labels: Any, opts: CompressOptions) -> Any:
    """KL(teacher || student) at ``temperature`` (x T^2) on classifier outputs ``[N, C]``, MSE on any other
    output; plus ``label_weight`` x cross-entropy on the first output when labels exist."""
    import torch.nn.functional as F

    t = opts.temperature
    total = 0.0
    for s, te in zip(student_out, teacher_out, strict=True):
        if s.ndim == 2 and s.shape[1] > 1:
            total = total + F.kl_div(F.log_softmax(s / t, -1), F.log_softmax(te / t, -1), log_target=True,
                                     reduction="batchmean") * t * t
        else:
            total = total + F.mse_loss(s, te)
    if labels is not None and student_out[0].ndim == 2:
        w = opts.label_weight
        total = (1 - w) * total + w * F.cross_entropy(student_out[0], labels)
    return total


class Trainer:
    """One optimizer step on a batch of a model against the teacher; the ``step`` the loop calls."""

    def __init__(self, model: Any, teacher: Any, opts: CompressOptions) -> None:
        import torch

        self.model, self.teacher, self.opts = model, teacher, opts
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ConversionError("the model has no trainable parameters to fine-tune")
        self.optimizer = torch.optim.Adam(params, lr=opts.lr)

    def forward_loss(self, batch: Batch) -> Any:
        import torch

        xs = [torch.from_numpy(a) for a in batch[0]]
        labels = None if batch[1] is None else torch.from_numpy(batch[1].astype(np.int64))
        with torch.no_grad():
            t_out = _flat(self.teacher(*xs))
        return kd_loss(_flat(self.model(*xs)), t_out, labels, self.opts)

    def __call__(self, batch: Batch) -> float:
        loss = self.forward_loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def gradients(model: Any, teacher: Any, data: TrainData, opts: CompressOptions, max_batches: int = 8) -> None:
    """Accumulate gradients of the distillation loss on a few training batches (gradient importance)."""
    trainer = Trainer(model, teacher, opts)
    for i, batch in enumerate(data.epoch_peek()):
        if i >= max_batches:
            break
        trainer.forward_loss(batch).backward()


def distill(student: Any, teacher: Any, data: TrainData, opts: CompressOptions, seconds: float | None,
            progress: Callable[[str], None]) -> TrainStats:
    set_mode(student, True)
    try:
        return train("distill", data, Trainer(student, teacher, opts), seconds=seconds, epochs=opts.epochs,
                     progress=progress)
    finally:
        set_mode(student, False)


def qat(student: Any, teacher: Any, example: tuple[Any, ...], dynamic: Any, data: TrainData,
        opts: CompressOptions, seconds: float | None, progress: Callable[[str], None]) -> TrainStats:
    """Fake-quant fine-tuning of ``student`` (in place: the trained float weights and BatchNorm statistics are
    copied back, for the engine's own int8 quantizer and its parity gate)."""
    import torch
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    quiet_python_loggers()
    set_mode(student, True)
    try:
        graph = torch.export.export(student, example, dynamic_shapes=dynamic).module()
        quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=True))
        prepared = prepare_qat_pt2e(graph, quantizer)
    except Exception as exc:
        raise ConversionError(f"QAT: preparing the fake-quantized graph failed: {type(exc).__name__}: {exc}",
                              hint="the model must torch.export with a dynamic batch dimension") from None
    finally:
        set_mode(student, False)
    stats = train("qat", data, Trainer(prepared, teacher, opts), seconds=seconds, epochs=opts.epochs,
                  progress=progress)
    move_exported_model_to_eval(prepared)
    trained, mine = prepared.state_dict(), student.state_dict()
    params = {k for k, _ in student.named_parameters()}
    missing = [k for k in mine if (k in params and k not in trained) or (k in trained and trained[k].shape !=
                                                                          mine[k].shape)]
    if missing:
        raise ConversionError(f"QAT: the fine-tuned graph lost the parameters {missing[:5]}",
                              hint="report this model to edgeify; build without --qat meanwhile")
    # buffers the eval-form graph does not use (e.g. num_batches_tracked of a .pt2's BatchNorm) keep their values
    student.load_state_dict({k: trained.get(k, v) for k, v in mine.items()})
    return stats
