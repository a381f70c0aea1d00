"""``check``: run the built model through the device-side runtime and compare it with the source model.

The artifact is staged as a real bundle and loaded with ``edgeify_runtime.load`` (the code path devices use).
Parity on fresh random inputs and on real inputs (calibration data, else evaluation data), with the target's
tolerance for the precision; accuracy of source vs built when ``--eval`` data has labels.
"""

from __future__ import annotations

from pathlib import Path

from edgeify.targets.spec import Tolerance
from pydantic import Field

from .base import Artifact, BuildContext, Step, StepConfig


class CheckConfig(StepConfig):
    random_samples: int = Field(default=8, ge=1)
    real_samples: int = Field(default=256, ge=1)
    seed: int = 0
    tolerance: Tolerance | None = Field(default=None, description="override the target's tolerance table")


class Check(Step):
    kind = "check"
    Config = CheckConfig
    cacheable = False
    config: CheckConfig

    def run(self, ctx: BuildContext, artifact: Artifact | None, out_dir: Path) -> Artifact:
        import edgeify_runtime
        from edgeify.bundle import assemble
        from edgeify.checks import accuracy, parity
        from edgeify_runtime.manifest import TensorSpec

        assert artifact is not None
        staged = out_dir / "bundle"
        assemble(staged, ctx, artifact, steps=[], tools={}, validation=None)
        inputs = [TensorSpec.from_dict(t) for t in artifact.meta["inputs"]]
        outputs = [TensorSpec.from_dict(t) for t in artifact.meta["outputs"]]
        tol = self.config.tolerance or ctx.target.tolerances[ctx.precision]
        reference = ctx.source.reference()
        real = ctx.calib if ctx.calib is not None else ctx.eval
        with edgeify_runtime.load(staged) as model:
            def built(feeds):
                res = model.run(feeds)
                return list(res.values())

            ctx.progress("parity: source vs built on random and real inputs")
            report = parity(inputs, outputs, reference.run, built, [o.name for o in model.outputs], tol, real,
                            self.config.random_samples, self.config.seed, self.config.real_samples)
            if ctx.eval is not None and ctx.eval.labels is not None:
                ctx.progress(f"accuracy on {ctx.eval.count} labelled samples")
                report["accuracy"] = accuracy(reference.run, built, ctx.eval, len(outputs), ctx.max_accuracy_drop)
        meta = dict(artifact.meta)
        meta["validation"] = report
        return Artifact(artifact.format, list(artifact.files), meta)
