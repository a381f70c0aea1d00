"""``nncf-quantize``: NNCF post-training quantization of an OpenVINO IR.

``int8``: static, calibrated activations + per-channel weights; ``int8-dynamic``: int8 weight compression
(activations stay float, the OpenVINO analogue of dynamic-range quantization); ``int8-mixed``: static int8 with
the layers in ``ignored_layers`` kept in float (NNCF ``IgnoredScope``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from edgeify.errors import ConversionError, DataError
from edgeify.noise import quiet_nncf_progress
from pydantic import Field

from .base import Artifact, BuildContext, SearchRecipe, Step, StepConfig, StepSearch, fault_point_feed
from .records import Quantization


class NncfQuantizeConfig(StepConfig):
    preset: Literal["performance", "mixed"] = "performance"
    subset_size: int = Field(default=300, ge=1)
    fast_bias_correction: bool = True
    model_type: Literal["transformer"] | None = Field(
        default=None, description="NNCF model type: 'transformer' keeps attention-sensitive ops in float")
    ignored_layers: tuple[str, ...] = Field(default=(), description="layer names kept in float (int8-mixed)")
    accuracy_control: bool = Field(
        default=False, description="int8-mixed: NNCF quantize_with_accuracy_control, reverting the layers that cost "
                                   "the most to float until the drop holds (labelled --eval top-1, else top-1 "
                                   "agreement with the source on the calibration inputs)")
    max_drop_points: float = Field(default=1.0, ge=0, description="accuracy_control: allowed drop, points")


class NncfQuantize(Step):
    kind = "nncf-quantize"
    Config = NncfQuantizeConfig
    consumes = ("openvino-ir",)
    produces = "openvino-ir"
    float_layers_option = "ignored_layers"
    tools = ("openvino", "nncf")
    uses_calibration = True
    config: NncfQuantizeConfig

    @classmethod
    def search_space(cls, config: Mapping[str, Any], precision: str, *,
                     max_accuracy_drop: float | None = None) -> StepSearch | None:
        """int8 alternates: full bias correction, the mixed preset, the transformer model type. int8-mixed is
        NNCF's own accuracy control, reverting the costliest layers until ``max_accuracy_drop`` holds."""
        if precision not in ("int8", "int8-mixed", "int8-dynamic"):
            return None
        alternates: list[SearchRecipe] = []
        if precision in ("int8", "int8-mixed"):
            alternates.append(SearchRecipe(name="bias-correction", config={"fast_bias_correction": False}))
            if config.get("preset", "performance") == "performance":
                alternates.append(SearchRecipe(name="preset-mixed", config={"preset": "mixed"}))
            alternates.append(SearchRecipe(name="model-type-transformer", config={"model_type": "transformer"}))
        mixed = None
        if precision == "int8-mixed":
            mixed = SearchRecipe(name="accuracy-control", config={
                "accuracy_control": True, "max_drop_points": 1.0 if max_accuracy_drop is None else max_accuracy_drop})
        return StepSearch(alternates=tuple(alternates), mixed=mixed)

    def run(self, ctx: BuildContext, artifact: Artifact | None, out_dir: Path) -> Artifact:
        import nncf
        import openvino as ov

        assert artifact is not None
        nncf.set_log_level(logging.ERROR)

        quiet_nncf_progress()  # its progress bars, from the Python API too
        model = ov.Core().read_model(str(artifact.path))
        try:
            if ctx.precision in ("int8", "int8-mixed"):
                if ctx.calib is None:
                    raise DataError("static int8 quantization needs calibration data", hint="pass --calib")
                items = list(ctx.calib.batches(max_samples=self.config.subset_size))
                ctx.progress(f"NNCF calibrating on {ctx.calib.count} samples")
                preset = (nncf.QuantizationPreset.PERFORMANCE if self.config.preset == "performance"
                          else nncf.QuantizationPreset.MIXED)
                extra = {}
                if self.config.model_type:
                    extra["model_type"] = nncf.ModelType.TRANSFORMER
                if self.config.ignored_layers:
                    extra["ignored_scope"] = nncf.IgnoredScope(names=list(self.config.ignored_layers), validate=False)
                feed = nncf.Dataset(items, fault_point_feed("nncf-calibration"))  # identity unless a fault test pauses
                control: dict = {}
                if self.config.accuracy_control and ctx.precision == "int8-mixed":
                    model, control = _accuracy_control(model, feed, ctx, self.config, preset, len(items), extra)
                else:
                    model = nncf.quantize(model, feed, preset=preset, subset_size=len(items),
                                          fast_bias_correction=self.config.fast_bias_correction, **extra)
                quant = Quantization(
                    method="static", weights="int8 per-channel", tool="nncf",
                    activations="int8" if self.config.preset == "performance" else "mixed",
                    calibration_samples=min(ctx.calib.count, self.config.subset_size),
                    float_layers=tuple(control.pop("float_layers", ())) or tuple(self.config.ignored_layers),
                    details={**control, "preset": self.config.preset,
                             "fast_bias_correction": self.config.fast_bias_correction,
                             **({"model_type": self.config.model_type} if self.config.model_type else {})})
            elif ctx.precision == "int8-dynamic":
                model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
                quant = Quantization(method="weight-compression", weights="int8 asym", activations="float",
                                     tool="nncf")
            else:
                raise ConversionError(f"nncf-quantize has nothing to do for precision {ctx.precision!r}")
        except (DataError, ConversionError):
            raise
        except Exception as exc:
            raise ConversionError(f"NNCF quantization failed: {type(exc).__name__}: {exc}") from None
        ov.save_model(model, str(out_dir / "model.xml"), compress_to_fp16=False)
        return artifact.with_facts("openvino-ir", [out_dir / "model.xml", out_dir / "model.bin"], quantization=quant)


