"""``ncnn-convert``: a model -> ncnn (``model.ncnn.param`` + ``model.ncnn.bin``) with pnnx.

Routes (``route``, default ``auto``):

* ``torchscript`` (PyTorch sources: ``.pt2``, ``module.py:factory``, TorchScript): the source module traced with
  ``torch.jit.trace`` at batch 1 (a TorchScript source as it is), then the ``pnnx`` converter binary. pnnx's own
  route: it sees the PyTorch graph.
* ``onnx`` (ONNX sources; any source with ``route = "onnx"``): ``pnnx`` on the ``onnx-export`` step's file.

Precisions: ``fp32`` (pnnx ``fp16=0``: float32 weights) and ``fp16`` (pnnx ``fp16=1``: float16 weight storage;
the bundle's engine options turn on ncnn's fp16 storage and arithmetic where the CPU has them). int8 is not
built: ncnn's int8 path needs its calibration table (``ncnn2table``) and weight rewrite (``ncnn2int8``), C++
tools that neither the ``ncnn`` nor the ``pnnx`` wheel ships, and the Python module has no equivalent.

ncnn has no batch axis: the bundle's signature fixes batch 1; the input/output blob names are pnnx's
(``in0``.., ``out0``..), matched to the manifest's names by position.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Literal

from edgeify.errors import ConversionError
from edgeify.steps.base import Artifact, BuildContext, Step, StepConfig, StepSearch
from edgeify.steps.facts import StepFacts
from edgeify.steps.records import Quantization, Signature
from pydantic import Field

PRECISIONS = ("fp32", "fp16")
TORCH_KINDS = ("exported-program", "module-factory", "torchscript")


class NcnnFacts(StepFacts):
    """What pnnx wrote: the route, the ncnn layers by type, the weight storage."""

    namespace: ClassVar[str] = "ncnn"
    converter: str = Field(description="pnnx and its route (torchscript or onnx)")
    layers: dict[str, int] = Field(default_factory=dict, description="ncnn layer type -> count")
    weights: str = Field(description="float32 or float16 weight storage")
    input_blobs: list[str] = Field(default_factory=list)
    output_blobs: list[str] = Field(default_factory=list)


class NcnnConvertConfig(StepConfig):
    route: Literal["auto", "torchscript", "onnx"] = Field(
        default="auto", description="auto: torchscript for PyTorch sources, onnx for ONNX sources")
    optlevel: int = Field(default=2, ge=0, le=2, description="pnnx graph optimization level")
    timeout_s: float = Field(default=600.0, gt=0, description="deadline of the pnnx converter process")


class NcnnConvert(Step):
    kind = "ncnn-convert"
    Config = NcnnConvertConfig
    consumes = ("onnx",)
    produces = "ncnn"
    facts = (NcnnFacts,)
    tools = ("pnnx", "ncnn", "torch")
    config: NcnnConvertConfig

    @classmethod
    def search_space(cls, config: Mapping[str, Any], precision: str, *,
                     max_accuracy_drop: float | None = None) -> StepSearch | None:
        """It decides fp32 and fp16 (weight storage); nothing to vary."""
        return StepSearch() if precision in PRECISIONS else None

    def route(self, ctx: BuildContext) -> str:
        if self.config.route != "auto":
            return self.config.route
        return "torchscript" if ctx.source.kind in TORCH_KINDS else "onnx"

    def cache_key(self, ctx: BuildContext, input_digest: str) -> str:
        route = self.route(ctx)
        extra = f"|{route}|{ctx.source.digest}" if route == "torchscript" else f"|{route}"
        return super().cache_key(ctx, input_digest + extra)

    def run(self, ctx: BuildContext, artifact: Artifact | None, out_dir: Path) -> Artifact:
        if artifact is None or not artifact.signature.inputs:
            raise ConversionError("ncnn-convert needs the onnx-export step's output as its input")
        if ctx.precision not in PRECISIONS:
            raise ConversionError(f"the ncnn plugin builds {' and '.join(PRECISIONS)}, not {ctx.precision}",
                                  hint="int8 needs ncnn2table/ncnn2int8, which the ncnn wheels do not ship; "
                                       "choose --precision fp32 or fp16, or another --engine")
        sig = _batch_one(artifact.signature)
        shapes = [t.shape for t in sig.inputs]
        if any(not all(isinstance(d, int) for d in s) for s in shapes):
            raise ConversionError(f"ncnn needs fixed input shapes; the model has {[list(s) for s in shapes]}",
                                  hint="pass --input-shape to fix the dynamic dims")
        route = self.route(ctx)
        fp16 = ctx.precision == "fp16"
        with tempfile.TemporaryDirectory(prefix="edgeify-pnnx-") as work:
            w = Path(work)
            if route == "torchscript":
                model = w / "model.pt"
                _trace(ctx, sig, model)
            else:
                model = w / "model.onnx"
                shutil.copyfile(artifact.path, model)
            _pnnx(model, shapes, [t.dtype for t in sig.inputs], fp16, self.config.optlevel, w,
                  self.config.timeout_s)
            param, weights = out_dir / "model.ncnn.param", out_dir / "model.ncnn.bin"
            shutil.copyfile(w / "model.ncnn.param", param)
            shutil.copyfile(w / "model.ncnn.bin", weights)
        layers, ins, outs = read_param(param)
        if len(ins) != len(sig.inputs) or len(outs) != len(sig.outputs):
            raise ConversionError(f"pnnx wrote {len(ins)} input(s) and {len(outs)} output(s); the model has "
                                  f"{len(sig.inputs)} and {len(sig.outputs)}")
        facts = NcnnFacts(converter=f"pnnx ({route})", layers=layers, weights="float16" if fp16 else "float32",
                          input_blobs=ins, output_blobs=outs)
        ctx.progress(f"pnnx ({route}): {sum(layers.values())} ncnn layers "
                     f"({', '.join(f'{k} {v}' for k, v in sorted(layers.items(), key=lambda kv: -kv[1])[:5])})")
        quant = (Quantization("fp16", "float16 (ncnn fp16 storage)", "float16", tool="pnnx fp16=1",
                              converter="pnnx", io="float32") if fp16
                 else Quantization("none", "float32", "float32", converter="pnnx"))
        return artifact.with_facts("ncnn", [param, weights], signature=sig, quantization=quant, ncnn=facts)


def _batch_one(sig: Signature) -> Signature:
    def fix(t: Any) -> Any:
        return replace(t, shape=(1, *t.shape[1:])) if t.shape and not isinstance(t.shape[0], int) else t
    return Signature(tuple(fix(t) for t in sig.inputs), tuple(fix(t) for t in sig.outputs))


def _trace(ctx: BuildContext, sig: Signature, out: Path) -> None:
    import warnings

    import numpy as np
    import torch

    src = ctx.source
    obj = src.load()
    module = obj.module() if src.kind == "exported-program" else obj
    args = tuple(torch.from_numpy(np.zeros(t.shape, dtype=np.dtype(t.dtype))) for t in sig.inputs)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = module if src.kind == "torchscript" else torch.jit.trace(module, args, check_trace=False)
            torch.jit.save(traced, str(out))
    except Exception as exc:
        raise ConversionError(f"tracing the model for pnnx failed: {type(exc).__name__}: "
                              f"{(str(exc).strip().splitlines() or [''])[0]}",
                              hint="set the ncnn-convert step's route to \"onnx\" in a target file") from None


def pnnx_executable() -> str:
    import pnnx

    exe = getattr(pnnx, "EXEC_PATH", None) or str(Path(pnnx.__file__).with_name("pnnx"))
    if not os.path.isfile(exe):
        raise ConversionError(f"the pnnx converter binary is missing ({exe})",
                              hint="pip install --force-reinstall pnnx")
    return exe


def _pnnx(model: Path, shapes: list[tuple[Any, ...]], dtypes: list[str], fp16: bool, optlevel: int, work: Path,
          timeout_s: float) -> None:
    short = {"float32": "f32", "float16": "f16", "int64": "i64", "int32": "i32", "int8": "i8", "uint8": "u8"}
    shape_arg = ",".join(f"[{','.join(str(d) for d in s)}]{short.get(dt, 'f32')}"
                         for s, dt in zip(shapes, dtypes, strict=True))
    stem = work / "model"
    cmd = [pnnx_executable(), str(model), f"inputshape={shape_arg}", f"fp16={int(fp16)}", f"optlevel={optlevel}",
           "device=cpu", f"pnnxparam={stem}.pnnx.param", f"pnnxbin={stem}.pnnx.bin", f"pnnxpy={stem}_pnnx.py",
           f"pnnxonnx={stem}.pnnx.onnx", f"ncnnparam={stem}.ncnn.param", f"ncnnbin={stem}.ncnn.bin",
           f"ncnnpy={stem}_ncnn.py"]
    try:
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ConversionError(f"pnnx did not finish within {timeout_s:.0f} s") from None
    if proc.returncode != 0 or not (work / "model.ncnn.param").is_file():
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
        raise ConversionError(f"pnnx failed (exit {proc.returncode}): {tail}",
                              hint="ops pnnx cannot convert need a model change or another --engine")


def read_param(path: Path) -> tuple[dict[str, int], list[str], list[str]]:
    """(layer type -> count, input blobs, output blobs) of an ncnn ``.param`` file (outputs: blobs no layer
    consumes)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if not lines or lines[0].strip() != "7767517":
        raise ConversionError(f"{path.name} is not an ncnn param file (magic {lines[0][:20]!r})")
    types: collections.Counter[str] = collections.Counter()
    produced: list[str] = []
    consumed: set[str] = set()
    inputs: list[str] = []
    for line in lines[2:]:
        parts = line.split()
        if len(parts) < 4:
            continue
        typ, n_in, n_out = parts[0], int(parts[2]), int(parts[3])
        bottoms, tops = parts[4:4 + n_in], parts[4 + n_in:4 + n_in + n_out]
        types[typ] += 1
        consumed.update(bottoms)
        produced += tops
        if typ == "Input":
            inputs += tops
    outputs = [b for b in produced if b not in consumed and b not in inputs]
    return dict(sorted(types.items())), inputs, outputs
