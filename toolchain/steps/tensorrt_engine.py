"""``tensorrt-engine``: the TensorRT engine plan, built on the device (``where = "device"``).

The host never runs this step: ``edgeify build`` validates its config and records it in the manifest's
``device_steps``; on the device, ``edgeify_runtime.trt_engine.ensure_engine`` (run by ``edgeify deploy``/``bench``
and by ``edgeify_runtime.load``) builds the plan with trtexec or the TensorRT Python API and caches it by the
device fingerprint. The fields mirror ``edgeify_runtime.trt_engine.BuildSettings``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from edgeify.errors import ConversionError
from pydantic import Field, model_validator

from .base import Artifact, BuildContext, Step, StepConfig


class TensorRTEngineConfig(StepConfig):
    dla_core: int | None = Field(default=None, ge=0, description="DLA core to build for (None: the GPU)")
    dla_cores: int = Field(default=0, ge=0, description="DLA cores this module has (from the target spec)")
    gpu_fallback: bool = Field(default=True, description="with dla_core: layers the DLA cannot run go to the GPU")
    timing_cache: bool = True
    workspace_mib: int | None = Field(default=None, ge=1)
    builder_optimization_level: int | None = Field(default=None, ge=0, le=5)
    builder: Literal["auto", "trtexec", "python"] = "auto"
    min_batch: int = Field(default=1, ge=1)
    opt_batch: int | None = Field(default=None, ge=1)
    max_batch: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> TensorRTEngineConfig:
        if self.dla_core is not None and self.dla_core >= self.dla_cores:
            raise ValueError(f"dla_core={self.dla_core}, but the module has {self.dla_cores} DLA core(s)")
        if not self.min_batch <= (self.opt_batch or self.min_batch) <= self.max_batch:
            raise ValueError("need min_batch <= opt_batch <= max_batch")
        return self


class TensorRTEngine(Step):
    kind = "tensorrt-engine"
    Config = TensorRTEngineConfig
    consumes = ("onnx",)
    produces = "tensorrt-plan"  # built on the device (where = "device")
    cacheable = False
    config: TensorRTEngineConfig

    def run(self, ctx: BuildContext, artifact: Artifact | None, out_dir: Path) -> Artifact:
        raise ConversionError("the tensorrt-engine step runs on the device (where = \"device\"), not on the host",
                              hint="edgeify deploy / edgeify bench --device builds the engine on the Jetson")
