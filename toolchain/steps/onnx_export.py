"""``onnx-export``: any source model -> one self-contained ONNX file at a known opset, batch axis dynamic."""

from __future__ import annotations

from pathlib import Path

from edgeify.errors import ConversionError, InputSignatureError
from edgeify.noise import captured_warnings, quiet_python_loggers
from edgeify.onnx_utils import custom_ops, fix_input_dims, opset_of, save_single_file, signature
from edgeify.sources import _flatten as flat
from pydantic import Field

from ._source_modules import SourceModulesFacts, fx_modules, source_modules
from .base import SOURCE_MODEL, Artifact, BuildContext, Step, StepConfig, fault_point
from .records import ExportFacts, FixedDim, Signature


class OnnxExportConfig(StepConfig):
    opset: int = Field(default=18, ge=9, description="opset for torch exports")
    min_opset: int = Field(default=13, ge=9, description="ONNX sources below this are upgraded")
    max_opset: int | None = Field(default=None, ge=9, description="newest opset the target's engine parses "
                                                                  "(e.g. 17 for TensorRT 8.5/8.6); None: no limit")
    dynamic_batch: bool = True


class OnnxExport(Step):
    kind = "onnx-export"
    Config = OnnxExportConfig
    consumes = (SOURCE_MODEL,)
    produces = "onnx"
    facts = (ExportFacts, SourceModulesFacts)
    tools = ("torch", "onnx", "onnxscript")
    precision_sensitive = False
    config: OnnxExportConfig

    def run(self, ctx: BuildContext, artifact: Artifact | None, out_dir: Path) -> Artifact:
        import onnx

        src = ctx.source
        out = out_dir / "model.onnx"
        upgraded_from: int | None = None
        fx: dict[str, tuple[str, str]] = {}  # FX node -> module (dynamo exports), for nodes the optimizer fused
        if src.kind == "onnx":
            model = src.load()
            _refuse_custom_ops(ctx, model)
            opset = opset_of(model)
            if opset < self.config.min_opset:
                ctx.progress(f"upgrading opset {opset} -> {self.config.min_opset}")
                from onnx import version_converter

                try:
                    model = version_converter.convert_version(model, self.config.min_opset)
                    onnx.checker.check_model(model)
                except Exception as exc:
                    raise ConversionError(f"upgrading the ONNX opset {opset} -> {self.config.min_opset} failed: {exc}",
                                          hint="re-export the model at opset 13 or newer") from None
                upgraded_from = opset
            exporter = "none (ONNX source)"
            save_single_file(model, out)
        else:
            exporter = self._export_torch(ctx, out, fx)
        model = onnx.load(str(out))
        if self.config.max_opset is not None and opset_of(model) > self.config.max_opset:
            model = self._limit_opset(ctx, model, out)
        fixes = src.input_shape_fixes(src.pre_signature()[0]) if src.kind in ("onnx", "exported-program") else []
        if fixes:  # --input-shape on a source that has its own shapes: fix the dynamic dims it names

            model = fix_input_dims(model, fixes)
            save_single_file(model, out)
        inputs, outputs = signature(model, torch_source=src.is_torch)
        export = ExportFacts(exporter, opset_of(model), upgraded_from, tuple(FixedDim.from_dict(f) for f in fixes))
        return Artifact("onnx", (out,), Signature(tuple(inputs), tuple(outputs)), export=export,
                        source_modules=source_modules(model, fx))  # module path per node: profiles, parity

    def _export_torch(self, ctx: BuildContext, out: Path, fx: dict[str, tuple[str, str]]) -> str:
        import torch

        quiet_python_loggers()  # "torchvision is not installed" x4 per export (edgeify uses no torchvision ops)

        src = ctx.source
        obj = src.load()
        names = src.input_names()
        shapes = src.example_shapes(batch=2 if self.config.dynamic_batch else 1)
        args = tuple(torch.randn(*s) for s in shapes)
        module = obj.module() if src.kind == "exported-program" else obj
        try:
            with torch.no_grad():
                n_out = len(_flatten(module(*args)))
        except Exception as exc:
            raise InputSignatureError(
                f"{src.spec}: running the model on inputs of shape {[list(s) for s in shapes]} failed: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
                hint="check --input-shape against what the model's forward expects") from None
        out_names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
        common = dict(input_names=names, output_names=out_names, opset_version=self.config.opset)
        if src.kind == "torchscript":
            dynamic_axes = {n: {0: "batch"} for n in [*names, *out_names]} if self.config.dynamic_batch else None
            self._legacy(obj, args, out, dynamic_axes, common)
            return "torch.onnx (TorchScript)"
        target = obj if src.kind == "exported-program" else module
        fault_point("torch-export")
        dyn = None
        if self.config.dynamic_batch and src.kind != "exported-program":
            batch = torch.export.Dim("batch", min=1, max=4096)
            dyn = tuple({0: batch} for _ in names)
        try:
            with captured_warnings("torch.onnx"):  # kept in this run's log, off the terminal
                prog = torch.onnx.export(target, args if src.kind != "exported-program" else (), str(out),
                                         dynamo=True, external_data=False, dynamic_shapes=dyn, optimize=True,
                                         verbose=False, **common)
            fx.update(fx_modules(getattr(prog, "exported_program", None)))
            return "torch.onnx (dynamo)"
        except Exception as exc:
            if src.kind == "exported-program":
                raise ConversionError(f"torch.onnx export of the ExportedProgram failed: {exc}") from None
            ctx.progress(f"dynamo export failed ({type(exc).__name__}); retrying with the TorchScript exporter")
            dynamic_axes = {n: {0: "batch"} for n in [*names, *out_names]} if self.config.dynamic_batch else None
            self._legacy(module, args, out, dynamic_axes, common)
            return "torch.onnx (TorchScript fallback)"

    def _limit_opset(self, ctx: BuildContext, model, out: Path):
        """Bring an export above ``max_opset`` down to it: the ONNX version converter, else (torch sources) the
        TorchScript exporter at that opset; a ConversionError when neither can."""
        import onnx
        from onnx import version_converter

        have, limit = opset_of(model), int(self.config.max_opset or 0)
        try:
            converted = version_converter.convert_version(model, limit)
            onnx.checker.check_model(converted)
            if opset_of(converted) <= limit:
                save_single_file(converted, out)
                return converted
        except Exception as exc:
            ctx.progress(f"opset {have} -> {limit} conversion failed ({type(exc).__name__})")
        if ctx.source.kind == "onnx":
            raise ConversionError(f"the model is at opset {have}; the target's engine parses opset <= {limit} and "
                                  "the ONNX version converter could not convert it",
                                  hint=f"re-export the model at opset {limit}")
        import torch

        src = ctx.source
        obj = src.load()
        module = obj.module() if src.kind == "exported-program" else obj
        names = src.input_names()
        args = tuple(torch.randn(*s) for s in src.example_shapes(batch=2 if self.config.dynamic_batch else 1))
        n_out = len(onnx.load(str(out)).graph.output)
        out_names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
        dynamic_axes = {n: {0: "batch"} for n in [*names, *out_names]} if self.config.dynamic_batch else None
        ctx.progress(f"re-exporting with the TorchScript exporter at opset {limit} (the target's limit)")
        self._legacy(module, args, out, dynamic_axes,
                     dict(input_names=names, output_names=out_names, opset_version=limit))
        model = onnx.load(str(out))
        if opset_of(model) > limit:
            raise ConversionError(f"could not export the model at opset <= {limit} (got {opset_of(model)})")
        return model

    @staticmethod
    def _legacy(module, args, out: Path, dynamic_axes, common) -> None:
        import torch

        try:
            with captured_warnings("torch.onnx"):
                torch.onnx.export(module, args, str(out), dynamo=False, dynamic_axes=dynamic_axes, **common)
        except Exception as exc:
            raise ConversionError(f"torch.onnx export failed: {type(exc).__name__}: {exc}") from None


def _refuse_custom_ops(ctx: BuildContext, model) -> None:
    ops = custom_ops(model)
    if ops:
        raise ConversionError(
            f"{ctx.source.path.name} uses custom ops {', '.join(ops)}: {ctx.engine.runtime} (engine "
            f"{ctx.engine_name!r} on {ctx.target.name}) has no implementation of them, and edgeify never loads "
            "custom-op libraries",
            hint="re-export the model with standard ONNX ops (e.g. torch.onnx.export without the custom symbolic), "
                 "or build from the PyTorch source (.pt2 / module.py:factory)")


def _flatten(out):
    return flat(out)


