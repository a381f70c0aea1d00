"""``tflite-convert``: a source model -> TensorFlow Lite, converted once and shared by every TFLite target.

One step kind serves both kinds of source; what differs between them is the converter, chosen from the source
(``ctx.source``), while the pipeline around it (signature, precision variant, check) is the same:

* **PyTorch** (ExportedProgram ``.pt2``, ``module.py:factory``): **litert-torch**, straight from the torch
  program, I/O layout kept (NCHW; litert-torch puts the transposes inside the model). It writes the one variant
  the precision needs: ``fp32`` (also the base that ``tflite-quantize`` turns into fp16 and int16x8), ``int8``
  through the PT2E flow (``torch.export`` -> ``prepare_pt2e`` with litert-torch's quantizer -> calibration ->
  ``convert_pt2e(fold_quantize=False)`` -> ``litert_torch.convert(..., quant_config=...)``; int8 I/O), or
  ``int8-dynamic`` (PT2E dynamic: int8 weights, activations quantized at run time).
* **ONNX** (and TorchScript, which torch.export cannot re-trace): **onnx2tf** on the ``onnx-export`` step's
  file, NHWC. One onnx2tf run writes every variant (float32, float16, dynamic range, full integer with float and
  with int8 I/O, int16 activations); the step runs it once per model and calibration set and
  ``tflite-quantize`` picks the variant. onnx2tf runs in its own process, offline: its working directory holds
  the sample calibration file it would otherwise download (a deterministic one: edgeify never downloads during a
  build; the user's ``--calib`` data is what calibrates), ``onnxsim`` is found on PATH next to this Python, and
  it converts a copy (it rewrites its input).

The input artifact is ``onnx-export``'s: for both kinds it carries the signature (names, shapes, dtypes,
layouts) that calibration data and the manifest are checked against. The output is a set of ``.tflite`` files
with ``TfliteFacts.variants`` (variant -> file name). The cache key holds the route, the variant a litert-torch
run makes (or ``all`` for onnx2tf), the calibration hash where a variant is calibrated, the step config and the
tool versions -- never the target, so ``rpi4``, ``rpi5`` and ``android-arm64`` builds of a model share it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any, Literal

from edgeify.errors import ConversionError, DataError
from pydantic import Field

from . import _onnx2torch
from ._onnx2tf_prep import VERSION as PREP_VERSION
from ._onnx2tf_prep import fuse_gelu
from ._onnx2torch import transformer_reason
from ._tflite import float_check, quiet_converter, run_error
from ._tflite_errors import _flex_error, _onnx2tf_error, _tail, _torch_error, select_tf_ops
from .base import Artifact, BuildContext, Step, StepConfig, steps_code_digest, tool_versions
from .records import ARTIFACT_SCHEMA, TfliteFacts

#: the file onnx2tf loads from its working directory instead of downloading it (20 RGB images, 128x128)
ONNX2TF_SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
#: onnx2tf's outputs (``<stem>_<suffix>.tflite``) -> edgeify variant names
ONNX2TF_VARIANTS = {
    "float32": "fp32",
    "float16": "fp16",
    "dynamic_range_quant": "int8-dynamic",
    "integer_quant": "int8",                       # int8 inside, float32 I/O
    "full_integer_quant": "int8-io-int8",          # int8 inside and at the I/O
    "integer_quant_with_int16_act": "int16x8",     # int16 activations, int8 weights, float32 I/O
}
TORCH_VARIANTS = {"int8": "int8", "int8-dynamic": "int8-dynamic"}  # every other precision starts from fp32


class LiteRtTorchOptions(StepConfig):
    per_channel: bool = True
    max_calibration_samples: int = Field(default=256, ge=1)


class Onnx2TfOptions(StepConfig):
    quant_type: Literal["per-channel", "per-tensor"] = "per-channel"
    max_calibration_samples: int = Field(default=256, ge=1)
    onnxsim: bool = Field(default=True, description="let onnx2tf simplify the graph with onnxsim first")
    pseudo_ops: tuple[str, ...] = Field(
        default=("erf",), description="ONNX ops onnx2tf writes as plain TFLite builtins instead of Select "
        "TensorFlow (Flex) ops, which LiteRT cannot load (its replace_to_pseudo_operators; e.g. Erf in an "
        "exact-GELU transformer: a polynomial with |error| < 1.5e-7)")
    timeout_s: float = Field(default=3600, gt=0)


class TfliteConvertConfig(StepConfig):
    batch: int = Field(default=1, ge=1, description="the .tflite's batch size (dynamic batch dims are fixed)")
    onnx_route: Literal["auto", "onnx2tf", "onnx2torch"] = Field(
        default="auto", description="how an ONNX model reaches TFLite: onnx2tf (channels-last, every variant in "
        "one run), onnx2torch (ONNX -> PyTorch -> litert-torch, layout kept: transformers), or auto: onnx2torch "
        "for graphs with LayerNorm / attention, onnx2tf otherwise, each falling back to the other on failure")
    litert_torch: LiteRtTorchOptions = LiteRtTorchOptions()
    onnx2tf: Onnx2TfOptions = Onnx2TfOptions()


class TfliteConvert(Step):
    kind = "tflite-convert"
    consumes = ("onnx",)
    produces = "tflite-variants"  # one .tflite per precision variant (tflite-quantize picks)
    facts = (TfliteFacts,)
    Config = TfliteConvertConfig
    tools = ("litert-torch", "torch", "torchao", "ai-edge-litert", "onnx2tf", "tensorflow", "tf-keras", "onnx",
             "onnxsim")
    uses_calibration = True
    config: TfliteConvertConfig

    # -- routing and cache ---------------------------------------------------------------------------------
    def route(self, ctx: BuildContext) -> str:
        """litert-torch for PyTorch sources; for ONNX: the configured route, or (auto) onnx2torch where the
        graph has transformer patterns (onnx2tf's channels-last rewrite breaks their LayerNorms), else onnx2tf."""
        if ctx.source.kind in ("exported-program", "module-factory"):
            return "litert-torch"
        if self.config.onnx_route != "auto":
            return self.config.onnx_route
        return "onnx2torch" if _transformer_reason(ctx) else "onnx2tf"

    def variant(self, ctx: BuildContext) -> str:
        if self.route(ctx) == "onnx2tf":
            return "all"
        return TORCH_VARIANTS.get(ctx.precision, "fp32")

    def tool_versions(self) -> dict[str, str]:
        found = tool_versions(self.tools)
        if found.get("tensorflow") == "not installed":  # the CPU-only wheel has another distribution name
            found["tensorflow"] = tool_versions(("tensorflow-cpu",))["tensorflow-cpu"]
        return found

    def cache_key(self, ctx: BuildContext, input_digest: str) -> str:
        route, variant = self.route(ctx), self.variant(ctx)
        calibrated = variant == "all" or variant == "int8"
        payload = {
            "kind": self.kind, "config": self.config.model_dump(mode="json"), "route": route, "variant": variant,
            "input": input_digest, "source": ctx.source.sha256 if route == "litert-torch" else None,
            "tools": self.tool_versions(),
            "calibration": ctx.calib.sha256 if (calibrated and ctx.calib is not None) else None,
            "onnx_rewrites": PREP_VERSION if route == "onnx2tf" else None, "artifact_schema": ARTIFACT_SCHEMA,
            "code": steps_code_digest(),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    # -- run -----------------------------------------------------------------------------------------------
    def run(self, ctx: BuildContext, artifact: Artifact | None, out_dir: Path) -> Artifact:
        if artifact is None or artifact.format != "onnx" or not artifact.signature.inputs:
            raise ConversionError("tflite-convert needs the onnx-export step's output as its input")
        inputs = [t.to_dict() for t in artifact.signature.inputs]
        route = self.route(ctx)
        sig = artifact.signature
        if route == "litert-torch":
            files, facts = self._litert_torch(ctx, inputs, self.variant(ctx), out_dir)
            self._float_check(ctx, sig, out_dir, facts, hint="export the model to ONNX and build from that file "
                              "(the onnx2tf / onnx2torch routes), or report the litert-torch fault")
        else:
            files, facts = self._onnx(ctx, inputs, artifact.path, out_dir, route, sig)
        # signature and the earlier steps' facts carried over; quantization belongs to the ONNX file
        return Artifact("tflite-variants", tuple(files), artifact.signature, facts=artifact.facts, tflite=facts)

    # -- PyTorch: litert-torch -----------------------------------------------------------------------------
    def _litert_torch(self, ctx: BuildContext, inputs: list[dict[str, Any]], variant: str,
                      out_dir: Path) -> tuple[list[Path], TfliteFacts]:
        import numpy as np
        import torch

        src = ctx.source
        obj = src.load()
        module = obj.module() if src.kind == "exported-program" else obj
        shapes = src.example_shapes(batch=self.config.batch)
        args = tuple(torch.from_numpy(np.zeros(s, dtype=np.dtype(t["dtype"])))
                     for t, s in zip(inputs, shapes, strict=True))
        out, samples = self._torch_variant(ctx, module, args, inputs, variant, out_dir)
        return [out], TfliteFacts("litert-torch", self.config.batch, {variant: out.name}, calibration_samples=samples)

    def _torch_variant(self, ctx: BuildContext, module: Any, args: tuple[Any, ...], inputs: list[dict[str, Any]],
                       variant: str, out_dir: Path) -> tuple[Path, int | None]:
        """One variant (fp32, int8, int8-dynamic) of a torch module through litert-torch: its file, samples."""
        names = [t["name"] for t in inputs]  # the export step's names: the source's inputs, in order
        out = out_dir / f"model_{variant}.tflite"
        samples: int | None = None
        with quiet_converter():
            import litert_torch

            try:
                if variant == "fp32":
                    edge = litert_torch.convert(module, args)
                else:
                    prepared, quant_config, n = self._pt2e(ctx, module, args, names, dynamic=variant != "int8")
                    samples = n
                    edge = litert_torch.convert(prepared, args, quant_config=quant_config)
                edge.export(str(out))
            except (ConversionError, DataError):
                raise
            except Exception as exc:
                raise _torch_error(exc, module, args) from None
        return out, samples

    # -- ONNX: onnx2tf or onnx2torch -> litert-torch, each the other's fallback ------------------------------
    def _float_check(self, ctx: BuildContext, sig: Any, out_dir: Path, facts: TfliteFacts, hint: str) -> None:
        """The fp32 variant (where this run wrote one) against the source at the fp32 tolerance."""

        if "fp32" not in facts.variants:
            return
        ctx.progress(f"checking {facts.converter}'s float model against the source (fp32 tolerance)")
        with quiet_converter():
            try:
                differs = float_check(ctx, out_dir / facts.variants["fp32"], list(sig.inputs), list(sig.outputs),
                                      batch=self.config.batch)
            except ConversionError:
                raise
            except Exception as exc:  # the float model does not run as its signature says: a converter fault too
                text = (str(exc).strip().splitlines() or [""])[0][:300]
                differs = f"it does not run on the source's inputs ({type(exc).__name__}: {text})"
        if differs:
            raise ConversionError(f"the {facts.converter} conversion differs from the source model before any "
                                  f"quantization: {differs}; a converter fault, not a precision one", hint=hint)

    def _onnx(self, ctx: BuildContext, inputs: list[dict[str, Any]], onnx_path: Path, out_dir: Path,
              route: str, sig: Any) -> tuple[list[Path], TfliteFacts]:
        first, second = (self._onnx2torch, self._onnx2tf) if route == "onnx2torch" else (self._onnx2tf,
                                                                                         self._onnx2torch)
        why = _transformer_reason(ctx) if route == "onnx2torch" else None
        other = "onnx2tf" if route == "onnx2torch" else "onnx2torch"

        def attempt(convert: Any, name: str, alternative: str) -> tuple[list[Path], TfliteFacts]:
            files, facts = convert(ctx, inputs, onnx_path, out_dir)
            self._float_check(ctx, sig, out_dir, facts, hint=f"the other ONNX route: set onnx_route = "
                              f"\"{alternative}\" in the tflite-convert step's config (a --target-file), or "
                              "build from the PyTorch source (litert-torch)")
            return files, facts

        try:
            files, facts = attempt(first, route, other)
        except ConversionError as exc:
            if self.config.onnx_route != "auto":
                raise
            ctx.progress(f"{route} failed ({exc.message.splitlines()[0][:200]}); trying the {other} route")
            for leftover in out_dir.iterdir():
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
            try:
                files, facts = attempt(second, other, route)
            except ConversionError as exc2:
                raise ConversionError(f"both ONNX routes to TFLite failed.\n{route}: {exc.message}\n"
                                      f"{other}: {exc2.message}", hint=exc2.hint or exc.hint) from None
            details = {**facts.details, "route": other, "fallback_from": route,
                       "fallback_reason": exc.message.splitlines()[0][:300]}
            return files, dataclasses.replace(facts, details=details)
        details = {**facts.details, "route": route, **({"route_reason": why} if why else {})}
        return files, dataclasses.replace(facts, details=details)

    def _onnx2torch(self, ctx: BuildContext, inputs: list[dict[str, Any]], onnx_path: Path,
                    out_dir: Path) -> tuple[list[Path], TfliteFacts]:
        """ONNX -> torch.fx (onnx2torch, shapes fixed) -> litert-torch: the build's variant, or (when this is
        onnx2tf's fallback, whose cache entry serves every precision) fp32, int8-dynamic and int8 with --calib."""
        import numpy as np
        import torch

        def dim(t: dict[str, Any], i: int, d: Any) -> int:  # a dynamic dim: the batch, else --calib's, else 1
            if isinstance(d, int):
                return d
            if i == 0:
                return self.config.batch
            data = ctx.calib.inputs.get(t["name"]) if ctx.calib is not None else None
            return int(data.shape[i]) if data is not None and data.ndim > i else 1

        shapes = [tuple(dim(t, i, d) for i, d in enumerate(t["shape"])) for t in inputs]
        args = tuple(torch.from_numpy(np.zeros(s, dtype=np.dtype(t["dtype"]))) for t, s in zip(inputs, shapes,
                                                                                              strict=True))
        ctx.progress("onnx2torch: ONNX -> PyTorch (then litert-torch, layout kept)")
        with quiet_converter():
            module = _onnx2torch.to_torch(onnx_path)
            try:
                module = _onnx2torch.specialize(module, args)
            except Exception as exc:  # the converted module does not run on the example inputs
                text = (str(exc).strip().splitlines() or [""])[0][:300]
                raise ConversionError(f"onnx2torch's module does not run: {type(exc).__name__}: {text}") from None
        if self.route(ctx) == "onnx2torch":
            wanted = [self.variant(ctx)]
        else:
            wanted = ["fp32", "int8-dynamic"] + (["int8"] if ctx.calib is not None else [])
        files, variants, samples = [], {}, None
        for variant in wanted:
            out, n = self._torch_variant(ctx, module, args, inputs, variant, out_dir)
            files.append(out)
            variants[variant] = out.name
            samples = n if n is not None else samples
        return files, TfliteFacts("onnx2torch+litert-torch", self.config.batch, variants,
                                  calibrated=(ctx.calib is not None) if "int8" in variants else None,
                                  calibration_samples=samples, details={"onnx2torch_opset": _onnx2torch.OPSET})

    def _pt2e(self, ctx: BuildContext, module: Any, args: tuple[Any, ...], names: list[str],
              dynamic: bool) -> tuple[Any, Any, int | None]:
        import torch
        from litert_torch.quantize import pt2e_quantizer, quant_config
        from torchao.quantization.pt2e import quantize_pt2e

        opts = self.config.litert_torch
        quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
            pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=opts.per_channel, is_dynamic=dynamic))
        prepared = quantize_pt2e.prepare_pt2e(torch.export.export(module, args).module(), quantizer)
        count = None
        with torch.no_grad():
            if dynamic:
                prepared(*args)
            else:
                if ctx.calib is None:
                    raise DataError("static int8 quantization needs calibration data", hint="pass --calib")
                count = 0
                b = self.config.batch
                ctx.progress(f"PT2E calibrating on {min(ctx.calib.count, opts.max_calibration_samples)} samples")
                for feeds in ctx.calib.batches(max_samples=opts.max_calibration_samples):
                    n = len(feeds[names[0]])
                    for i in range(0, n - b + 1, b):
                        prepared(*[torch.from_numpy(feeds[k][i:i + b]) for k in names])
                        count += b
        converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
        return converted, quant_config.QuantConfig(pt2e_quantizer=quantizer), count

    # -- ONNX: onnx2tf -------------------------------------------------------------------------------------
    def _onnx2tf(self, ctx: BuildContext, inputs: list[dict[str, Any]], onnx_path: Path,
                 out_dir: Path) -> tuple[list[Path], TfliteFacts]:
        import numpy as np

        opts = self.config.onnx2tf
        work = (out_dir / "onnx2tf").resolve()  # absolute: the worker runs in `work`, a relative -o would break
        work.mkdir()
        model = work / "model.onnx"
        shutil.copyfile(onnx_path.resolve(), model)  # onnx2tf rewrites its input
        gelus = fuse_gelu(model)  # exact GELU in the order onnx2tf maps to the GELU builtin (not FlexErf)
        rng = np.random.default_rng(0)
        np.save(work / ONNX2TF_SAMPLE_FILE, rng.random((20, 128, 128, 3), dtype=np.float32))
        calib = []
        calibrated = ctx.calib is not None
        samples = min(ctx.calib.count, opts.max_calibration_samples) if ctx.calib is not None else 0
        for t in inputs:
            if ctx.calib is not None:
                data = ctx.calib.inputs[t["name"]][:samples]
            else:  # int8 variants from this data are never selected: tflite-quantize refuses them without --calib
                shape = [8] + [d if isinstance(d, int) else 1 for d in t["shape"][1:]]
                data = rng.standard_normal(shape).astype(np.dtype(t["dtype"]))
            if 3 <= data.ndim <= 5:  # onnx2tf's TF model takes channels-last
                data = np.moveaxis(data, 1, -1)
            path = work / f"calib_{len(calib)}.npy"
            np.save(path, np.ascontiguousarray(data))
            calib.append([t["name"], str(path)])
        out = work / "out"
        request = {"onnx": str(model), "out": str(out), "batch": self.config.batch, "quant_type": opts.quant_type,
                   "calib": calib, "onnxsim": opts.onnxsim, "pseudo_ops": [op.lower() for op in opts.pseudo_ops]}
        (work / "request.json").write_text(json.dumps(request))
        env = dict(os.environ)
        scripts = sysconfig.get_path("scripts")
        env["PATH"] = os.pathsep.join([scripts, str(Path(sys.executable).parent), env.get("PATH", "")])
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        onnxsim_used = opts.onnxsim and shutil.which("onnxsim", path=env["PATH"]) is not None
        if opts.onnxsim and not onnxsim_used:
            ctx.progress("onnxsim not found on PATH: onnx2tf runs without graph simplification")
            request["onnxsim"] = False
            (work / "request.json").write_text(json.dumps(request))
        ctx.progress(f"onnx2tf: converting (every variant in one run; calibration: "
                     f"{f'--calib, {samples} samples' if calibrated else 'none'})")
        log = work / "onnx2tf.log"
        try:
            with open(log, "wb") as f:
                cmd = [sys.executable, "-m", "edgeify.steps._onnx2tf_worker", str(work / "request.json")]
                proc = subprocess.run(cmd, cwd=work, env=env, stdout=f, stderr=subprocess.STDOUT,
                                      timeout=opts.timeout_s)
        except subprocess.TimeoutExpired:
            raise ConversionError(f"onnx2tf ran past {opts.timeout_s:.0f} s",
                                  hint="raise the step's onnx2tf.timeout_s, or convert a smaller model") from None
        text = log.read_text(errors="replace")
        files = sorted(out.glob("model_*.tflite")) if out.is_dir() else []
        if proc.returncode != 0 or not files:
            raise _onnx2tf_error(text, model, proc.returncode)
        variants: dict[str, str] = {}
        kept: list[Path] = []
        flex: dict[str, list[str]] = {}
        broken: dict[str, str] = {}
        trial_inputs = []  # one (channels-last) sample per input, for a trial run of every variant
        for k, (_, path) in enumerate(calib):
            trial_inputs.append(work / f"sample_{k}.npy")
            np.save(trial_inputs[-1], np.load(path)[:self.config.batch])
        for f in files:
            suffix = f.stem[len("model_"):]
            if suffix not in ONNX2TF_VARIANTS:
                continue
            name = ONNX2TF_VARIANTS[suffix]
            ops = select_tf_ops(f)
            if ops:  # LiteRT cannot load Select TF ops: such a variant is no variant
                flex[name] = ops
                continue
            why = run_error(f, trial_inputs)
            if why is not None:  # e.g. an int8 DIV whose divisor quantized to zero
                if name == "fp32":
                    raise ConversionError(f"onnx2tf's float32 model does not run in LiteRT ({why})",
                                          hint="build from the PyTorch source (the litert-torch route)")
                broken[name] = why
                continue
            dest = out_dir / f"model_{name}.tflite"
            f.rename(dest)
            variants[name] = dest.name
            kept.append(dest)
        if "fp32" in flex:
            raise _flex_error(flex["fp32"], ctx)
        if "fp32" not in variants:
            raise ConversionError(f"onnx2tf wrote no float32 model; its log ends with:\n{_tail(text)}")
        missing = sorted(set(ONNX2TF_VARIANTS.values()) - set(variants))
        if missing:
            ctx.progress(f"onnx2tf gave no usable {', '.join(missing)} variant(s)"
                         + (f" ({', '.join(sorted(flex))}: Select TF ops)" if flex else "")
                         + (f" ({', '.join(sorted(broken))}: do not run)" if broken else "")
                         + ": tflite-quantize makes the one a build needs from the fp32 model (ai-edge-quantizer)")
        facts = TfliteFacts("onnx2tf", self.config.batch, variants, calibrated, samples or None, details={
            "onnxsim": onnxsim_used, "quant_type": opts.quant_type, "pseudo_ops": list(opts.pseudo_ops),
            "gelu_rewritten": gelus,
            "dropped_variants": {**{k: f"Select TF ops {', '.join(v)}" for k, v in flex.items()}, **broken}})
        return kept, facts


def _transformer_reason(ctx: BuildContext) -> str | None:
    """Why an ONNX source looks like a transformer (``_onnx2torch.transformer_reason``), or None; only ONNX sources
    are read (a TorchScript source's ONNX export takes onnx2tf first, onnx2torch as its fallback)."""
    if ctx.source.kind != "onnx":
        return None
    path = Path(ctx.source.path)
    return _reason_for(str(path), path.stat().st_mtime_ns, path.stat().st_size)


@functools.lru_cache(maxsize=16)
def _reason_for(path: str, mtime_ns: int, size: int) -> str | None:
    import onnx

    return transformer_reason(onnx.load(path, load_external_data=False))
