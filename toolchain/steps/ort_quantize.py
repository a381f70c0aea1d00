"""``ort-quantize``: ONNX Runtime quantization: fp16 weights+compute, int8 dynamic, int8 static QDQ.

``int8-mixed``: static QDQ int8 with the nodes in ``nodes_to_exclude`` kept in float (``edgeify optimize``'s
quantization ladder picks them by layer-wise sensitivity). ``int16x8``: static QDQ with 16-bit activations and int8
weights (ONNX Runtime's CPU provider runs it with float compute between the 16-bit Q/DQ pairs: an accuracy rung).
``fp16`` with ``fp16_keep_fp32``: the named nodes stay fp32 (the ladder finds the ones whose values overflow fp16).

Static int8 uses calibration data, QDQ format, per-channel weights. The activation type is a per-target choice:
U8S8 (uint8 activations) is ONNX Runtime's fast path on AVX2 without VNNI; S8S8 on VNNI/ARM (see targets).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from edgeify.errors import ConversionError, DataError
from pydantic import Field

from .base import Artifact, BuildContext, SearchRecipe, Step, StepConfig, StepSearch
from .records import Quantization


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
    fp16_keep_fp32: tuple[str, ...] = Field(
        default=(), description="fp16: node names kept in fp32 (ops whose values overflow fp16's 65504)")


class OrtQuantize(Step):
    kind = "ort-quantize"
    Config = OrtQuantizeConfig
    consumes = ("onnx",)
    produces = "onnx"
    float_layers_option = "nodes_to_exclude"
    tools = ("onnx", "onnxruntime")
    uses_calibration = True
    config: OrtQuantizeConfig

    @classmethod
    def search_space(cls, config: Mapping[str, Any], precision: str, *,
                     max_accuracy_drop: float | None = None) -> StepSearch | None:
        """int8: U8S8 vs S8S8 is a speed recipe (which one wins depends on the CPU's VNNI); the accuracy
        alternates are the calibration method, per-channel weights, symmetric or reduced-range activations.
        int8-mixed keeps the most sensitive nodes in float; fp16 keeps the ops that overflow it in fp32;
        int16x8 runs as float compute between 16-bit Q/DQ pairs (no 16-bit kernels): an accuracy rung only."""
        if precision not in ("fp16", "int8", "int8-mixed", "int8-dynamic", "int16x8"):
            return None
        act = config.get("activation_type", "uint8")
        symmetric = bool(config.get("symmetric_activations"))
        speed: tuple[SearchRecipe, ...] = ()
        if precision == "int8" and not symmetric:  # symmetric means int8 activations (TensorRT): no U8 variant
            other = "int8" if act == "uint8" else "uint8"
            over: dict[str, Any] = {"activation_type": other}
            if other == "int8":
                over["reduce_range"] = False
            speed = (SearchRecipe(name="u8s8" if other == "uint8" else "s8s8", config=over),)
        alternates: list[SearchRecipe] = []
        if precision in ("int8", "int8-mixed"):
            method = config.get("calibration_method", "minmax")
            alternates += [SearchRecipe(name=f"calib-{m}", config={"calibration_method": m})
                           for m in ("entropy", "percentile", "minmax") if m != method]
            if config.get("per_channel", True) is False:
                alternates.append(SearchRecipe(name="per-channel", config={"per_channel": True}))
            if not symmetric and act == "int8":
                alternates.append(SearchRecipe(name="symmetric-act", config={"symmetric_activations": True}))
            if act == "uint8" and not config.get("reduce_range"):
                alternates.append(SearchRecipe(name="reduce-range", config={"reduce_range": True}))
        return StepSearch(speed=speed, alternates=tuple(alternates), ladder_only=precision == "int16x8",
                          mixed_by_layers=precision == "int8-mixed",
                          keep_fp32_option="fp16_keep_fp32" if precision == "fp16" else None)

    def run(self, ctx: BuildContext, artifact: Artifact | None, out_dir: Path) -> Artifact:
        assert artifact is not None
        out = out_dir / "model.onnx"
        try:
            if ctx.precision == "fp16":
                quant = self._fp16(artifact.path, out)
            elif ctx.precision == "int8-dynamic":
                quant = self._dynamic(artifact.path, out)
            elif ctx.precision in ("int8", "int8-mixed", "int16x8"):  # int16x8: 16-bit activations, int8 weights
                quant = self._static(ctx, artifact.path, out_dir, out)
            else:
                raise ConversionError(f"ort-quantize has nothing to do for precision {ctx.precision!r}")
        except (ConversionError, DataError):
            raise
        except Exception as exc:
            raise ConversionError(f"ONNX Runtime quantization ({ctx.precision}) failed: "
                                  f"{type(exc).__name__}: {exc}") from None
        return artifact.with_facts("onnx", [out], quantization=quant)

    def _qtype(self, name: str):
        from onnxruntime.quantization import QuantType

        return {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8, "uint16": QuantType.QUInt16,
                "int16": QuantType.QInt16}[name]

    def _fp16(self, src: Path, out: Path) -> Quantization:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        keep = list(self.config.fp16_keep_fp32) or None
        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, node_block_list=keep)
        if keep:  # the converter casts every blocked node's output to fp16 and back, even between two blocked
            _fold_cast_round_trips(model)  # nodes: that round trip is the overflow the block list is for
        onnx.save_model(model, str(out))
        return Quantization(method="fp16", weights="float16", io="float32 (cast at the boundary)",
                            float_layers=tuple(self.config.fp16_keep_fp32))

    def _dynamic(self, src: Path, out: Path) -> Quantization:
        from onnxruntime.quantization import quantize_dynamic

        quantize_dynamic(str(src), str(out), weight_type=self._qtype(self.config.weight_type),
                         per_channel=self.config.per_channel, reduce_range=self.config.reduce_range,
                         op_types_to_quantize=list(self.config.op_types) if self.config.op_types else None)
        return Quantization(method="dynamic", weights=self.config.weight_type, activations="dynamic uint8",
                            details={"per_channel": self.config.per_channel})

    def _static(self, ctx: BuildContext, src: Path, work: Path, out: Path) -> Quantization:
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
        act = self.config.activation_type
        if ctx.precision == "int16x8":  # 16-bit Q/DQ (opset 21); uint16 unless the target asks signed activations
            act = "int16" if act == "int8" else "uint16"
        quantize_static(
            str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
            activation_type=self._qtype(act),
            weight_type=self._qtype(self.config.weight_type), per_channel=self.config.per_channel,
            reduce_range=self.config.reduce_range, calibrate_method=method,
            op_types_to_quantize=list(self.config.op_types) if self.config.op_types else None,
            nodes_to_exclude=list(self.config.nodes_to_exclude) or None,
            extra_options={"ActivationSymmetric": self.config.symmetric_activations,
                           "QuantizeBias": self.config.quantize_bias},
        )
        if pre != src:
            pre.unlink(missing_ok=True)
        scheme = {"uint8": "U8", "int8": "S8", "uint16": "U16", "int16": "S16"}[act] + \
                 ("U8" if self.config.weight_type == "uint8" else "S8")
        return Quantization(
            method="static", weights=self.config.weight_type, activations=act,
            calibration_samples=min(ctx.calib.count, self.config.max_calibration_samples),
            float_layers=tuple(self.config.nodes_to_exclude),
            details={"format": "QDQ", "scheme": scheme, "per_channel": self.config.per_channel,
                     "calibration_method": self.config.calibration_method,
                     "symmetric_activations": self.config.symmetric_activations,
                     "bias": "int32" if self.config.quantize_bias else "float32"})


def _fold_cast_round_trips(model) -> None:
    """Remove ``Cast(fp32 -> fp16) -> Cast(fp16 -> fp32)`` pairs: consumers of the second get the fp32 source."""
    from onnx import TensorProto

    graph = model.graph
    to = {n.output[0]: n for n in graph.node if n.op_type == "Cast"}

    def cast_to(n) -> int:
        return next((a.i for a in n.attribute if a.name == "to"), -1)

    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    drop = set()
    for n in graph.node:
        first = to.get(n.input[0]) if n.op_type == "Cast" and n.input else None
        if (first is not None and cast_to(n) == TensorProto.FLOAT and cast_to(first) == TensorProto.FLOAT16
                and n.output[0] not in outputs):
            rename[n.output[0]] = first.input[0]
            drop.add(id(n))
    keep = [n for n in graph.node if id(n) not in drop]
    for n in keep:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
    used = {i for n in keep for i in n.input} | outputs
    keep = [n for n in keep if not (n.op_type == "Cast" and n.output[0] in to and n.output[0] not in used)]
    del graph.node[:]
    graph.node.extend(keep)
