"""Target specs: frozen, validated value objects describing one board and how to build for it.

A spec is data (TOML), never code branches. It names the board's architecture and OS, its engines (each with
the precisions it supports, its artifact format and layout, where its artifact is built, and its pipeline of
steps), the default engine per precision, the benchmark protocol and the tolerance table.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from edgeify.errors import ConfigError, TargetError
from pydantic import Field, field_validator, model_validator

from ..values import Frozen as _Frozen

#: ``int8-mixed``: static int8 with the most sensitive layers kept in float (``edgeify optimize``'s ladder);
#: ``bf16``: fp32 weights computed in bfloat16 on CPUs that have it (AVX-512 BF16 / AMX), engine-selected
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int8-mixed", "int8-dynamic", "int16x8")
Precision = Literal["fp32", "fp16", "bf16", "int8", "int8-mixed", "int8-dynamic", "int16x8"]
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"


class StepRef(_Frozen):
    """One step of an engine's pipeline. ``input`` names the step whose output this step consumes
    (None: the source model). A step filtered out for the chosen precision passes its input through."""

    id: str = Field(pattern=NAME_PATTERN)
    uses: str = Field(description="step kind, e.g. onnx-export, ort-quantize (see `edgeify steps`)")
    input: str | None = None
    precisions: tuple[Precision, ...] | None = Field(
        default=None, description="apply only for these precisions (None: always)")
    where: Literal["host", "device"] = "host"
    config: dict[str, Any] = Field(default_factory=dict)


class EngineSpec(_Frozen):
    runtime: str = Field(description="device-side adapter name (edgeify_runtime.engines)")
    artifact_format: str = Field(description="the format the pipeline's last host step produces (checked when a "
                                             "build resolves): onnx, openvino-ir, tflite, tensorrt-plan, pte, ...")
    artifact: str = Field(description="artifact file name inside the bundle")
    min_version: str | None = None
    precisions: tuple[Precision, ...]
    layout: Literal["NCHW", "NHWC", "any"] = "any"
    io_dtypes: tuple[Literal["float32", "int8"], ...] = Field(
        default=("float32",), description="I/O dtypes a caller may use (--io-dtype); int8 applies to int8 builds")
    build_on: Literal["host", "device"] = "host"
    install_hint: str = ""
    options: dict[str, Any] = Field(
        default_factory=dict, description="engine load options written to the manifest's engine.options "
                                          "(e.g. ONNX Runtime providers in fallback order)")
    pipeline: tuple[StepRef, ...]

    @model_validator(mode="after")
    def _pipeline_graph(self) -> EngineSpec:
        ids = [s.id for s in self.pipeline]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate step ids in pipeline: {sorted(dup)}")
        seen: set[str] = set()
        for s in self.pipeline:
            if s.input is not None and s.input not in ids:
                raise ValueError(f"step {s.id!r}: input {s.input!r} is not a step of this pipeline")
            if s.input is not None and s.input not in seen:
                raise ValueError(f"step {s.id!r}: input {s.input!r} must be declared before it")
            seen.add(s.id)
        if not any(s.input is None for s in self.pipeline):
            raise ValueError("pipeline has no step that consumes the source model (input = none)")
        return self


class Tolerance(_Frozen):
    """``max-abs``: max|built-ref| <= rtol*max|ref| + atol per output; ``cosine``: cosine similarity of the
    flattened outputs on real inputs >= min_cosine (figures on random inputs are reported, not gated) and, per
    sample, the ``sample_percentile``-th percentile of the per-sample cosines >= min_sample_cosine (so a minority
    of badly wrong samples cannot hide in the batch-wide figure)."""

    metric: Literal["max-abs", "cosine"]
    rtol: float = 0.0
    atol: float = 0.0
    min_cosine: float = 0.0
    min_sample_cosine: float | None = Field(
        default=None, description="cosine metric: gate on the per-sample cosine percentile (None: report only)")
    sample_percentile: float = Field(default=5.0, ge=0, le=100, description="which low percentile is gated")


DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(metric="max-abs", rtol=1e-4, atol=1e-5),
    "fp16": Tolerance(metric="max-abs", rtol=1e-2, atol=1e-5),
    "bf16": Tolerance(metric="cosine", min_cosine=0.995, min_sample_cosine=0.95),
    "int8": Tolerance(metric="cosine", min_cosine=0.98, min_sample_cosine=0.9),
    "int8-mixed": Tolerance(metric="cosine", min_cosine=0.98, min_sample_cosine=0.9),
    "int8-dynamic": Tolerance(metric="cosine", min_cosine=0.98, min_sample_cosine=0.9),
    "int16x8": Tolerance(metric="cosine", min_cosine=0.99, min_sample_cosine=0.95),
}


class BenchProtocol(_Frozen):
    warmup: int = Field(default=10, ge=0)
    runs: int = Field(default=100, ge=1)
    min_duration_s: float = Field(default=1.0, ge=0)
    max_duration_s: float = Field(default=120.0, gt=0)
    threads: int | None = Field(default=None, ge=1, description="None: the device's physical cores")


class CpuSpec(_Frozen):
    model: str = ""
    features: tuple[str, ...] = ()
    cores: int | None = None


class AcceleratorSpec(_Frozen):
    kind: Literal["cuda-gpu", "dla", "npu", "gpu"]
    name: str = ""
    compute_capability: str | None = None
    count: int = 1


class TargetSpec(_Frozen):
    name: str = Field(pattern=NAME_PATTERN)
    family: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    status: str = Field(description="what has (not) been verified on real hardware")
    verified_on_hardware: bool = False
    arch: Literal["x86_64", "aarch64", "armv7l"]
    os: Literal["linux", "android"] = "linux"
    cpu: CpuSpec = CpuSpec()
    accelerators: tuple[AcceleratorSpec, ...] = ()
    precisions: tuple[Precision, ...]
    engines: dict[str, EngineSpec]
    default_engine: dict[Precision, str] = Field(
        description="engine used per precision when --engine is not given (entries for precisions a board "
                    "does not list, e.g. inherited from its template, are unused)")
    bench: BenchProtocol = BenchProtocol()
    tolerances: dict[Precision, Tolerance] = Field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
    source: str = Field(default="", description="where this spec was loaded from", exclude=True)

    @field_validator("tolerances", mode="before")
    @classmethod
    def _merge_tolerances(cls, v: Any) -> Any:
        merged = {k: t.model_dump() for k, t in DEFAULT_TOLERANCES.items()}
        for k, t in (v or {}).items():
            merged[k] = {**merged.get(k, {}), **(t.model_dump() if isinstance(t, Tolerance) else t)}
        return merged

    @model_validator(mode="after")
    def _consistent(self) -> TargetSpec:
        if not self.engines:
            raise ValueError("a target needs at least one engine")
        for prec in self.precisions:
            eng = self.default_engine.get(prec)
            if eng is None:
                raise ValueError(f"precision {prec!r} has no default engine (default_engine.{prec})")
            if eng not in self.engines:
                raise ValueError(f"default_engine.{prec} = {eng!r} is not one of the engines {sorted(self.engines)}")
            if prec not in self.engines[eng].precisions:
                raise ValueError(f"default engine {eng!r} for {prec!r} does not support that precision")
        return self

    # -- derived -------------------------------------------------------------------------------------
    @property
    def digest(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def __hash__(self) -> int:
        return hash(self.digest)

    def engine_for(self, precision: str, engine: str | None = None) -> tuple[str, EngineSpec]:
        """The engine to build ``precision`` with; raises TargetError with the alternatives."""

        if precision not in self.precisions:
            raise TargetError(
                f"target {self.name!r} does not support precision {precision!r}",
                hint=f"choose one of: {', '.join(self.precisions)}")
        name = engine or self.default_engine[precision]  # type: ignore[index]
        if name not in self.engines:
            _refuse_uninstalled_engine(name)
            raise TargetError(f"target {self.name!r} has no engine {name!r}",
                              hint=f"choose one of: {', '.join(sorted(self.engines))}")
        spec = self.engines[name]
        if precision not in spec.precisions:
            ok = [e for e, s in self.engines.items() if precision in s.precisions]
            raise TargetError(f"engine {name!r} on {self.name!r} does not support precision {precision!r}",
                              hint=f"engines with {precision}: {', '.join(ok) or 'none'}")
        return name, spec

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "arch": self.arch, "os": self.os,
                "engines": sorted(self.engines), "precisions": list(self.precisions),
                "default_engine": dict(self.default_engine), "status": self.status,
                "verified_on_hardware": self.verified_on_hardware, "source": self.source}


def _refuse_uninstalled_engine(name: str) -> None:
    """An engine no installed distribution registers (``edgeify.engines``) is a ConfigError (exit 4) saying how
    an engine plugin is installed: ``edgeify-<name>`` by convention, or ``./plugins/<name>`` of a checkout."""
    from importlib.metadata import entry_points
    from pathlib import Path

    registered = sorted({ep.name for ep in entry_points(group="edgeify.engines")})
    if name in registered:
        return
    plugin = Path(__file__).resolve().parents[1] / "plugins" / name
    how = f"pip install {plugin}" if (plugin / "pyproject.toml").is_file() else f"pip install edgeify-{name}"
    raise ConfigError(f"engine {name!r} is not installed: no installed package registers it (engines come from "
                      f"edgeify and its plugins; installed: {', '.join(registered)})",
                      hint=f"install its plugin: {how}, then `edgeify engines` lists it")
