"""``executorch-export``: a PyTorch source -> an ExecuTorch program (``model.pte``) lowered to XNNPACK.

``torch.export`` of the source module at the bundle's fixed batch -> ``to_edge_transform_and_lower`` with
``XnnpackPartitioner`` -> ``to_executorch()``. The partitioner decides which nodes XNNPACK takes; what it does
not take runs on ExecuTorch's portable kernels. Both lists are recorded (``facts.executorch``), so a silent
fallback shows in the manifest as it does for the other engines.

Precisions:

* ``fp32``: the program as exported.
* ``int8``: PT2E static quantization (torchao ``prepare_pt2e`` -> calibration on ``--calib`` ->
  ``convert_pt2e``) with ExecuTorch's ``XNNPACKQuantizer``, symmetric, per-channel weights; float32 I/O (the
  quantize/dequantize at the boundary are in the program).
* ``fp16``: the module and its weights in float16 with float32 I/O (casts at the boundary, inside the
  program); XNNPACK runs its float16 kernels where the CPU has them (ARMv8.2 fp16 arithmetic; on x86 it converts).

The step reads the source model itself (as ``tflite-convert``'s litert-torch route does); its input is the
``onnx-export`` artifact, for the signature every engine of a model shares. An ONNX or TorchScript source is
refused: ``torch.export`` needs a PyTorch program (a ``.pt2`` ExportedProgram or ``module.py:factory``).
"""

from __future__ import annotations

import collections
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from edgeify.errors import ConversionError, DataError
from pydantic import Field

from .base import Artifact, BuildContext, Step, StepConfig, StepSearch
from .facts import StepFacts
from .records import Quantization, Signature

TORCH_SOURCES = ("exported-program", "module-factory")


class ExecutorchFacts(StepFacts):
    """What the lowering did: the operators XNNPACK took, those left to the portable kernels, the partitions."""

    namespace: ClassVar[str] = "executorch"
    backend: str = Field(description="the delegate the partitioner lowered to")
    delegated_ops: dict[str, int] = Field(default_factory=dict, description="aten op -> count, run by the delegate")
    portable_ops: dict[str, int] = Field(default_factory=dict,
                                         description="aten op -> count, left to ExecuTorch's portable kernels")
    partitions: int = Field(default=0, description="delegate calls in the program")
    batch: int = Field(default=1, description="the program's fixed batch")
    quantizer: str | None = Field(default=None, description="the PT2E quantizer and its settings (int8)")
    calibration_samples: int | None = None

    @property
    def fallback_share(self) -> float:
        total = sum(self.delegated_ops.values()) + sum(self.portable_ops.values())
        return round(sum(self.portable_ops.values()) / total, 4) if total else 0.0


class ExecutorchExportConfig(StepConfig):
    batch: int = Field(default=1, ge=1, description="the program's batch size (dynamic batch dims are fixed)")
    per_channel: bool = Field(default=True, description="int8: per-channel weight scales (XNNPACKQuantizer)")
    max_calibration_samples: int = Field(default=256, ge=1, description="int8: calibration samples used at most")


