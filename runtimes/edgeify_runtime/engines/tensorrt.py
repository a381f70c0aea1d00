"""TensorRT adapter (Jetson): artifact ``model.onnx``; the engine plan is built on the device on first load.

``load`` first makes sure the bundle has an engine plan for this device (``edgeify_runtime.trt_engine``: reuse when
the device fingerprint matches, else build with trtexec or the TensorRT Python API), then deserializes it with the
``tensorrt`` module and runs it through whatever CUDA binding the device has: ``cuda-python``
(``cuda.bindings.runtime`` or the older ``cuda.cudart``), else ``pycuda``. Device apps that call
``edgeify_runtime.load`` therefore build, cache and run engines the same way ``edgeify bench`` does.

Options (manifest ``engine.options`` or ``load(options=...)``); the build ones override the bundle's
``tensorrt-engine`` step config and are part of the engine's cache key:
  ``dla_core``                    run on this DLA core (None: GPU); with ``gpu_fallback`` (default true) layers
                                  the DLA cannot run go to the GPU
  ``engine_dir``                  where plans are cached (default ``<bundle>/engines``)
  ``builder``                     ``auto`` (trtexec if present, else the Python API), ``trtexec``, ``python``
  ``workspace_mib``, ``builder_optimization_level``, ``min_batch``/``opt_batch``/``max_batch``, ``timing_cache``

Status: this adapter has never run on NVIDIA hardware (edgeify's CI has no Jetson and no TensorRT); only the
engine cache decisions, command lines and log parsing are tested, against a Jetson-fingerprinted emulated device
and recorded trtexec output.
"""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from ..errors import BundleError, EngineMissingError
from ..profile import tensorrt
from ..profile.record import build_profile
from ..trt_engine import ensure_engine, settings_for
from .base import EngineAdapter, Option, ProfileRun, int_range, is_bool, names_to_positions, one_of

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from ..manifest import Manifest

CUDA_HINT = ("pip install cuda-python (matching the device's CUDA major version), or install pycuda; "
             "on a Jetson, JetPack provides CUDA itself")


