"""``compress``: the registered build step that prunes, distills and QAT-fine-tunes a PyTorch source.

It is a *source transform* (``transforms_source = True``): it consumes the source model and its output replaces
the build's source (``ctx.source``), so the engine's pipeline that follows (export, its own int8 quantizer, the
parity gate) runs on the compressed model as on any source. ``edgeify build`` runs it before the pipeline when
the request carries its options (``BuildRequest(options={"compress": {...}}, data=DataSets(train=...))``; the CLI's
``--prune/--distill/--qat``). Its facts record (``facts.compression`` in the manifest) says what was done and the
end-to-end accuracy against the ORIGINAL model (:meth:`Compress.finish`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from edgeify.steps.base import SOURCE_MODEL, Artifact, BuildContext, Step, StepConfig
from edgeify.steps.facts import StepFacts
from edgeify.steps.records import Signature
from pydantic import Field

from .options import CompressOptions
from .run import compress_source

#: the artifact format of a compressed model: a torch.export ExportedProgram file (.pt2)
EXPORTED_PROGRAM = "torch-exported-program"


class CompressConfig(StepConfig):
    prune: float | None = Field(default=None, gt=0, lt=1, description="fraction of channels removed in every "
                                                                       "prunable layer; None: no pruning")
    importance: Literal["magnitude", "gradient"] = Field(default="magnitude", description="channel importance: "
                                                         "L2 magnitude, or first-order Taylor on the training data")
    distill: bool = Field(default=False, description="fine-tune against the source model as teacher")
    qat: bool = Field(default=False, description="quantization-aware fine-tuning (fake-quant) before int8")
    train_seconds: float | None = Field(default=None, gt=0, description="training budget in seconds (shared by "
                                        "the phases that train); None: 60 s unless epochs is set")
    epochs: int | None = Field(default=None, ge=1, description="training epochs (with train_seconds: whichever "
                                                               "ends first)")
    batch_size: int = Field(default=32, ge=1, description="training batch size")
    lr: float = Field(default=1e-3, gt=0, description="Adam learning rate")
    temperature: float = Field(default=4.0, gt=0, description="distillation temperature")
    label_weight: float = Field(default=0.5, ge=0, le=1, description="share of the label loss when labels exist")
    round_to: int | None = Field(default=None, ge=1, description="pruned widths rounded to multiples of this")
    seed: int = Field(default=0, description="seed of the shuffling and of the example inputs")


class CompressionFacts(StepFacts):
    """What compression did, in the manifest's ``facts.compression``."""

    namespace: ClassVar[str] = "compression"
    steps: tuple[str, ...] = Field(description="phases run, in order: prune, distill, qat")
    prune_ratio: float | None = Field(default=None, description="fraction of channels removed")
    importance: str | None = Field(default=None, description="channel importance used by pruning")
    macs: dict[str, int] | None = Field(default=None, description="MACs per sample, before and after")
    params: dict[str, int] | None = Field(default=None, description="parameters, before and after")
    widths: dict[str, tuple[int, int]] | None = Field(default=None, description="pruned layers: [before, after]")
    distilled: bool = Field(description="fine-tuned against the source model")
    qat: bool = Field(description="fake-quant fine-tuned before the engine's int8 quantizer")
    qat_scheme: str | None = Field(default=None, description="the fake-quant scheme QAT trained with")
    training: tuple[dict[str, Any], ...] = Field(default=(), description="per phase: epochs, steps, seconds, "
                                                 "first and final loss, what stopped it")
    teacher: dict[str, str] = Field(description="the source model (teacher): file, kind, sha256")
    train_data: dict[str, Any] | None = Field(default=None, description="origin, sha256, sample count, labelled")
    options: dict[str, Any] = Field(description="the options used")
    seconds: float = Field(description="time spent compressing")
    model_sha256: str = Field(description="sha256 of the compressed .pt2 the pipeline converted")
    accuracy: dict[str, Any] | None = Field(default=None, description="end to end on --eval: original, "
                                            "compressed and built accuracy, drop in points against the original")


def options_of(config: CompressConfig, train: str | None):
    c = config.model_dump()
    return CompressOptions(train=train, prune=c["prune"], importance=c["importance"], distill=c["distill"],
                           qat=c["qat"], train_seconds=c["train_seconds"], epochs=c["epochs"],
                           batch_size=c["batch_size"], lr=c["lr"], temperature=c["temperature"],
                           label_weight=c["label_weight"], round_to=c["round_to"], seed=c["seed"])


class Compress(Step):
    kind = "compress"
    Config = CompressConfig
    consumes = (SOURCE_MODEL,)
    produces = EXPORTED_PROGRAM
    facts = (CompressionFacts,)
    tools = ("torch", "torch-pruning", "torchao")
    uses_data = ("train",)
    cacheable = False  # training: not reproducible bit for bit, and minutes are the user's explicit budget
    transforms_source: ClassVar[bool] = True  # its output replaces the build's source (see module docstring)
    config: CompressConfig

    def run(self, ctx: BuildContext, artifact: Artifact | None, out_dir: Path) -> Artifact:
        train = ctx.request.data.train if ctx.request is not None else None
        self._compressed = compress_source(ctx.source, options_of(self.config, train), out_dir, ctx.progress)
        ctx.source = self._compressed.source
        rec = self._facts(self._compressed.record)
        return Artifact(EXPORTED_PROGRAM, (self._compressed.source.path,), Signature(), facts={"compression": rec})

    @staticmethod
    def _facts(r: dict[str, Any], accuracy: dict[str, Any] | None = None) -> CompressionFacts:
        prune = r.get("prune") or {}
        opts = r["options"]
        return CompressionFacts(
            steps=tuple(r["steps"]), prune_ratio=opts.get("prune_ratio"), importance=prune.get("importance"),
            macs=r.get("macs"), params=r.get("params"),
            widths={k: (v[0], v[1]) for k, v in (prune.get("widths") or {}).items()} or None,
            distilled=bool(opts.get("distilled")), qat=bool(opts.get("qat")),
            qat_scheme=(r.get("qat") or {}).get("scheme"),
            training=tuple({k: v for k, v in r[p].items() if k != "scheme"} for p in ("distill", "qat") if p in r),
            teacher=r["teacher"], train_data=r.get("train_data"), options=opts, seconds=r["seconds"],
            model_sha256=r["model_sha256"], accuracy=accuracy)

    def finish(self, ctx: BuildContext, final: Artifact) -> Artifact:
        """After the pipeline: the end-to-end accuracy against the ORIGINAL model on labelled ``--eval`` (gated
        by ``--max-accuracy-drop``), into this step's facts on the final artifact."""
        comp = self._compressed
        accuracy = comp.end_to_end(final.validation, ctx.eval, len(final.signature.outputs),
                                   ctx.max_accuracy_drop)
        return final.with_facts(final.format, final.files, compression=self._facts(comp.record, accuracy))
