"""ExecuTorch adapter: artifact ``model.pte`` (an ExecuTorch program, XNNPACK-delegated where it could be).

Loaded with ExecuTorch's Python runtime, ``executorch.extension.pybindings.portable_lib`` (the ``executorch``
wheel). That runtime links libtorch and takes torch tensors, so a device running it needs ``torch`` as well:
``pip install torch executorch`` (measured: executorch 1.5.1 with torch 2.13.0). An app that embeds the C++
runtime instead loads the same ``model.pte`` without Python or torch.

Threads: the runtime has one process-wide thread pool (XNNPACK and the portable kernels share it); ``load``
resizes it to ``threads`` (``_unsafe_reset_threadpool``), so two ExecuTorch models in one process share one
setting. The runtime prints cpuinfo lines to stderr on load (not errors).

Options (manifest ``engine.options`` or ``load(options=...)``):
  ``threads``  the thread pool size when the caller of ``load`` names none

Profile: the ETDump (``profile/executorch.py``): per XNNPACK operator and per portable-kernel call times.
Intermediate tensors: the ETDump's debug buffer, one output per instruction (a delegate call's outputs or a
portable op's output), keyed ``instr<N>``; they carry no source tensor names (the ETRecord that would map them
lives on the build host), so per-op parity against the source ONNX matches none of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from ..errors import BundleError, EngineMissingError
from ..profile import executorch as et_prof
from ..profile.record import build_profile
from .base import THREADS, EngineAdapter, Option, ProfileRun

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    import numpy as np

    from ..manifest import Manifest

RUNTIME = "executorch.extension.pybindings.portable_lib"
_DEBUG_BUFFER = 64 << 20


class ExecuTorchAdapter(EngineAdapter):
    name = "executorch"
    modules = ("executorch",)
    distributions = ("executorch",)
    pip = "executorch"
    install_hint = "pip install torch executorch (the ExecuTorch Python runtime links libtorch)"
    option_specs: ClassVar[Mapping[str, Option]] = {"threads": THREADS}
    profile_source = "executorch ETDump (enable_etdump): portable-kernel and XNNPACK delegate events"
    can_dump = True
    target_families = ("rpi", "android", "x86")

    def __init__(self) -> None:
        super().__init__()
        self._module: Any = None
        self._torch: Any = None
        self._out_names: list[str] = []
        self._in_names: list[str] = []
        #: set by ``profile_options``: load with ETDump on and write it here after the runs
        self.etdump_path: str | None = None
        self._warmups = 0

    def _runtime(self) -> Any:
        import importlib

        self._import_engine()
        try:
            self._torch = importlib.import_module("torch")
            return importlib.import_module(RUNTIME)
        except ImportError as exc:
            raise EngineMissingError(f"executorch {self.version}: its Python runtime cannot be imported ({exc})",
                                     hint=self.install_hint) from exc

    def _load(self, artifact: Path, manifest: Manifest) -> None:
        rt = self._runtime()
        if self.threads > 0 and rt._threadpool_get_thread_count() != self.threads:
            rt._unsafe_reset_threadpool(int(self.threads))
        try:
            if self.etdump_path:
                self._module = rt._load_for_executorch(str(artifact), enable_etdump=True)
            else:
                self._module = rt._load_for_executorch(str(artifact))
        except Exception as exc:
            raise BundleError(f"executorch {self.version} cannot load {artifact.name}: {exc}",
                              hint="the program may need a newer executorch runtime (pip install --upgrade "
                                   "executorch), or the bundle is damaged") from exc
        self._in_names = [t.name for t in manifest.inputs]
        self._out_names = [t.name for t in manifest.outputs]
        meta = self._module.method_meta("forward")
        if meta.num_inputs() != len(self._in_names) or meta.num_outputs() != len(self._out_names):
            raise BundleError(f"executorch: the program has {meta.num_inputs()} input(s) and {meta.num_outputs()} "
                              f"output(s), the manifest lists {len(self._in_names)} and {len(self._out_names)}",
                              hint="rebuild the bundle")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        args = tuple(torch.from_numpy(feeds[n]) for n in self._in_names)
        outs = self._module.forward(args)
        return {name: out.numpy().copy() for name, out in zip(self._out_names, outs)}

    def close(self) -> None:
        self._module = None
        super().close()

    # -- profile, intermediate tensors ------------------------------------------------------------------------
    def profile_options(self, options: Mapping[str, Any], workdir: str) -> dict[str, Any]:
        import os

        self.etdump_path = os.path.join(workdir, "model.etdp")
        self._warmups = 0
        return dict(options)

    def profile_mark(self, recorded: bool) -> None:
        if not recorded:
            self._warmups += 1

    def profile_collect(self, run: ProfileRun) -> Any:
        from pathlib import Path

        if not self.etdump_path or self._module is None or not self._module.has_etdump():
            raise BundleError("executorch: this runtime build recorded no ETDump",
                              hint="an executorch wheel built with the event tracer (the PyPI wheel is) is needed")
        self._module.write_etdump_result_to_file(self.etdump_path)
        ops, extra, intended, missing = et_prof.collect(Path(self.etdump_path), self._warmups)
        return build_profile(self.name, et_prof.SOURCE, run.runs, ops, intended, {**run.overhead, **extra}, missing)

    def dump_intermediates(self, artifact: Path, feeds: Mapping[str, np.ndarray], names: frozenset[str] = frozenset(),
                           precision: str = "fp32") -> dict[str, np.ndarray]:
        import tempfile
        from pathlib import Path as _Path

        import numpy as np

        rt = self._runtime()
        module = rt._load_for_executorch(str(artifact), enable_etdump=True, debug_buffer_size=_DEBUG_BUFFER)
        torch = self._torch
        module.forward(tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()))
        with tempfile.TemporaryDirectory(prefix="edgeify-etdump-") as d:
            etdp, dbg = _Path(d) / "model.etdp", _Path(d) / "debug.bin"
            module.write_etdump_result_to_file(str(etdp), str(dbg))
            return et_prof.intermediates(etdp, dbg)