class ExecutorchExport(Step):
    kind = "executorch-export"
    Config = ExecutorchExportConfig
    consumes = ("onnx",)
    produces = "pte"
    facts = (ExecutorchFacts,)
    tools = ("executorch", "torch", "torchao")
    uses_calibration = True
    config: ExecutorchExportConfig

    @classmethod
    def search_space(cls, config: Mapping[str, Any], precision: str, *,
                     max_accuracy_drop: float | None = None) -> StepSearch | None:
        """It decides the numerics of every precision it builds (fp32, fp16, int8); no recipes to vary."""
        return StepSearch() if precision in ("fp32", "fp16", "int8") else None

    def cache_key(self, ctx: BuildContext, input_digest: str) -> str:
        # the program comes from the source itself, not from the ONNX file: the source digest enters the key
        return super().cache_key(ctx, f"{input_digest}|{ctx.source.digest}")

    def run(self, ctx: BuildContext, artifact: Artifact | None, out_dir: Path) -> Artifact:
        import numpy as np
        import torch

        if artifact is None or not artifact.signature.inputs:
            raise ConversionError("executorch-export needs the onnx-export step's output as its input")
        src = ctx.source
        if src.kind not in TORCH_SOURCES:
            raise ConversionError(
                f"ExecuTorch builds from a PyTorch program; {src.path.name} is a {src.kind} source",
                hint="build from model.pt2 (torch.export.save) or module.py:factory, or choose another --engine")
        if ctx.precision not in ("fp32", "fp16", "int8"):
            raise ConversionError(f"executorch-export builds fp32, fp16 and int8, not {ctx.precision}")
        obj = src.load()
        module = obj.module() if src.kind == "exported-program" else obj
        names = [t.name for t in artifact.signature.inputs]
        shapes = src.example_shapes(batch=self.config.batch)
        args = tuple(torch.from_numpy(np.zeros(s, dtype=np.dtype(t.dtype)))
                     for t, s in zip(artifact.signature.inputs, shapes, strict=True))
        quantizer, samples = None, None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if ctx.precision == "int8":
                module, samples = self._pt2e(ctx, module, args, names)
                quantizer = f"XNNPACKQuantizer (symmetric, per_channel={self.config.per_channel}, static)"
            elif ctx.precision == "fp16":
                module = _Half(module)
            edge, facts = self._lower(module, args)
        out = out_dir / "model.pte"
        out.write_bytes(edge.to_executorch().buffer)
        facts = facts.model_copy(update={"batch": self.config.batch, "quantizer": quantizer,
                                         "calibration_samples": samples})
        ctx.progress(f"XNNPACK took {sum(facts.delegated_ops.values())} op(s) in {facts.partitions} partition(s); "
                     f"{sum(facts.portable_ops.values())} on portable kernels"
                     + (f" ({', '.join(sorted(facts.portable_ops))})" if facts.portable_ops else ""))
        return artifact.with_facts("pte", [out], signature=_fixed_batch(artifact.signature, self.config.batch),
                                   quantization=_quantization(ctx.precision, samples, quantizer,
                                                              self.config.per_channel),
                                   executorch=facts)

    def _lower(self, module: Any, args: tuple[Any, ...]) -> tuple[Any, ExecutorchFacts]:
        import torch
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        try:
            ep = torch.export.export(module, args)
            edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
        except Exception as exc:
            raise ConversionError(f"ExecuTorch lowering failed: {type(exc).__name__}: "
                                  f"{(str(exc).strip().splitlines() or [''])[0]}",
                                  hint="set EDGEIFY_DEBUG=1 for the traceback; ops torch.export cannot trace "
                                       "need a model change") from None
        return edge, delegation_facts(edge.exported_program().graph_module)

    def _pt2e(self, ctx: BuildContext, module: Any, args: tuple[Any, ...],
              names: list[str]) -> tuple[Any, int]:
        import torch
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        if ctx.calib is None:
            raise DataError("int8 (PT2E static quantization) needs calibration data", hint="pass --calib c.npz")
        quantizer = XNNPACKQuantizer().set_global(
            get_symmetric_quantization_config(is_per_channel=self.config.per_channel))
        prepared = prepare_pt2e(torch.export.export(module, args).module(), quantizer)
        b, count = self.config.batch, 0
        ctx.progress(f"PT2E calibrating on {min(ctx.calib.count, self.config.max_calibration_samples)} samples "
                     "(XNNPACKQuantizer)")
        with torch.no_grad():
            for feeds in ctx.calib.batches(max_samples=self.config.max_calibration_samples):
                n = len(feeds[names[0]])
                for i in range(0, n - b + 1, b):
                    prepared(*[torch.from_numpy(feeds[k][i:i + b]) for k in names])
                    count += b
        if count == 0:
            raise DataError(f"the calibration data has fewer than {b} sample(s)", hint="pass more --calib samples")
        return convert_pt2e(prepared), count


def delegation_facts(gm: Any) -> ExecutorchFacts:
    """Which aten ops the delegates took (inside each lowered module) and which stayed in the top-level graph."""
    delegated: collections.Counter[str] = collections.Counter()
    portable: collections.Counter[str] = collections.Counter()
    partitions, backend = 0, "none"
    for node in gm.graph.nodes:
        if node.op == "get_attr" and hasattr(getattr(gm, str(node.target), None), "original_module"):
            lowered = getattr(gm, str(node.target))
            partitions += 1
            backend = str(getattr(lowered, "backend_id", backend))
            for inner in lowered.original_module.graph.nodes:
                if inner.op == "call_function" and not _plumbing(inner.target):
                    delegated[_op_name(inner.target)] += 1
        elif node.op == "call_function" and not _plumbing(node.target):
            portable[_op_name(node.target)] += 1
    return ExecutorchFacts(backend=backend, delegated_ops=dict(sorted(delegated.items())),
                           portable_ops=dict(sorted(portable.items())), partitions=partitions)


def _op_name(target: Any) -> str:
    return str(getattr(target, "__name__", None) or target)


def _plumbing(target: Any) -> bool:
    return _op_name(target) in ("getitem", "executorch_call_delegate")


class _Half:
    """A module computing in float16 with float32 I/O (built lazily: torch is imported in ``run`` only)."""

    def __new__(cls, module: Any) -> Any:
        import copy

        import torch

        class Half(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = copy.deepcopy(inner).half()

            def forward(self, *xs: Any) -> Any:
                out = self.inner(*[x.half() if x.is_floating_point() else x for x in xs])
                if isinstance(out, (tuple, list)):
                    return type(out)(o.float() for o in out)
                return out.float()
        return Half(module).eval()


def _fixed_batch(sig: Signature, batch: int) -> Signature:
    from dataclasses import replace

    def fix(t: Any) -> Any:
        if t.shape and not isinstance(t.shape[0], int):
            return replace(t, shape=(batch, *t.shape[1:]))
        return t
    return Signature(tuple(fix(t) for t in sig.inputs), tuple(fix(t) for t in sig.outputs))


def _quantization(precision: str, samples: int | None, quantizer: str | None, per_channel: bool) -> Quantization:
    if precision == "int8":
        return Quantization("static", "int8", "int8", tool=f"ExecuTorch PT2E ({quantizer})",
                            converter="executorch", io="float32 (quantized inside the program)",
                            calibration_samples=samples, details={"per_channel": per_channel})
    if precision == "fp16":
        return Quantization("fp16", "float16", "float16", tool="torch .half() + XNNPACK", converter="executorch",
                            io="float32 (cast inside the program)")
    return Quantization("none", "float32", "float32", converter="executorch")
