"""The facts a build step records about its artifact, as typed records the steps produce.

Each record has one serialization, ``to_dict`` / ``from_dict``: the step cache stores it (``Artifact.to_dict``)
and the bundle writer puts the same dicts into ``manifest.json`` (``quantization``, ``validation``, ``inputs``,
``outputs``, ``opset``). The device reads none of these records (it reads the manifest through
``edgeify_runtime.manifest.Manifest``), so they live on the host.

>>> q = Quantization(method="static", weights="int8", io_quantization=IoQuantization(
...     inputs={"x": QParams("int8", 0.5, -3)}), details={"scheme": "U8S8"})
>>> Quantization.from_dict(q.to_dict()) == q
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from edgeify.targets.spec import Tolerance
from edgeify_runtime.errors import BundleError
from edgeify_runtime.manifest import Manifest, TensorSpec

#: the version of ``Artifact.to_dict``'s layout; part of every step's cache key, so an entry written in an older
#: layout is never read (a miss, rebuilt once)
ARTIFACT_SCHEMA = 3  # 3: step facts in the open ``facts`` object (namespace -> record)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


@dataclass(frozen=True)
class Signature:
    """An artifact's named inputs and outputs (what the manifest's ``inputs``/``outputs`` hold)."""

    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Signature:
        return cls(tuple(TensorSpec.from_dict(t) for t in d.get("inputs") or ()),
                   tuple(TensorSpec.from_dict(t) for t in d.get("outputs") or ()))


@dataclass(frozen=True)
class QParams:
    """Scale and zero point of one integer I/O tensor: ``real = (q - zero_point) * scale``."""

    dtype: str
    scale: float
    zero_point: int

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "scale": self.scale, "zero_point": self.zero_point}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QParams:
        return cls(str(d["dtype"]), float(d["scale"]), int(d["zero_point"]))


@dataclass(frozen=True)
class IoQuantization:
    """The quantization parameters of the integer inputs and outputs, by tensor name."""

    inputs: Mapping[str, QParams] = field(default_factory=dict)
    outputs: Mapping[str, QParams] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": {n: q.to_dict() for n, q in self.inputs.items()},
                "outputs": {n: q.to_dict() for n, q in self.outputs.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IoQuantization:
        return cls({str(n): QParams.from_dict(q) for n, q in (d.get("inputs") or {}).items()},
                   {str(n): QParams.from_dict(q) for n, q in (d.get("outputs") or {}).items()})


@dataclass(frozen=True)
class Quantization:
    """How an artifact is quantized. ``method`` and ``weights`` always; ``io`` says in words how the I/O is
    typed when it stays float (e.g. ``float32 (cast at the boundary)``), ``io_quantization`` holds the scale and
    zero point when it is integer; ``ladder`` the quantization ladder's rungs when one decided the precision
    (``edgeify optimize`` / ``build --ladder``: each rung's JSON record); ``details`` the tool's own settings
    (scheme, preset, per_channel, ...)."""

    method: str = "none"
    weights: str = "float32"
    activations: str | None = None
    tool: str | None = None
    converter: str | None = None
    io: str | None = None
    io_dtype: str | None = None
    io_quantization: IoQuantization | None = None
    calibration_samples: int | None = None
    float_layers: tuple[str, ...] = ()
    ladder: tuple[Mapping[str, Any], ...] | None = None  # () : a ladder was asked for and not needed
    details: Mapping[str, Any] = field(default_factory=dict)

    _NAMED = ("method", "weights", "activations", "tool", "converter", "io", "io_dtype", "io_quantization",
              "calibration_samples", "float_layers", "ladder")

    def to_dict(self) -> dict[str, Any]:
        out = _drop_none({"method": self.method, "weights": self.weights, "activations": self.activations,
                          "tool": self.tool, "converter": self.converter, "io": self.io, "io_dtype": self.io_dtype,
                          "calibration_samples": self.calibration_samples})
        if self.float_layers:
            out["float_layers"] = list(self.float_layers)
        out.update(self.details)
        if self.io_quantization is not None:
            out["io_quantization"] = self.io_quantization.to_dict()
        if self.ladder is not None:
            out["ladder"] = [dict(r) for r in self.ladder]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Quantization:
        if not d:
            return cls()
        io = d.get("io_quantization")
        samples = d.get("calibration_samples")
        return cls(method=str(d.get("method", "none")), weights=str(d.get("weights", "float32")),
                   activations=d.get("activations"), tool=d.get("tool"), converter=d.get("converter"),
                   io=d.get("io"), io_dtype=d.get("io_dtype"),
                   io_quantization=IoQuantization.from_dict(io) if io is not None else None,
                   calibration_samples=None if samples is None else int(samples),
                   float_layers=tuple(d.get("float_layers") or ()),
                   ladder=None if d.get("ladder") is None else tuple(dict(r) for r in d["ladder"]),
                   details={k: v for k, v in d.items() if k not in cls._NAMED})


# -- validation (the check step) -----------------------------------------------------------------------------

@dataclass(frozen=True)
class OutputCheck:
    """One output on one input set: the error figures and whether they met the tolerance.

    ``gated``: this input set decides pass/fail (int8's cosine gates real inputs only); ``error``: why no
    figures exist (a shape mismatch), in which case ``passed`` is False."""

    output: str
    inputs: str
    shape: tuple[int, ...]
    gated: bool
    passed: bool
    limit: str | None = None
    bound: float | None = None
    max_abs: float | None = None
    mean_abs: float | None = None
    ref_max_abs: float | None = None
    cosine: float | None = None
    top1_agreement: float | None = None
    sample_cosine_p: float | None = None
    sample_cosine: float | None = None
    sample_cosine_min: float | None = None
    samples: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["shape"] = list(self.shape)
        d["pass"] = d.pop("passed")
        return _drop_none(d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OutputCheck:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["shape"] = tuple(d.get("shape") or ())
        kw["passed"] = bool(d.get("pass", d.get("error") is None))
        return cls(**kw)


@dataclass(frozen=True)
class ClassDelta:
    """Top-1 accuracy of one class, source vs built."""

    label: int
    count: int
    source: float
    built: float
    delta_points: float

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.label, "count": self.count, "source": self.source, "built": self.built,
                "delta_points": self.delta_points}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassDelta:
        return cls(int(d["class"]), int(d["count"]), float(d["source"]), float(d["built"]), float(d["delta_points"]))


@dataclass(frozen=True)
class AccuracyReport:
    """Top-1 accuracy of source and built model on labelled data, with the per-class deltas."""

    samples: int
    source_accuracy: float
    built_accuracy: float
    drop_points: float
    top1_agreement: float
    per_class: tuple[ClassDelta, ...]
    worst_class: ClassDelta
    max_drop_points: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "source_accuracy": self.source_accuracy,
                "built_accuracy": self.built_accuracy, "drop_points": self.drop_points,
                "top1_agreement": self.top1_agreement, "per_class": [c.to_dict() for c in self.per_class],
                "worst_class": self.worst_class.to_dict(), "max_drop_points": self.max_drop_points}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AccuracyReport:
        return cls(int(d["samples"]), float(d["source_accuracy"]), float(d["built_accuracy"]),
                   float(d["drop_points"]), float(d["top1_agreement"]),
                   tuple(ClassDelta.from_dict(c) for c in d["per_class"]), ClassDelta.from_dict(d["worst_class"]),
                   d.get("max_drop_points"))


@dataclass(frozen=True)
class NearMiss:
    """A parity failure within ``ratio`` x the limit that labelled accuracy decided instead."""

    ratio: float
    max_accuracy_drop: float
    parity: str
    decided_by: str = "accuracy"

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "decided_by": self.decided_by, "max_accuracy_drop": self.max_accuracy_drop,
                "parity": self.parity}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NearMiss:
        return cls(float(d["ratio"]), float(d["max_accuracy_drop"]), str(d["parity"]),
                   str(d.get("decided_by", "accuracy")))


@dataclass(frozen=True)
class ValidationReport:
    """What the check step found: the tolerance used, every output's figures per input set, the verdict, and
    accuracy (with per-class deltas) when labelled ``--eval`` data was given. The manifest's ``validation``."""

    tolerance: Any  # edgeify.targets.spec.Tolerance (imported lazily: pydantic)
    outputs: tuple[OutputCheck, ...]
    random_samples: int
    real_samples: int
    passed: bool
    near_miss: NearMiss | None = None
    accuracy: AccuracyReport | None = None
    checked_with: str | None = None
    per_op: Mapping[str, Any] | None = None  # the per-op divergence table of a failed check (parity_ops)

    @property
    def failed(self) -> tuple[OutputCheck, ...]:
        """The gated rows that did not pass."""
        return tuple(r for r in self.outputs if r.gated and not r.passed)

    def max_abs(self) -> dict[str, float]:
        """The largest max|Δ| per output over every input set."""
        worst: dict[str, float] = {}
        for r in self.outputs:
            if r.max_abs is not None:
                worst[r.output] = max(worst.get(r.output, 0.0), r.max_abs)
        return worst

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"tolerance": self.tolerance.model_dump(), "outputs": [r.to_dict() for r in self.outputs],
                             "random_samples": self.random_samples, "real_samples": self.real_samples,
                             "passed": self.passed}
        if self.near_miss is not None:
            d["near_miss"] = self.near_miss.to_dict()
        if self.accuracy is not None:
            d["accuracy"] = self.accuracy.to_dict()
        if self.checked_with is not None:
            d["checked_with"] = self.checked_with
        if self.per_op is not None:
            d["per_op"] = dict(self.per_op)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ValidationReport:
        nm, acc = d.get("near_miss"), d.get("accuracy")
        return cls(Tolerance.model_validate(d["tolerance"]), tuple(OutputCheck.from_dict(r) for r in d["outputs"]),
                   int(d["random_samples"]), int(d["real_samples"]), bool(d["passed"]),
                   NearMiss.from_dict(nm) if nm else None, AccuracyReport.from_dict(acc) if acc else None,
                   d.get("checked_with"), d.get("per_op"))


def validation_of(manifest: Manifest) -> ValidationReport | None:
    """A bundle manifest's ``validation`` as the typed report (None: the bundle was not checked). The host reads a
    manifest's validation only through this; a malformed report is a ``BundleError``."""
    raw = manifest.validation
    if not raw:
        return None
    try:
        return ValidationReport.from_dict(raw)
    except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise BundleError(f"manifest: malformed validation report: {exc}") from exc


def quantization_of(manifest: Manifest) -> Quantization:
    """A bundle manifest's ``quantization`` as the typed record (the host reads it only through this)."""
    try:
        return Quantization.from_dict(manifest.quantization)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"manifest: malformed quantization record: {exc}") from exc


