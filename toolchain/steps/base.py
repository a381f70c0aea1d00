"""What every build step shares: the artifact passed between steps, the build context, and the step contract."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from edgeify.data import Dataset
    from edgeify.sources import SourceModel
    from edgeify.targets.spec import EngineSpec, TargetSpec
    from edgeify_runtime.manifest import TensorSpec


@dataclass(frozen=True)
class Signature:
    """An artifact's named inputs and outputs (what the manifest's ``inputs``/``outputs`` hold)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Signature:
        from edgeify_runtime.manifest import TensorSpec

        return cls(tuple(TensorSpec.from_dict(t) for t in meta.get("inputs") or ()),
                   tuple(TensorSpec.from_dict(t) for t in meta.get("outputs") or ()))

    def to_meta(self) -> dict[str, Any]:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}


@dataclass(frozen=True)
class QParams:
    """Scale and zero point of one integer I/O tensor: ``real = (q - zero_point) * scale``."""

    dtype: str
    scale: float
    zero_point: int


@dataclass(frozen=True)
class IoQuantization:
    inputs: Mapping[str, QParams] = field(default_factory=dict)
    outputs: Mapping[str, QParams] = field(default_factory=dict)

    @classmethod
    def from_meta(cls, d: Any) -> IoQuantization:
        if not isinstance(d, Mapping):
            return cls()

        def side(x: Any) -> dict[str, QParams]:
            return {str(n): QParams(str(q["dtype"]), float(q["scale"]), int(q["zero_point"]))
                    for n, q in (x or {}).items()}
        return cls(side(d.get("inputs")), side(d.get("outputs")))

    def to_meta(self) -> dict[str, Any]:
        return {k: {n: {"dtype": q.dtype, "scale": q.scale, "zero_point": q.zero_point} for n, q in v.items()}
                for k, v in (("inputs", self.inputs), ("outputs", self.outputs))}


@dataclass(frozen=True)
class Quantization:
    """How an artifact is quantized: ``method`` and ``weights`` always, integer I/O parameters when the I/O is
    quantized, and whatever else the step records (tool, preset, calibration samples, ...) in ``details``."""

    method: str = "none"
    weights: str = "float32"
    io_quantization: IoQuantization | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_meta(cls, d: Mapping[str, Any] | None) -> Quantization:
        if not d:
            return cls()
        rest = {k: v for k, v in d.items() if k not in ("method", "weights", "io_quantization")}
        io = d.get("io_quantization")
        return cls(str(d.get("method", "none")), str(d.get("weights", "float32")),
                   IoQuantization.from_meta(io) if isinstance(io, Mapping) else None, rest)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "weights": self.weights, **self.details}
        if self.io_quantization is not None:
            out["io_quantization"] = self.io_quantization.to_meta()
        return out


@dataclass
class Artifact:
    """A model produced by a step: its files (the first is the one an engine loads) and what is known of it.

    ``meta`` is the serialized form (it is what the step cache stores); read the facts through the typed views
    ``signature``, ``quantization`` and ``validation``."""

    format: str
    files: list[Path]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def signature(self) -> Signature:
        return Signature.from_meta(self.meta)

    @property
    def quantization(self) -> Quantization:
        return Quantization.from_meta(self.meta.get("quantization"))

    @property
    def validation(self) -> dict[str, Any] | None:
        return self.meta.get("validation")

    @property
    def path(self) -> Path:
        return self.files[0]

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for p in self.files:
            h.update(p.name.encode())
            with open(p, "rb") as f:
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(block)
        return h.hexdigest()

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)


@dataclass
class BuildContext:
    source: SourceModel
    target: TargetSpec
    engine_name: str
    engine: EngineSpec
    precision: str
    work_dir: Path
    io_dtype: str = "float32"  # the dtype callers feed and receive (--io-dtype; int8 only for int8 TFLite builds)
    calib: Dataset | None = None
    eval: Dataset | None = None
    max_accuracy_drop: float | None = None
    progress: Callable[[str], None] = lambda msg: None
    reports: dict[str, Any] = field(default_factory=dict)


class StepConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Step:
    """A build step. Subclasses set ``kind``, ``Config`` and ``tools`` (packages whose versions enter the cache
    key and the manifest) and implement ``run``. Heavy libraries are imported inside ``run`` only."""

    kind: ClassVar[str]
    Config: ClassVar[type[StepConfig]] = StepConfig
    tools: ClassVar[tuple[str, ...]] = ()
    cacheable: ClassVar[bool] = True
    uses_calibration: ClassVar[bool] = False
    precision_sensitive: ClassVar[bool] = True  # False: the output does not depend on the build's precision

    def __init__(self, config: StepConfig) -> None:
        self.config = config

    def run(self, ctx: BuildContext, artifact: Artifact | None, out_dir: Path) -> Artifact:
        raise NotImplementedError

    def tool_versions(self) -> dict[str, str]:
        return tool_versions(self.tools)

    def cache_key(self, ctx: BuildContext, input_digest: str) -> str:
        payload = {
            "kind": self.kind,
            "config": self.config.model_dump(mode="json"),
            "precision": ctx.precision if self.precision_sensitive else None,
            "input": input_digest,
            "tools": self.tool_versions(),
            "calibration": ctx.calib.sha256 if (self.uses_calibration and ctx.calib is not None) else None,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


FAULT_POINT_ENV = "EDGEIFY_TEST_PAUSE_AT"
FAULT_FILE_ENV = "EDGEIFY_TEST_PAUSE_FILE"


def fault_point(name: str) -> None:
    """Test hook for the interrupt tests: when ``EDGEIFY_TEST_PAUSE_AT`` is ``name``, write
    ``EDGEIFY_TEST_PAUSE_FILE`` ("<name> <pid>") and wait there (at most 10 minutes) for the signal the test
    sends, so a step is interrupted at a known point instead of after a guessed sleep. No effect otherwise."""
    if os.environ.get(FAULT_POINT_ENV) != name:
        return
    import time

    Path(os.environ[FAULT_FILE_ENV]).write_text(f"{name} {os.getpid()}", encoding="utf-8")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(0.05)


def fault_point_feed(name: str) -> Callable[[Any], Any]:
    """An identity transform that passes ``fault_point(name)`` on each item (e.g. NNCF's calibration feed)."""
    def feed(item: Any) -> Any:
        fault_point(name)
        return item
    return feed


def tool_versions(names: tuple[str, ...] | list[str]) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out
