"""ncnn adapter (device side): artifact ``model.ncnn.param`` with its ``model.ncnn.bin`` beside it.

Loaded with the ``ncnn`` Python wheel (``pip install ncnn``: x86-64 and aarch64 wheels; numpy only). One
``ncnn.Net`` per bundle, one ``Extractor`` per inference. ncnn has no batch axis: inputs are fed without their
batch dimension (the bundle's batch is 1) and outputs get it back.

Options (manifest ``engine.options`` or ``load(options=...)``):
  ``threads``          ``Option.num_threads`` when the caller of ``load`` names none
  ``light_mode``       ``Option.lightmode``: free intermediate blobs as soon as they are consumed (default true)
  ``fp16_storage``     ``use_fp16_storage`` / ``use_fp16_packed``: fp16 weights and blobs in memory
  ``fp16_arithmetic``  ``use_fp16_arithmetic``: compute in fp16 where the CPU has fp16 arithmetic (ARMv8.2)
  ``bf16_storage``     ``use_bf16_storage`` / ``use_bf16_packed``: bf16 blobs in memory (fp32 arithmetic)

An fp32 bundle turns fp16 and bf16 off (ncnn's defaults would store in fp16 on ARM, which the host's parity
check did not validate); an fp16 bundle turns fp16 storage and arithmetic on.

Profile: the layer table (name, type), without per-layer times: ncnn's Python module has no per-layer profiler
(the C++ benchmark build's ``NCNN_BENCHMARK`` per-layer print is not in the wheel), and running one layer's
``forward`` alone from Python on the extracted blobs crashed (segfault) in ncnn 1.0.20261020.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from edgeify_runtime.engines.base import THREADS, EngineAdapter, Option, ProfileRun, TuningAxis, is_bool
from edgeify_runtime.errors import BundleError

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    import numpy as np
    from edgeify_runtime.manifest import Manifest

SOURCE = "ncnn layer table (Net.layers)"
PLACEMENT = "ncnn CPU"
NO_TIMES = ("ncnn's Python module has no per-layer profiler (the C++ benchmark build's NCNN_BENCHMARK per-layer "
            "print is not in the wheel; running a layer's forward alone from Python crashed in ncnn 1.0.20261020): "
            "per-layer times are not measured rather than estimated")


class NcnnAdapter(EngineAdapter):
    name = "ncnn"
    modules = ("ncnn",)
    distributions = ("ncnn",)
    pip = "ncnn"
    option_specs: ClassVar[Mapping[str, Option]] = {
        "threads": THREADS,
        "light_mode": Option(is_bool, "free intermediate blobs once consumed (Option.lightmode, default true)"),
        "fp16_storage": Option(is_bool, "fp16 weights/blobs in memory (use_fp16_storage, use_fp16_packed)"),
        "fp16_arithmetic": Option(is_bool, "fp16 arithmetic where the CPU has it (use_fp16_arithmetic)"),
        "bf16_storage": Option(is_bool, "bf16 blobs in memory, fp32 arithmetic (use_bf16_storage)"),
    }
    tuning_axes = (TuningAxis("light_mode", (True, False)),)
    profile_source = SOURCE
    can_dump = False
    target_families = ("rpi", "android", "x86")

    def __init__(self) -> None:
        super().__init__()
        self._ncnn: Any = None
        self.net: Any = None
        self._ins: list[tuple[str, str, tuple[int, ...]]] = []   # (manifest name, blob, shape without batch)
        self._outs: list[tuple[str, str, tuple[Any, ...]]] = []  # (manifest name, blob, manifest shape)
        self.settings: dict[str, Any] = {}
        self._profile = False

    def _load(self, artifact: Path, manifest: Manifest) -> None:
        ncnn = self._import_engine()
        self._ncnn = ncnn
        weights = artifact.with_name(artifact.name[:-len(".param")] + ".bin") if artifact.name.endswith(".param") \
            else artifact.with_suffix(".bin")
        if not weights.is_file():
            raise BundleError(f"ncnn: {weights.name} (the weights of {artifact.name}) is not in the bundle",
                              hint="rebuild or redeploy the bundle")
        fp16 = manifest.precision == "fp16"
        s = {"light_mode": True, "fp16_storage": fp16, "fp16_arithmetic": fp16, "bf16_storage": False}
        s.update({k: bool(v) for k, v in self.options.items() if k in s})
        net = ncnn.Net()
        opt = net.opt
        opt.num_threads = max(1, int(self.threads))
        opt.lightmode = s["light_mode"]
        opt.use_fp16_storage = opt.use_fp16_packed = s["fp16_storage"]
        opt.use_fp16_arithmetic = s["fp16_arithmetic"]
        opt.use_bf16_storage = opt.use_bf16_packed = s["bf16_storage"]
        opt.use_vulkan_compute = False
        if net.load_param(str(artifact)) != 0 or net.load_model(str(weights)) != 0:
            raise BundleError(f"ncnn {self.version} cannot load {artifact.name}",
                              hint="the model may need a newer ncnn (pip install --upgrade ncnn), or the bundle is "
                                   "damaged")
        in_blobs, out_blobs = list(net.input_names()), list(net.output_names())
        if len(in_blobs) != len(manifest.inputs) or len(out_blobs) != len(manifest.outputs):
            raise BundleError(f"ncnn: the model has {len(in_blobs)} input(s) and {len(out_blobs)} output(s), the "
                              f"manifest lists {len(manifest.inputs)} and {len(manifest.outputs)}",
                              hint="rebuild the bundle")
        for t in manifest.inputs:
            if t.shape and t.shape[0] != 1:
                raise BundleError(f"ncnn: input {t.name!r} has batch {t.shape[0]}; ncnn bundles have batch 1")
        self._ins = [(t.name, b, tuple(int(d) for d in t.shape[1:])) for t, b in zip(manifest.inputs, in_blobs)]  # noqa: B905 - lengths checked; py3.8
        self._outs = [(t.name, b, tuple(t.shape)) for t, b in zip(manifest.outputs, out_blobs)]  # noqa: B905 - lengths checked; py3.8
        self.net, self.settings = net, s

    def _extractor(self, feeds: Mapping[str, np.ndarray]) -> Any:
        import numpy as np

        ex = self.net.create_extractor()
        for name, blob, _ in self._ins:
            x = np.ascontiguousarray(feeds[name][0], dtype=np.float32)
            ex.input(blob, self._ncnn.Mat(x).clone())
        return ex

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np

        ex = self._extractor(feeds)
        out: dict[str, np.ndarray] = {}
        for name, blob, shape in self._outs:
            rc, mat = ex.extract(blob)
            if rc != 0:
                raise BundleError(f"ncnn: extracting output {blob!r} failed (code {rc})")
            arr = np.array(mat)
            want = tuple(d if isinstance(d, int) else -1 for d in shape)
            out[name] = arr.reshape(want) if arr.size == int(np.prod([d for d in want if d > 0])) else arr[None]
        return out

    def close(self) -> None:
        if self.net is not None:
            self.net.clear()
        self.net = None
        super().close()

    # -- profile ----------------------------------------------------------------------------------------------
    def profile_collect(self, run: ProfileRun) -> Any:
        from edgeify_runtime.profile.record import OpProfile, build_profile

        rows = [OpProfile(name=str(layer.name), type=str(layer.type), time_ms=None, placement=PLACEMENT)
                for layer in self.net.layers() if layer.type != "Input"]
        return build_profile(self.name, SOURCE, run.runs, rows, PLACEMENT, dict(run.overhead), NO_TIMES)
