"""``tflite-quantize``: the ``.tflite`` for the build's precision and I/O dtype, from ``tflite-convert``'s variants.

Where the converter wrote the variant (onnx2tf writes them all; litert-torch writes int8 and int8-dynamic
itself) it is taken as is. Otherwise the fp32 model is quantized with Google's ai-edge-quantizer (installed with
litert-torch): ``fp16`` = float16 weights of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED /
TRANSPOSE_CONV / EMBEDDING_LOOKUP, dequantized at load (what the TF converter's float16 option does);
``int8-dynamic`` = int8 weights, activations quantized at run time; ``int8`` (where onnx2tf's integer
quantization failed, e.g. on a transformer) = int8 weights and activations, float32 I/O; ``int16x8`` = int8
weights and int16 activations; both static ones calibrated on ``--calib`` with min/max ranges (the
quantizer's default moving average under-estimates the ranges: measured cosine 0.26 against 0.999 on the digits
CNN).

Then the manifest side: the signature (source names, caller layout, ``engine_layout`` where the model is
channels-last, fixed batch), the I/O quantization (scale, zero point) of integer I/O tensors, the I/O dtype a
caller uses (``--io-dtype``: float32, or int8 for int8 builds), and the minimum TensorFlow Lite runtime
version the model's op versions need (``engine_min_version``, written to the manifest's ``engine.min_version``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgeify.errors import ConversionError, DataError
from edgeify_runtime.engines.litert import match_names, ordered_io
from pydantic import Field

from . import _tflite
from .base import Artifact, BuildContext, Step, StepConfig, StepSearch, steps_code_digest
from .records import ARTIFACT_SCHEMA, Quantization, Signature, TfliteFacts

METHODS: dict[str, Quantization] = {
    "fp32": Quantization("none", "float32", "float32"),
    "fp16": Quantization("fp16", "float16 (dequantized to float32 at load)", "float32"),
    "int8-dynamic": Quantization("dynamic", "int8", "float32, int8 at run time"),
    "int8": Quantization("static", "int8", "int8"),
    "int16x8": Quantization("static", "int8", "int16"),
}
FP16_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_2D_TRANSPOSE", "EMBEDDING_LOOKUP")


class TfliteQuantizeConfig(StepConfig):
    fp16_ops: tuple[str, ...] = Field(default=FP16_OPS, description="ops whose weights become float16")
    max_calibration_samples: int = Field(default=256, ge=1, description="int16x8 (and int8 where the converter "
                                         "wrote none) calibration (ai-edge-quantizer)")


class TfliteQuantize(Step):
    kind = "tflite-quantize"
    Config = TfliteQuantizeConfig
    consumes = ("tflite-variants",)
    produces = "tflite"
    facts = (TfliteFacts,)
    tools = ("ai-edge-litert", "ai-edge-quantizer")
    uses_calibration = True

    @classmethod
    def search_space(cls, config: Mapping[str, Any], precision: str, *,
                     max_accuracy_drop: float | None = None) -> StepSearch | None:
        """It decides every precision (picks or quantizes the variant); no recipes to vary."""
        return StepSearch()
    config: TfliteQuantizeConfig

    def cache_key(self, ctx: BuildContext, input_digest: str) -> str:
        payload = {"kind": self.kind, "config": self.config.model_dump(mode="json"), "precision": ctx.precision,
                   "io_dtype": ctx.io_dtype, "input": input_digest, "tools": self.tool_versions(),
                   "calibration": ctx.calib.sha256 if (ctx.precision in ("int8", "int16x8") and ctx.calib) else None,
                   "artifact_schema": ARTIFACT_SCHEMA, "code": steps_code_digest()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def run(self, ctx: BuildContext, artifact: Artifact | None, out_dir: Path) -> Artifact:
        conv = artifact.fact(TfliteFacts) if artifact is not None else None
        if artifact is None or conv is None or not conv.variants:
            raise ConversionError("tflite-quantize needs the tflite-convert step's output as its input")
        variants = dict(conv.variants)
        files = {p.name: p for p in artifact.files}
        prec, io_dtype = ctx.precision, ctx.io_dtype
        if io_dtype != "float32" and prec != "int8":
            raise ConversionError(f"--io-dtype {io_dtype} applies to --precision int8 only")
        converter = conv.converter
        out = out_dir / "model.tflite"
        samples: int | None = None
        key = "int8-io-int8" if (prec == "int8" and io_dtype == "int8" and "int8-io-int8" in variants) else prec
        if key in variants:
            if prec in ("int8", "int16x8") and conv.calibrated is False:
                raise DataError(f"{prec} needs calibration data", hint="pass --calib")
            shutil.copyfile(files[variants[key]], out)
            tool = {"litert-torch": "litert-torch (PT2E)" if prec.startswith("int8") else "litert-torch",
                    "onnx2tf": "onnx2tf (TensorFlow Lite converter)"}.get(converter, converter)
            if prec in ("int8", "int16x8"):  # calibrated by the converter
                samples = conv.calibration_samples
        elif "fp32" in variants and prec == "fp16":
            with _tflite.quiet_converter():
                self._fp16(files[variants["fp32"]], out)
            tool = "ai-edge-quantizer (float16 weights)"
        elif "fp32" in variants and prec in ("int16x8", "int8"):
            with _tflite.quiet_converter():
                samples = self._static(ctx, files[variants["fp32"]], out)
            act = "int16" if prec == "int16x8" else "int8"
            tool = f"ai-edge-quantizer (static, {act} activations, min/max calibration)"
        elif "fp32" in variants and prec == "int8-dynamic":
            with _tflite.quiet_converter():
                self._dynamic(files[variants["fp32"]], out)
            tool = "ai-edge-quantizer (dynamic: int8 weights, activations quantized at run time)"
        else:
            raise ConversionError(f"{converter} produced no {prec} model (variants: {sorted(variants)})")
        src = artifact.signature
        ins, outs, io = _tflite.signature(out, list(src.inputs), list(src.outputs), batch=conv.batch,
                                          io_dtype=io_dtype)
        if io_dtype == "int8":
            wrong = [t.name for t in (*ins, *outs) if t.dtype != "int8"]
            if wrong:
                raise ConversionError(f"--io-dtype int8: the {converter} model has non-int8 I/O tensors {wrong}")
        versions = _tflite.min_runtime_version(out, floor=ctx.engine.min_version)
        quantization = replace(METHODS[prec], tool=tool, converter=converter, io_dtype=io_dtype,
                               io_quantization=io, calibration_samples=samples)
        return artifact.with_facts("tflite", [out], signature=Signature(tuple(ins), tuple(outs)),
                                   quantization=quantization, engine_min_version=versions["min_version"],
                                   tflite=replace(conv, variants={}, variant=key, ops=versions))

    def _fp16(self, src: Path, out: Path) -> None:
        from ai_edge_quantizer import qtyping, quantizer

        qt = quantizer.Quantizer(str(src))
        for op in self.config.fp16_ops:
            qt.update_quantization_recipe(
                regex=".*", operation_name=qtyping.TFLOperationName[op],
                algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING,
                op_config=qtyping.OpQuantizationConfig(
                    weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16,
                                                                          dtype=qtyping.TensorDataType.FLOAT),
                    compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True))
        try:
            qt.quantize().export_model(str(out), overwrite=True)
        except Exception as exc:
            raise ConversionError(f"ai-edge-quantizer (fp16 weights) failed: {type(exc).__name__}: {exc}") from None

    def _dynamic(self, src: Path, out: Path) -> None:
        from ai_edge_quantizer import quantizer, recipe

        try:
            qt = quantizer.Quantizer(str(src))
            qt.load_quantization_recipe(recipe.dynamic_wi8_afp32())
            qt.quantize().export_model(str(out), overwrite=True)
        except Exception as exc:
            raise ConversionError(f"ai-edge-quantizer (int8-dynamic) failed: {type(exc).__name__}: {exc}") from None

    def _static(self, ctx: BuildContext, src: Path, out: Path) -> int:
        """int8 (or int16x8) with int8 weights, calibrated on --calib with min/max ranges; float32 I/O."""
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter
        from ai_edge_quantizer import calibrator, quantizer, recipe
        from ai_edge_quantizer.utils import qsv_utils

        prec = ctx.precision
        if ctx.calib is None:
            raise DataError(f"{prec} quantization needs calibration data", hint="pass --calib")
        interp = Interpreter(model_path=str(src))
        sigs = interp.get_signature_list()
        if len(sigs) != 1:
            raise ConversionError(f"{prec}: the fp32 model has {len(sigs)} signatures, expected 1")
        sig_key = next(iter(sigs))
        ins, _ = ordered_io(interp)
        names = list(ctx.calib.inputs)
        pos = match_names(names, ins, "input")
        n = min(ctx.calib.count, self.config.max_calibration_samples)
        shapes = {names[k]: tuple(int(d) for d in ins[pos[k]][1]["shape"]) for k in range(len(names))}
        batch = next(iter(shapes.values()))[0] if shapes else 1
        samples = []
        for i in range(0, n - batch + 1, batch):
            sample = {}
            for k, name in enumerate(names):
                arr = ctx.calib.inputs[name][i:i + batch]
                if arr.shape != shapes[name] and 3 <= arr.ndim <= 5 and np.moveaxis(arr, 1, -1).shape == shapes[name]:
                    arr = np.moveaxis(arr, 1, -1)  # onnx2tf's models are channels-last; --calib is the source's
                arr = np.ascontiguousarray(arr)
                if arr.shape != shapes[name]:
                    raise ConversionError(f"{prec}: calibration input {name!r} has shape {list(arr.shape)}, the "
                                          f"fp32 model takes {list(shapes[name])}")
                sample[ins[pos[k]][0]] = arr
            samples.append(sample)
        ctx.progress(f"{prec}: calibrating on {len(samples) * batch} samples (ai-edge-quantizer, min/max)")
        try:
            qt = quantizer.Quantizer(str(src))
            qt.load_quantization_recipe(recipe.static_wi8_ai16() if prec == "int16x8" else recipe.static_wi8_ai8())
            cal = calibrator.Calibrator(src.read_bytes(), qsv_update_func=qsv_utils.min_max_update)
            cal.calibrate({sig_key: samples}, qt._recipe_manager)
            qt.quantize(cal.get_model_qsvs()).export_model(str(out), overwrite=True)
        except Exception as exc:
            raise ConversionError(f"ai-edge-quantizer ({prec}) failed: {type(exc).__name__}: {exc}") from None
        return len(samples) * batch
