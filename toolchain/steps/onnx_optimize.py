"""``onnx-optimize``: graph simplification (onnxslim) then ONNX Runtime's portable (basic) offline optimizations.

Only ORT's *basic* level is applied offline: extended/layout optimizations are hardware specific and ONNX
Runtime applies them itself when the session is created on the device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from edgeify.errors import ConversionError
from edgeify.onnx_utils import save_single_file
from edgeify_runtime.engines.onnxruntime import OnnxRuntimeAdapter

from .base import Artifact, BuildContext, Step, StepConfig
from .records import GraphFacts


class OnnxOptimizeConfig(StepConfig):
    slim: bool = True
    ort_level: Literal["disabled", "basic"] = "basic"


class OnnxOptimize(Step):
    kind = "onnx-optimize"
    Config = OnnxOptimizeConfig
    consumes = ("onnx",)
    produces = "onnx"
    facts = (GraphFacts,)
    tools = ("onnx", "onnxslim", OnnxRuntimeAdapter.pip)  # its graph optimizer is the engine's own
    precision_sensitive = False
    config: OnnxOptimizeConfig

    def run(self, ctx: BuildContext, artifact: Artifact | None, out_dir: Path) -> Artifact:
        import onnx

        assert artifact is not None
        model = onnx.load(str(artifact.path))
        nodes_before = len(model.graph.node)
        slim_error: str | None = None
        if self.config.slim:
            import onnxslim

            try:
                model = onnxslim.slim(model)
            except Exception as exc:  # onnxslim is an optimization: a failure is reported, not fatal
                ctx.progress(f"onnxslim skipped: {type(exc).__name__}: {exc}")
                slim_error = str(exc)
        slim_path = save_single_file(model, out_dir / "slim.onnx")
        out = out_dir / "model.onnx"
        if self.config.ort_level == "basic":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            opts.optimized_model_filepath = str(out)
            try:
                ort.InferenceSession(str(slim_path), opts, providers=["CPUExecutionProvider"])
            except Exception as exc:
                detail = str(exc).replace(str(slim_path), ctx.source.path.name).replace(str(out_dir), "")
                raise ConversionError(
                    f"graph optimization of {ctx.source.path.name} failed (ONNX Runtime's portable basic level, "
                    f"run before building for {ctx.engine.runtime} on {ctx.target.name}): {detail.strip()}",
                    hint="check the model with `python -c \"import onnx; onnx.checker.check_model('MODEL.onnx', "
                         "full_check=True)\"`; or set config = { ort_level = \"disabled\" } on the target's "
                         "onnx-optimize step (a --target-file)") from None
            slim_path.unlink()
        else:
            slim_path.rename(out)
        graph = GraphFacts(nodes_before, len(onnx.load(str(out)).graph.node), slim_error)
        return artifact.with_facts("onnx", [out], graph=graph)
