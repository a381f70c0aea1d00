"""``ort-quantize``: ONNX Runtime quantization: fp16 weights+compute, int8 dynamic, int8 static QDQ.

``int8-mixed``: static QDQ int8 with the nodes in ``nodes_to_exclude`` kept in float (``edgeify optimize``'s
quantization ladder picks them by layer-wise sensitivity).

Static int8 uses calibration data, QDQ format, per-channel weights. The activation type is a per-target choice:
U8S8 (uint8 activations) is ONNX Runtime's fast path on AVX2 without VNNI; S8S8 on VNNI/ARM (see targets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from edgeify.errors import ConversionError, DataError
from pydantic import Field

from .base import Artifact, BuildContext, Step, StepConfig


class OrtQuantizeConfig(StepConfig):
    activation_type: Literal["uint8", "int8"] = "uint8"
    weight_type: Literal["uint8", "int8"] = "int8"
    per_channel: bool = True
    reduce_range: bool = False
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    max_calibration_samples: int = Field(default=256, ge=1)
    symmetric_activations: bool = False
    quantize_bias: bool = Field(default=True, description="False keeps biases float (TensorRT's QDQ import "
                                                          "expects float biases)")
    op_types: tuple[str, ...] | None = Field(default=None, description="None: every op ORT can quantize")
    nodes_to_exclude: tuple[str, ...] = Field(
        default=(), description="node names kept in float (int8-mixed); names of the pre-processed graph")


class OrtQuantize(Step):
    kind = "ort-quantize"
    Config = OrtQuantizeConfig
    tools = ("onnx", "onnxruntime")
    uses_calibration = True
    config: OrtQuantizeConfig

    def run(self, ctx: BuildContext, artifact: Artifact | None, out_dir: Path) -> Artifact:
        assert artifact is not None
        out = out_dir / "model.onnx"
        meta = dict(artifact.meta)
        try:
            if ctx.precision == "fp16":
                meta["quantization"] = self._fp16(artifact.path, out)
            elif ctx.precision == "int8-dynamic":
                meta["quantization"] = self._dynamic(artifact.path, out)
            elif ctx.precision in ("int8", "int8-mixed"):
                meta["quantization"] = self._static(ctx, artifact.path, out_dir, out)
            else:
                raise ConversionError(f"ort-quantize has nothing to do for precision {ctx.precision!r}")
        except (ConversionError, DataError):
            raise
        except Exception as exc:
            raise ConversionError(f"ONNX Runtime quantization ({ctx.precision}) failed: "
                                  f"{type(exc).__name__}: {exc}") from None
        return Artifact("onnx", [out], meta)

    def _qtype(self, name: str):
        from onnxruntime.quantization import QuantType

        return QuantType.QUInt8 if name == "uint8" else QuantType.QInt8

    def _fp16(self, src: Path, out: Path) -> dict:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        onnx.save_model(model, str(out))
        return {"method": "fp16", "weights": "float16", "io": "float32 (cast at the boundary)"}

    def _dynamic(self, src: Path, out: Path) -> dict:
        from onnxruntime.quantization import quantize_dynamic

        quantize_dynamic(str(src), str(out), weight_type=self._qtype(self.config.weight_type),
                         per_channel=self.config.per_channel, reduce_range=self.config.reduce_range,
                         op_types_to_quantize=list(self.config.op_types) if self.config.op_types else None)
        return {"method": "dynamic", "weights": self.config.weight_type, "activations": "dynamic uint8",
                "per_channel": self.config.per_channel}

    def _static(self, ctx: BuildContext, src: Path, work: Path, out: Path) -> dict:
        from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        if ctx.calib is None:
            raise DataError("static int8 quantization needs calibration data",
                            hint="pass --calib data.npz (or a .npy / image folder), or use --precision int8-dynamic")
        batches = list(ctx.calib.batches(max_samples=self.config.max_calibration_samples, drop_last=True))

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it = iter(batches)

            def get_next(self):
                return next(self._it, None)

        pre = work / "preprocessed.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception as exc:
            ctx.progress(f"quantization pre-processing skipped: {type(exc).__name__}")
            pre = src
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[self.config.calibration_method]
        ctx.progress(f"calibrating on {ctx.calib.count} samples ({self.config.calibration_method})")
        quantize_static(
            str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
            activation_type=self._qtype(self.config.activation_type),
            weight_type=self._qtype(self.config.weight_type), per_channel=self.config.per_channel,
            reduce_range=self.config.reduce_range, calibrate_method=method,
            op_types_to_quantize=list(self.config.op_types) if self.config.op_types else None,
            nodes_to_exclude=list(self.config.nodes_to_exclude) or None,
            extra_options={"ActivationSymmetric": self.config.symmetric_activations,
                           "QuantizeBias": self.config.quantize_bias},
        )
        if pre != src:
            pre.unlink(missing_ok=True)
        scheme = ("U8" if self.config.activation_type == "uint8" else "S8") + \
                 ("U8" if self.config.weight_type == "uint8" else "S8")
        return {"method": "static", "format": "QDQ", "scheme": scheme, "activations": self.config.activation_type,
                "weights": self.config.weight_type, "per_channel": self.config.per_channel,
                "calibration_method": self.config.calibration_method,
                "symmetric_activations": self.config.symmetric_activations, "bias": (
                    "int32" if self.config.quantize_bias else "float32"),
                "calibration_samples": min(ctx.calib.count, self.config.max_calibration_samples),
                **({"float_layers": list(self.config.nodes_to_exclude)} if self.config.nodes_to_exclude else {})}