# -- what the conversion steps record -------------------------------------------------------------------------

@dataclass(frozen=True)
class FixedDim:
    """A dynamic dimension of the source fixed to ``value`` (by ``--input-shape`` or by a conversion)."""

    input: str
    axis: int
    dim: str
    value: int
    by: str

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "axis": self.axis, "dim": self.dim, "value": self.value, "by": self.by}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FixedDim:
        return cls(str(d["input"]), int(d["axis"]), str(d["dim"]), int(d["value"]), str(d["by"]))


@dataclass(frozen=True)
class ExportFacts:
    """How the ONNX model every pipeline starts from was made (the ``onnx-export`` step)."""

    namespace: ClassVar[str] = "export"  # its place in ``Artifact.facts`` and the manifest's ``facts``

    exporter: str
    opset: int
    opset_upgraded_from: int | None = None
    fixed_dims: tuple[FixedDim, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({"exporter": self.exporter, "opset": self.opset,
                           "opset_upgraded_from": self.opset_upgraded_from,
                           "fixed_dims": [f.to_dict() for f in self.fixed_dims] or None})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExportFacts:
        up = d.get("opset_upgraded_from")
        return cls(str(d["exporter"]), int(d["opset"]), None if up is None else int(up),
                   tuple(FixedDim.from_dict(f) for f in d.get("fixed_dims") or ()))


@dataclass(frozen=True)
class GraphFacts:
    """What graph optimization did (the ``onnx-optimize`` step)."""

    namespace: ClassVar[str] = "graph"  # its place in ``Artifact.facts`` and the manifest's ``facts``

    nodes_before: int
    nodes_after: int
    slim_error: str | None = None  # onnxslim failed and was skipped (an optimization, never fatal)

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({"nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
                           "slim_error": self.slim_error})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GraphFacts:
        return cls(int(d["nodes_before"]), int(d["nodes_after"]), d.get("slim_error"))


@dataclass(frozen=True)
class TfliteFacts:
    """The TFLite conversion: the converter and route, the batch it fixed, the variant files it wrote
    (``tflite-convert``), the variant a build picked and the op versions it needs (``tflite-quantize``)."""

    namespace: ClassVar[str] = "tflite"  # its place in ``Artifact.facts`` and the manifest's ``facts``

    converter: str
    batch: int = 1
    variants: Mapping[str, str] = field(default_factory=dict)  # variant -> file name
    calibrated: bool | None = None
    calibration_samples: int | None = None
    variant: str | None = None
    ops: Mapping[str, Any] | None = None  # min_runtime_version's table (min_version, needed_by, ops)
    details: Mapping[str, Any] = field(default_factory=dict)  # converter settings (onnxsim, quant_type, ...)

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({"converter": self.converter, "batch": self.batch, "variants": dict(self.variants),
                           "calibrated": self.calibrated, "calibration_samples": self.calibration_samples,
                           "variant": self.variant, "ops": None if self.ops is None else dict(self.ops),
                           "details": dict(self.details)})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TfliteFacts:
        samples = d.get("calibration_samples")
        return cls(str(d["converter"]), int(d.get("batch", 1)), dict(d.get("variants") or {}), d.get("calibrated"),
                   None if samples is None else int(samples), d.get("variant"), d.get("ops"),
                   dict(d.get("details") or {}))


__all__ = ["ARTIFACT_SCHEMA", "AccuracyReport", "ClassDelta", "ExportFacts", "FixedDim", "GraphFacts",
           "IoQuantization", "NearMiss", "OutputCheck", "QParams", "Quantization", "Signature", "TfliteFacts",
           "ValidationReport", "quantization_of", "validation_of"]
