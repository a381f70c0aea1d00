"""What every build step shares: the artifact passed between steps, the build context, and the step contract."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from edgeify.request import Budgets, BuildRequest
from edgeify_runtime.manifest import sha256_file
from pydantic import BaseModel, ConfigDict

from .facts import read_facts, write_facts
from .records import ARTIFACT_SCHEMA, ExportFacts, IoQuantization, QParams, Quantization, Signature, ValidationReport
from .search import SearchRecipe, StepSearch

if TYPE_CHECKING:
    from edgeify.data import Dataset
    from edgeify.request import BuildRequest
    from edgeify.sources import SourceModel
    from edgeify.targets.spec import EngineSpec, TargetSpec

_R = TypeVar("_R")


#: ``Step.consumes`` of a step that reads the source model itself (the pipeline's first step)
SOURCE_MODEL = "source-model"
#: ``Step.consumes``: any artifact format; ``Step.produces``: the input's format (a check, a pass-through)
ANY_FORMAT = "*"
SAME_FORMAT = "same-as-input"


@dataclass(frozen=True, init=False)
class Artifact:
    """A model produced by a step: its files (the first is the one an engine loads), its signature, quantization
    and validation, and the open, namespaced ``facts`` the steps recorded (``{namespace: record}``, see
    ``steps.facts``). ``to_dict``/``from_dict`` is its one serialization (the step cache stores it).

    Facts records are passed by namespace: ``Artifact("onnx", files, sig, export=ExportFacts(...))`` or
    ``artifact.with_facts("onnx", files, graph=GraphFacts(...))``; read them with ``artifact.fact(ExportFacts)``."""

    format: str
    files: tuple[Path, ...]
    signature: Signature
    quantization: Quantization
    validation: ValidationReport | None
    engine_min_version: str | None  # what the artifact's ops need (e.g. TFLite op versions)
    facts: Mapping[str, Any]

    def __init__(self, format: str, files: Sequence[Path], signature: Signature | None = None,
                 quantization: Quantization | None = None, validation: ValidationReport | None = None, *,
                 engine_min_version: str | None = None, facts: Mapping[str, Any] | None = None,
                 **by_namespace: Any) -> None:
        merged = dict(facts or {})
        for ns, rec in by_namespace.items():
            if rec is None:
                merged.pop(ns, None)
                continue
            if getattr(rec, "namespace", None) != ns:
                raise TypeError(f"Artifact: {ns}= takes a facts record whose namespace is {ns!r}, got "
                                f"{type(rec).__name__}")
            merged[ns] = rec
        set_ = object.__setattr__
        set_(self, "format", format)
        set_(self, "files", tuple(Path(f) for f in files))
        set_(self, "signature", signature if signature is not None else Signature())
        set_(self, "quantization", quantization if quantization is not None else Quantization())
        set_(self, "validation", validation)
        set_(self, "engine_min_version", engine_min_version)
        set_(self, "facts", dict(sorted(merged.items())))

    def with_facts(self, format: str, files: Sequence[Path], **changes: Any) -> Artifact:
        """A new artifact with this one's facts and ``changes`` applied (a step's output from its input):
        ``signature``/``quantization``/``validation``/``engine_min_version`` replace those fields, any other
        keyword is a facts namespace (a record, or None to drop it)."""
        fields = {k: changes.pop(k) for k in ("signature", "quantization", "validation", "engine_min_version")
                  if k in changes}
        kw: dict[str, Any] = {"signature": self.signature, "quantization": self.quantization,
                              "validation": self.validation, "engine_min_version": self.engine_min_version, **fields}
        return Artifact(format, files, kw["signature"], kw["quantization"], kw["validation"],
                        engine_min_version=kw["engine_min_version"], facts=self.facts, **changes)

    def fact(self, record: type[_R]) -> _R | None:
        """This artifact's record of ``record``'s namespace (None when no step wrote one)."""
        got = self.facts.get(record.namespace)  # type: ignore[attr-defined]
        return got if isinstance(got, record) else None

    @property
    def opset(self) -> int | None:
        export = self.fact(ExportFacts)
        return export.opset if export is not None else None

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
        if self.validation is not None:
            d["validation"] = self.validation.to_dict()
        if self.engine_min_version is not None:
            d["engine_min_version"] = self.engine_min_version
        if self.facts:
            d["facts"] = write_facts(self.facts)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], root: Path) -> Artifact:
        """Read ``to_dict``'s form, files resolved in ``root``. Another schema version is a ``ValueError``; each
        facts namespace is validated by the record class its step declares."""
        if d.get("schema") != ARTIFACT_SCHEMA:
            raise ValueError(f"artifact schema {d.get('schema')!r}, this edgeify reads {ARTIFACT_SCHEMA}")
        v = d.get("validation")
        return cls(str(d["format"]), tuple(root / str(n) for n in d["files"]), Signature.from_dict(d["signature"]),
                   Quantization.from_dict(d.get("quantization")), None if v is None else ValidationReport.from_dict(v),
                   engine_min_version=d.get("engine_min_version"),
                   facts=read_facts(d.get("facts"), where="artifact facts"))


@dataclass
class BuildContext:
    """What a running step sees: the resolved source, target, engine and precision, its work directory, the
    data sets the build loaded, and the whole ``request`` (any other input a step needs: ``ctx.request``)."""

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
    request: BuildRequest | None = None

    def __post_init__(self) -> None:
        if self.request is None:  # a context made outside build() (inspect, parity): a request saying as much

            self.request = BuildRequest(model=str(getattr(self.source, "spec", "") or ""), target=self.target,
                                        precision=self.precision, engine=self.engine_name, io_dtype=self.io_dtype,
                                        budgets=Budgets(max_accuracy_drop=self.max_accuracy_drop))


class StepConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Step:
    """A build step: ``run(ctx, input_artifact, out_dir) -> output_artifact``. A subclass declares everything
    edgeify needs to know about it, and is registered in the entry-point group ``edgeify.steps``:

    - ``kind`` (its name in target files), ``Config`` (a pydantic ``StepConfig``: every field with a description);
    - ``consumes`` / ``produces``: the artifact formats it reads and writes (``SOURCE_MODEL`` for the step that
      reads the source model, ``ANY_FORMAT``, ``SAME_FORMAT``); the pipeline refuses a mismatch;
    - ``facts``: the facts record classes it writes into ``Artifact.facts`` (and so the manifest's ``facts``);
    - ``search_space(config, precision)``: what optimize and the ladder may vary (a ``StepSearch``), and
      ``float_layers_option`` (the config key naming layers kept in float);
    - ``tools`` (packages whose versions enter the cache key and the manifest), ``cacheable``,
      ``uses_calibration``, ``uses_data`` (other request data sets its output depends on: their file digests
      enter the cache key, as do the request's options for the step), ``precision_sensitive``;
    - ``validates``: a checking step (every pipeline's last host step must be one);
    - ``transforms_source`` (+ ``finish``): a step that runs before the pipeline on request and replaces the
      source model (``compress``).

    Any other input (training data, a teacher model) comes from ``ctx.request`` (``edgeify.request``).

    Heavy libraries are imported inside ``run`` only."""

    kind: ClassVar[str]
    Config: ClassVar[type[StepConfig]] = StepConfig
    consumes: ClassVar[tuple[str, ...]] = ()
    produces: ClassVar[str] = SAME_FORMAT
    facts: ClassVar[tuple[type, ...]] = ()
    float_layers_option: ClassVar[str | None] = None
    tools: ClassVar[tuple[str, ...]] = ()
    cacheable: ClassVar[bool] = True
    uses_calibration: ClassVar[bool] = False
    uses_data: ClassVar[tuple[str, ...]] = ()
    precision_sensitive: ClassVar[bool] = True  # False: the output does not depend on the build's precision
    validates: ClassVar[bool] = False  # checks the artifact against the source: a pipeline's last host step must
    #: a source transform (e.g. ``compress``): run before the pipeline when the request's options name its kind
    #: (``BuildRequest(options={kind: {...}})``); it replaces ``ctx.source``, and ``finish`` runs after the pipeline
    transforms_source: ClassVar[bool] = False

    def __init__(self, config: StepConfig) -> None:
        self.config = config

    def run(self, ctx: BuildContext, artifact: Artifact | None, out_dir: Path) -> Artifact:
        raise NotImplementedError

    def finish(self, ctx: BuildContext, final: Artifact) -> Artifact:
        """A source transform's last word on the pipeline's final artifact (e.g. facts measured against the
        original model); other steps are never asked."""
        return final

    @classmethod
    def search_space(cls, config: Mapping[str, Any], precision: str, *,
                     max_accuracy_drop: float | None = None) -> StepSearch | None:
        """The search this step offers for ``precision`` given its declared ``config`` (a target file's mapping),
        or None: it does not decide that precision's numerics (only quantize steps return a ``StepSearch``)."""
        return None

    @classmethod
    def output_format(cls, input_format: str) -> str:
        return input_format if cls.produces == SAME_FORMAT else cls.produces

    @classmethod
    def accepts(cls, input_format: str) -> bool:
        return ANY_FORMAT in cls.consumes or input_format in cls.consumes

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
        if self.uses_data:
            payload["data"] = data_digests(ctx, self.uses_data)
        options = ctx.request.step_options(self.kind) if ctx.request is not None else {}
        if options:  # the request's options for this step change its output (absent: keys as before)
            payload["options"] = options
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def data_digests(ctx: BuildContext, names: Sequence[str]) -> dict[str, str | None]:
    """sha256 of each named request data set's file (None: not given), for a step's cache key."""

    given = ctx.request.data.named() if ctx.request is not None else {}
    out: dict[str, str | None] = {}
    for name in names:
        p = Path(given[name]) if name in given else None
        out[name] = sha256_file(p) if p is not None and p.is_file() else (str(p) if p is not None else None)
    return out


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

    marker = Path(os.environ[FAULT_FILE_ENV])
    tmp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{name} {os.getpid()}", encoding="utf-8")
    os.replace(tmp, marker)  # a test that sees the file sees it whole
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


__all__ = ["ANY_FORMAT", "SAME_FORMAT", "SOURCE_MODEL", "Artifact", "BuildContext", "IoQuantization", "QParams",
           "Quantization", "SearchRecipe", "Signature", "Step", "StepConfig", "StepSearch", "ValidationReport",
           "data_digests", "fault_point", "fault_point_feed", "tool_versions"]
