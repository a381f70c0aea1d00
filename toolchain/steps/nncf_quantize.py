"""``nncf-quantize``: NNCF post-training quantization of an OpenVINO IR.

``int8``: static, calibrated activations + per-channel weights; ``int8-dynamic``: int8 weight compression
(activations stay float, the OpenVINO analogue of dynamic-range quantization); ``int8-mixed``: static int8 with
the layers in ``ignored_layers`` kept in float (NNCF ``IgnoredScope``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from edgeify.errors import ConversionError, DataError
from pydantic import Field

from .base import Artifact, BuildContext, Step, StepConfig, fault_point_feed


class NncfQuantizeConfig(StepConfig):
    preset: Literal["performance", "mixed"] = "performance"
    subset_size: int = Field(default=300, ge=1)
    fast_bias_correction: bool = True
    model_type: Literal["transformer"] | None = Field(
        default=None, description="NNCF model type: 'transformer' keeps attention-sensitive ops in float")
    ignored_layers: tuple[str, ...] = Field(default=(), description="layer names kept in float (int8-mixed)")


class NncfQuantize(Step):
    kind = "nncf-quantize"
    Config = NncfQuantizeConfig
    tools = ("openvino", "nncf")
    uses_calibration = True
    config: NncfQuantizeConfig

    def run(self, ctx: BuildContext, artifact: Artifact | None, out_dir: Path) -> Artifact:
        import nncf
        import openvino as ov

        assert artifact is not None
        nncf.set_log_level(logging.ERROR)
        from edgeify.noise import quiet_nncf_progress

        quiet_nncf_progress()  # its progress bars, from the Python API too
        model = ov.Core().read_model(str(artifact.path))
        meta = dict(artifact.meta)
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
                model = nncf.quantize(model, feed, preset=preset, subset_size=len(items),
                                      fast_bias_correction=self.config.fast_bias_correction, **extra)
                meta["quantization"] = {"method": "static", "tool": "nncf", "preset": self.config.preset,
                                        "weights": "int8 per-channel",
                                        "activations": "int8" if self.config.preset == "performance" else "mixed",
                                        "calibration_samples": min(ctx.calib.count, self.config.subset_size),
                                        "fast_bias_correction": self.config.fast_bias_correction,
                                        **({"model_type": self.config.model_type} if self.config.model_type else {}),
                                        **({"float_layers": list(self.config.ignored_layers)}
                                           if self.config.ignored_layers else {})}
            elif ctx.precision == "int8-dynamic":
                model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
                meta["quantization"] = {"method": "weight-compression", "tool": "nncf", "weights": "int8 asym",
                                        "activations": "float"}
            else:
                raise ConversionError(f"nncf-quantize has nothing to do for precision {ctx.precision!r}")
        except (DataError, ConversionError):
            raise
        except Exception as exc:
            raise ConversionError(f"NNCF quantization failed: {type(exc).__name__}: {exc}") from None
        ov.save_model(model, str(out_dir / "model.xml"), compress_to_fp16=False)
        return Artifact("openvino-ir", [out_dir / "model.xml", out_dir / "model.bin"], meta)