def _accuracy_control(model, feed, ctx: BuildContext, cfg: NncfQuantizeConfig, preset, subset: int,
                      extra: dict) -> tuple[object, dict]:
    """NNCF ``quantize_with_accuracy_control``: the validation metric is top-1 accuracy on labelled ``--eval``
    data, else top-1 agreement with the source IR on the calibration inputs. Returns the model and what to record
    (the measure, the allowed drop and the compute layers NNCF left in float)."""
    import nncf
    import numpy as np
    import openvino as ov

    items: list[tuple[dict, np.ndarray]] = []
    if ctx.eval is not None and ctx.eval.labels is not None:
        measure, off = "labels", 0
        for batch in ctx.eval.batches():
            n = len(next(iter(batch.values())))
            items.append((batch, np.asarray(ctx.eval.labels[off:off + n])))
            off += n
    else:
        measure = "agreement"
        ref = ov.Core().compile_model(model, "CPU")
        items = [(b, np.argmax(ref(b)[0], axis=-1)) for b in ctx.calib.batches(max_samples=cfg.subset_size)]

    def validate(compiled, data) -> tuple[float, list[float]]:
        hits = [np.asarray(np.argmax(compiled(x)[0], axis=-1) == y, dtype=float).reshape(-1) for x, y in data]
        flat = np.concatenate(hits)
        return float(flat.mean()), [float(h.mean()) for h in hits]

    ctx.progress(f"NNCF accuracy control: top-1 {measure} on {sum(len(y) for _, y in items)} samples, "
                 f"max drop {cfg.max_drop_points} points")
    val = nncf.Dataset(items, lambda item: item[0])
    model = nncf.quantize_with_accuracy_control(
        model, feed, val, validation_fn=validate, max_drop=cfg.max_drop_points / 100.0,
        drop_type=nncf.DropType.ABSOLUTE, preset=preset, subset_size=subset,
        fast_bias_correction=cfg.fast_bias_correction, **extra)
    compute = {"Convolution", "GroupConvolution", "MatMul"}
    floats = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in compute
              and op.input_value(0).get_node().get_type_name() != "FakeQuantize"]
    return model, {"accuracy_control": {"measure": measure, "max_drop_points": cfg.max_drop_points},
                   "float_layers": floats}
