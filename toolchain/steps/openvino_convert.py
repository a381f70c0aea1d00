"""``openvino-convert``: ONNX -> OpenVINO IR (model.xml + model.bin); fp16 compresses the weights."""

from __future__ import annotations

from pathlib import Path

from edgeify.errors import ConversionError

from .base import Artifact, BuildContext, Step, StepConfig
from .records import Quantization


class OpenVinoConvertConfig(StepConfig):
    compress_fp16_for: tuple[str, ...] = ("fp16",)


class OpenVinoConvert(Step):
    kind = "openvino-convert"
    Config = OpenVinoConvertConfig
    consumes = ("onnx",)
    produces = "openvino-ir"
    tools = ("openvino",)
    config: OpenVinoConvertConfig

    def run(self, ctx: BuildContext, artifact: Artifact | None, out_dir: Path) -> Artifact:
        import openvino as ov

        assert artifact is not None
        compress = ctx.precision in self.config.compress_fp16_for
        try:
            model = ov.convert_model(str(artifact.path))
            ov.save_model(model, str(out_dir / "model.xml"), compress_to_fp16=compress)
        except Exception as exc:
            raise ConversionError(f"OpenVINO conversion failed: {type(exc).__name__}: {exc}") from None
        quant = artifact.quantization
        if compress:
            quant = Quantization(method="fp16", weights="float16 (compressed IR)", io="float32",
                                 details={"compute": "engine default"})
        return artifact.with_facts("openvino-ir", [out_dir / "model.xml", out_dir / "model.bin"], quantization=quant)
