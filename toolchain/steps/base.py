"""What every build step shares: the artifact passed between steps, the build context, and the step contract."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from .records import (
    ARTIFACT_SCHEMA,
    ExportFacts,
    GraphFacts,
    IoQuantization,
    QParams,
    Quantization,
    Signature,
    TfliteFacts,
    ValidationReport,
)

if TYPE_CHECKING:
    from edgeify.data import Dataset
    from edgeify.sources import SourceModel
    from edgeify.targets.spec import EngineSpec, TargetSpec


@dataclass(frozen=True)
class Artifact:
    """A model produced by a step: its files (the first is the one an engine loads) and the typed facts the
    steps recorded about it. ``to_dict``/``from_dict`` is its one serialization (the step cache stores it)."""

    format: str
    files: tuple[Path, ...]
    signature: Signature = field(default_factory=Signature)
    quantization: Quantization = field(default_factory=Quantization)
    validation: ValidationReport | None = None
    export: ExportFacts | None = None
    graph: GraphFacts | None = None
    tflite: TfliteFacts | None = None
    engine_min_version: str | None = None  # what the artifact's ops need (e.g. TFLite op versions)

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", tuple(Path(f) for f in self.files))

    def with_facts(self, format: str, files: Sequence[Path], **facts: Any) -> Artifact:
        """A new artifact with this one's facts, ``facts`` replaced (a step's output from its input)."""
        return replace(self, format=format, files=tuple(files), **facts)

    @property
    def opset(self) -> int | None:
        return self.export.opset if self.export is not None else None

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

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; files by name (they live in one directory: a step's output or its cache entry)."""
        d: dict[str, Any] = {"schema": ARTIFACT_SCHEMA, "format": self.format, "files": [p.name for p in self.files],
                             "signature": self.signature.to_dict(), "quantization": self.quantization.to_dict()}
        for name in ("validation", "export", "graph", "tflite"):
            rec = getattr(self, name)
            if rec is not None:
                d[name] = rec.to_dict()
        if self.engine_min_version is not None:
            d["engine_min_version"] = self.engine_min_version
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], root: Path) -> Artifact:
        """Read ``to_dict``'s form, files resolved in ``root``. Another schema version is a ``ValueError``."""
        if d.get("schema") != ARTIFACT_SCHEMA:
            raise ValueError(f"artifact schema {d.get('schema')!r}, this edgeify reads {ARTIFACT_SCHEMA}")

        def opt(name: str, rec: Any) -> Any:
            return rec.from_dict(d[name]) if d.get(name) is not None else None
        return cls(str(d["format"]), tuple(root / str(n) for n in d["files"]), Signature.from_dict(d["signature"]),
                   Quantization.from_dict(d.get("quantization")), opt("validation", ValidationReport),
                   opt("export", ExportFacts), opt("graph", GraphFacts), opt("tflite", TfliteFacts),
                   d.get("engine_min_version"))


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
            "artifact_schema": ARTIFACT_SCHEMA, "code": steps_code_digest(),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@functools.cache
def steps_code_digest() -> str:
    """sha256 of the steps' own source (every module of this package): part of every cache key, so a fix in a
    step's code is never hidden by an artifact the old code cached (tool versions alone do not change then)."""
    h = hashlib.sha256()
    for p in sorted(Path(__file__).parent.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


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


__all__ = ["Artifact", "BuildContext", "IoQuantization", "QParams", "Quantization", "Signature", "Step",
           "StepConfig", "ValidationReport", "fault_point", "fault_point_feed", "tool_versions"]
