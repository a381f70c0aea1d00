"""``check``: run the built model through the device-side runtime and compare it with the source model.

The artifact is staged as a real bundle and loaded with ``edgeify_runtime.load`` (the code path devices use).
Parity on fresh random inputs and on real inputs (calibration data, else evaluation data), with the target's
tolerance for the precision; accuracy of source vs built when ``--eval`` data has labels.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import edgeify_runtime
import numpy as np
from edgeify.bundle import assemble
from edgeify.checks import accuracy, near_miss, parity
from edgeify.errors import ParityError
from edgeify.noise import native_stderr_filter
from edgeify.parity_ops import explain_failure
from edgeify.targets.spec import Tolerance
from edgeify_runtime.manifest import TensorSpec
from pydantic import Field

from .base import ANY_FORMAT, SAME_FORMAT, Artifact, BuildContext, Step, StepConfig, fault_point
from .records import IoQuantization, NearMiss, QParams


class CheckConfig(StepConfig):
    random_samples: int = Field(default=8, ge=1)
    real_samples: int = Field(default=256, ge=1)
    seed: int = 0
    tolerance: Tolerance | None = Field(default=None, description="override the target's tolerance table")
    engine_options: dict[str, Any] = Field(
        default_factory=dict, description="load options for the check's run on the build host, e.g. to make the "
                                          "host compute like the device (not written to the bundle)")
    runtime: str | None = Field(
        default=None, description="check with this device-side engine instead of the target engine's (e.g. "
                                  "onnxruntime on the CPU for a TensorRT engine, which is built on the device)")
    accuracy_decides: tuple[str, ...] = Field(
        default=("fp16",), description="precisions whose near-miss parity failure is decided by accuracy on "
                                       "labelled --eval data (--max-accuracy-drop) instead of refused")
    near_miss_factor: float = Field(default=2.0, ge=1.0, description="a near miss: max|Δ| within this many limits")
    default_max_accuracy_drop: float = Field(
        default=0.5, ge=0, description="accuracy points an accepted near miss may lose when --max-accuracy-drop "
                                       "is not given")


class Check(Step):
    kind = "check"
    Config = CheckConfig
    consumes = (ANY_FORMAT,)
    produces = SAME_FORMAT  # the checked artifact, with its validation report
    cacheable = False
    validates = True
    config: CheckConfig

    def run(self, ctx: BuildContext, artifact: Artifact | None, out_dir: Path) -> Artifact:
        assert artifact is not None
        staged = out_dir / "bundle"
        if self.config.runtime:  # the engine itself only exists on the device: check its artifact here instead
            ctx = replace(ctx, engine=ctx.engine.model_copy(
                update={"runtime": self.config.runtime, "options": {}, "min_version": None}))
        assemble(staged, ctx, artifact, steps=[], tools={})
        io = artifact.quantization.io_quantization or IoQuantization()
        # parity compares like with like: the source's float values. An int8-I/O model (--io-dtype int8) is fed
        # inputs quantized with its own scale/zero point and its outputs are dequantized before comparing.
        qin, qout = dict(io.inputs), dict(io.outputs)
        sig = artifact.signature
        inputs = [_as_float(t, qin) for t in sig.inputs]
        outputs = list(sig.outputs)
        tol = self.config.tolerance or ctx.target.tolerances[ctx.precision]
        reference = ctx.source.reference()
        real = ctx.calib if ctx.calib is not None else ctx.eval

        with native_stderr_filter(), edgeify_runtime.load(staged, options=self.config.engine_options or None) as model:
            fixed = _fixed_batch(model.inputs)

            def run_once(feeds):
                feeds = {k: _quantize(v, qin[k]) if _is_int(model, k) and k in qin else v for k, v in feeds.items()}
                res = model.run(feeds)
                return [_dequantize(v, qout[k]) if k in qout and v.dtype.kind in "iu" else v for k, v in res.items()]

            def built(feeds):
                n = len(next(iter(feeds.values())))
                if fixed is None or n == fixed or n % fixed:
                    return run_once(feeds)
                # data comes in the source's batch (e.g. 32); a fixed-batch model (TFLite: 1) runs it in pieces
                parts = [run_once({k: v[i:i + fixed] for k, v in feeds.items()}) for i in range(0, n, fixed)]
                return [np.concatenate(col) for col in zip(*parts, strict=True)]

            fault_point("check")
            ctx.progress("parity: source vs built on random " + ("and real inputs" if real is not None else
                                                                        "inputs (no --calib/--eval data)"))
            labelled = ctx.eval is not None and ctx.eval.labels is not None
            max_drop = ctx.max_accuracy_drop
            try:
                report = parity(inputs, outputs, reference.run, built, [o.name for o in model.outputs], tol, real,
                                self.config.random_samples, self.config.seed, self.config.real_samples,
                                precision=ctx.precision)
            except ParityError as err:
                failed = getattr(err, "report", None)
                ratio = near_miss(failed, self.config.near_miss_factor)
                if failed is None or ratio is None or not (labelled and ctx.precision in self.config.accuracy_decides):
                    if ratio is not None and ctx.precision in self.config.accuracy_decides:
                        err.hint = (f"it misses by {ratio:.2f}x the limit: pass --eval data with labels and "
                                    "--max-accuracy-drop to let accuracy decide; or " + err.hint)
                    explain_failure(err, ctx, staged, inputs)
                    raise
                max_drop = self.config.default_max_accuracy_drop if max_drop is None else max_drop
                ctx.progress(f"parity missed by {ratio:.2f}x the {ctx.precision} limit: accuracy on the labelled "
                             f"--eval data decides (max drop {max_drop} points)")
                report = replace(failed, passed=True, near_miss=NearMiss(round(ratio, 4), max_drop, err.message))
            if labelled:
                ctx.progress(f"accuracy on {ctx.eval.count} labelled samples")
                report = replace(report, accuracy=accuracy(reference.run, built, ctx.eval, len(outputs), max_drop))
        if self.config.runtime:
            report = replace(report, checked_with=f"{self.config.runtime} on the build host (the target engine "
                                                  "runs on the device)")
        return replace(artifact, validation=report)


def _as_float(spec, quantized: dict) -> object:
    """The float tensor a quantized-I/O input stands for (what the source model takes)."""

    if spec.name in quantized and spec.dtype != "float32":
        return TensorSpec(spec.name, spec.shape, "float32", spec.layout, spec.engine_layout)
    return spec


def _is_int(model, name: str) -> bool:
    return any(t.name == name and np.dtype(t.dtype).kind in "iu" for t in model.inputs)


def _quantize(x, q: QParams):
    info = np.iinfo(np.dtype(q.dtype))
    return np.clip(np.rint(x / q.scale) + q.zero_point, info.min, info.max).astype(q.dtype)


def _dequantize(x, q: QParams):
    return ((x.astype(np.float32) - q.zero_point) * q.scale).astype(np.float32)


def _fixed_batch(inputs) -> int | None:
    dims = {t.shape[0] for t in inputs if t.shape}
    return next(iter(dims)) if len(dims) == 1 and isinstance(next(iter(dims)), int) else None