class _CudaRuntime:  # pragma: no cover - needs an NVIDIA GPU
    """The few CUDA runtime calls the adapter needs, over cuda-python or pycuda."""

    def __init__(self) -> None:
        self.kind = ""
        self._rt: Any = None
        errors = []
        for mod in ("cuda.bindings.runtime", "cuda.cudart"):
            try:
                self._rt = importlib.import_module(mod)
                self.kind = f"cuda-python ({mod})"
                break
            except Exception as exc:
                errors.append(f"{mod}: {exc}")
        if self._rt is None:
            try:
                import pycuda.autoinit  # noqa: F401 - creates the context
                import pycuda.driver as drv

                self._drv = drv
                self.kind = "pycuda"
            except Exception as exc:
                errors.append(f"pycuda: {exc}")
                raise EngineMissingError("no CUDA Python binding on this device (" + "; ".join(errors) + ")",
                                         hint=CUDA_HINT) from None
        self.stream = self._call("cudaStreamCreate") if self._rt else self._drv.Stream()

    def _call(self, name: str, *args: Any) -> Any:
        out = getattr(self._rt, name)(*args)
        err, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
        if int(err) != 0:
            raise RuntimeError(f"CUDA {name} failed: {err}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def malloc(self, nbytes: int) -> Any:
        return self._call("cudaMalloc", max(1, nbytes)) if self._rt else self._drv.mem_alloc(max(1, nbytes))

    def free(self, ptr: Any) -> None:
        if self._rt:
            self._call("cudaFree", ptr)
        else:
            ptr.free()

    def h2d(self, dst: Any, arr: np.ndarray) -> None:
        if self._rt:
            kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
            self._call("cudaMemcpyAsync", dst, arr.ctypes.data, arr.nbytes, kind, self.stream)
        else:
            self._drv.memcpy_htod_async(dst, arr, self.stream)

    def d2h(self, arr: np.ndarray, src: Any) -> None:
        if self._rt:
            kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
            self._call("cudaMemcpyAsync", arr.ctypes.data, src, arr.nbytes, kind, self.stream)
        else:
            self._drv.memcpy_dtoh_async(arr, src, self.stream)

    def sync(self) -> None:
        if self._rt:
            self._call("cudaStreamSynchronize", self.stream)
        else:
            self.stream.synchronize()

    @property
    def stream_handle(self) -> int:
        return int(self.stream) if self._rt else self.stream.handle

    def address(self, ptr: Any) -> int:
        return int(ptr)


class TensorRTAdapter(EngineAdapter):
    name = "tensorrt"
    modules = ("tensorrt",)
    distributions = ("tensorrt", "tensorrt-cu12", "tensorrt_cu12", "tensorrt-libs")
    pip = "tensorrt"
    install_hint = ("on a Jetson: sudo apt-get install nvidia-jetpack (or python3-libnvinfer), "
                    "plus pip install cuda-python")
    option_specs: ClassVar[Mapping[str, Option]] = {
        "dla_core": Option(lambda v: v is None or int_range(0, 15)(v), "DLA core (None: the GPU)"),
        "gpu_fallback": Option(is_bool, "layers the DLA cannot run go to the GPU (default true)"),
        "builder": Option(one_of("auto", "trtexec", "python"), "how the plan is built"),
        "workspace_mib": Option(int_range(1, 1 << 20), "builder workspace"),
        "builder_optimization_level": Option(int_range(0, 5), "builder optimization level"),
        "min_batch": Option(int_range(1, 1 << 16), "optimization profile: smallest batch"),
        "opt_batch": Option(int_range(1, 1 << 16), "optimization profile: batch tuned for"),
        "max_batch": Option(int_range(1, 1 << 16), "optimization profile: largest batch"),
        "engine_dir": Option(None, "where plans are cached (a path: load(options=...) only)"),
        "timing_cache": Option(None, "builder timing cache (a path: load(options=...) only)"),
    }
    profile_source = "trtexec --dumpProfile --separateProfileRun --exportProfile"
    profile_runs_itself = True

    def __init__(self) -> None:
        super().__init__()
        #: what ensure_engine did on load (built / reused / rebuilt, with the metadata), for reports
        self.engine_record: Any = None
        self.device = "GPU"
        self._engine: Any = None
        self._context: Any = None
        self._cuda: Any = None
        self._buffers: dict[str, tuple[Any, int]] = {}

    def _load(self, artifact: Path, manifest: Manifest) -> None:
        self.engine_record = ensure_engine(artifact.parent, manifest, self.options)
        dla = settings_for(manifest, self.options).dla_core
        self.device = "GPU" if dla is None else f"DLA{dla}"
        self._load_plan(Path(self.engine_record.plan), manifest, dla)

    def _load_plan(self, plan: Path, manifest: Manifest, dla_core: int | None) -> None:  # pragma: no cover
        import numpy as np

        trt = self._import_engine()
        self._cuda = _CudaRuntime()
        self._np = np
        self._trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        if dla_core is not None:
            runtime.DLA_core = int(dla_core)
        engine = runtime.deserialize_cuda_engine(plan.read_bytes())
        if engine is None:
            raise EngineMissingError(f"TensorRT {self.version} cannot deserialize {plan.name} (built by another "
                                     "TensorRT or on another device?)",
                                     hint=f"delete {plan.parent} on the device to force a rebuild")
        self._engine = engine
        self._context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        man_in = [t.name for t in manifest.inputs]
        man_out = [t.name for t in manifest.outputs]
        pin = names_to_positions(man_in, [[n] for n in inputs], "input", self.name)
        pout = names_to_positions(man_out, [[n] for n in outputs], "output", self.name)
        self._inputs = [(m, inputs[pin[k]]) for k, m in enumerate(man_in)]
        self._outputs = [(m, outputs[pout[k]]) for k, m in enumerate(man_out)]
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}

    def _buffer(self, name: str, nbytes: int) -> Any:  # pragma: no cover
        ptr, size = self._buffers.get(name, (None, 0))
        if ptr is None or size < nbytes:
            if ptr is not None:
                self._cuda.free(ptr)
            ptr = self._cuda.malloc(nbytes)
            self._buffers[name] = (ptr, nbytes)
            self._context.set_tensor_address(name, self._cuda.address(ptr))
        return ptr

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover - needs a GPU
        np = self._np
        cuda, ctx = self._cuda, self._context
        for man, eng in self._inputs:
            arr = np.ascontiguousarray(feeds[man], dtype=self._dtypes[eng])
            if not ctx.set_input_shape(eng, tuple(arr.shape)):
                raise BundleError(f"tensorrt: input {man!r} shape {list(arr.shape)} is outside the engine's "
                                  "optimization profile", hint="rebuild with a wider min/max batch")
            cuda.h2d(self._buffer(eng, arr.nbytes), arr)
        results = {}
        for man, eng in self._outputs:
            shape = tuple(ctx.get_tensor_shape(eng))
            if any(d < 0 for d in shape):
                raise BundleError(f"tensorrt: output {man!r} has a data-dependent shape {shape}, which this "
                                  "adapter does not support")
            host = np.empty(shape, dtype=self._dtypes[eng])
            self._buffer(eng, host.nbytes)
            results[man] = host
        if not ctx.execute_async_v3(cuda.stream_handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        for man, eng in self._outputs:
            cuda.d2h(results[man], self._buffers[eng][0])
        cuda.sync()
        return results

    def profile_collect(self, run: ProfileRun) -> Any:
        shapes = {k: list(getattr(v, "shape", ())) for k, v in run.feeds.items()}
        ops, extra, intended, missing = tensorrt.collect(self.engine_record, run.workdir, shapes, run.runs,
                                                         run.timeout_s)
        return build_profile(self.name, tensorrt.SOURCE, run.runs, ops, intended, {**run.overhead, **extra},
                             missing)

    def close(self) -> None:
        cuda, self._cuda = self._cuda, None
        if cuda is not None:  # pragma: no cover - needs a GPU
            for ptr, _ in self._buffers.values():
                with contextlib.suppress(Exception):
                    cuda.free(ptr)
        self._buffers = {}
        self._context = None
        self._engine = None
        super().close()
