"""ONNX Runtime adapter: artifact ``model.onnx``.

Session settings: ``intra_op_num_threads = threads``, ``inter_op_num_threads = 1``, sequential execution, all
graph optimizations, ``CPUExecutionProvider`` unless the options name other providers.

Options (manifest ``engine.options`` or ``load(options=...)``):
  ``providers``                 list of execution provider names, in priority order
  ``provider_options``          list of dicts, one per provider
  ``graph_optimization_level``  ``"disable" | "basic" | "extended" | "all"`` (default ``"all"``)
  ``execution_mode``            ``"sequential" | "parallel"`` (default ``"sequential"``)
  ``threads``                   intra-op threads when the caller of ``load`` names none
  ``session_config``            dict of ``SessionOptions.add_session_config_entry`` keys and values
  ``provider_fallback``         true: ``providers`` is a fallback order (e.g. TensorRT, CUDA, CPU): providers this
                                onnxruntime lacks or cannot start are skipped (``skipped_providers`` says which)
                                instead of being an EngineMissingError
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from ..errors import BundleError, EngineMissingError
from ..profile import ort
from ..profile.record import build_profile
from .base import (
    THREADS,
    EngineAdapter,
    Option,
    ProfileRun,
    TuningAxis,
    is_bool,
    names_to_positions,
    one_of,
    scalar_table,
)
from .ort_dump import dump

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    import numpy as np

    from ..manifest import Manifest

_PROVIDER = re.compile(r"^[A-Za-z][A-Za-z0-9]*ExecutionProvider$")
_SESSION_CONFIG = {"session.x64quantprecision": ("0", "1"), "session.intra_op.allow_spinning": ("0", "1"),
                   "session.inter_op.allow_spinning": ("0", "1")}


def _providers(v: Any) -> bool:
    return isinstance(v, list) and 0 < len(v) <= 8 and all(isinstance(p, str) and _PROVIDER.match(p) for p in v)


_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
               "all": "ORT_ENABLE_ALL"}


class OnnxRuntimeAdapter(EngineAdapter):
    name = "onnxruntime"
    modules = ("onnxruntime",)
    distributions = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml",
                     "onnxruntime-qnn", "onnxruntime-silicon")
    pip = "onnxruntime"
    option_specs: ClassVar[Mapping[str, Option]] = {
        "threads": THREADS,
        "graph_optimization_level": Option(one_of(*_OPT_LEVELS), "graph optimizations (default all)"),
        "execution_mode": Option(one_of("sequential", "parallel"), "executor (default sequential)"),
        "providers": Option(_providers, "execution providers, in priority order"),
        "provider_fallback": Option(is_bool, "providers is a fallback order: skip the ones that do not start"),
        "session_config": Option(scalar_table(_SESSION_CONFIG), "SessionOptions.add_session_config_entry"),
        "provider_options": Option(None, "one dict per provider (may name libraries: load(options=...) only)"),
    }
    tuning_axes = (TuningAxis("graph_optimization_level", ("all", "extended")),
                   TuningAxis("execution_mode", ("sequential", "parallel")))
    cpu_placement: ClassVar[Mapping[str, Any]] = {"providers": ["CPUExecutionProvider"], "provider_options": None}
    profile_source = "onnxruntime session profiling (SessionOptions.enable_profiling)"
    can_dump = True

    def __init__(self) -> None:
        super().__init__()
        self._session: Any = None
        self._feed_names: list[tuple[str, str]] = []  # (manifest input name, session input name)
        self._output_names: list[str] = []  # session output name per manifest output, in manifest order
        self._manifest_outputs: list[str] = []
        self.providers: list[str] = []
        self.skipped_providers: list[str] = []
        #: set before ``load`` to profile the session (``edgeify_runtime.profile``): the trace file's prefix
        self.profile_prefix: str | None = None

    def _load(self, artifact: Path, manifest: Manifest) -> None:
        ort = self._import_engine()
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        mode = str(self.options.get("execution_mode", "sequential"))
        if mode not in ("sequential", "parallel"):
            raise BundleError(f"onnxruntime: execution_mode {mode!r} is not 'sequential' or 'parallel'")
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL if mode == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
        level = str(self.options.get("graph_optimization_level", "all"))
        if level not in _OPT_LEVELS:
            raise BundleError(f"onnxruntime: graph_optimization_level {level!r} is not one of "
                              f"{sorted(_OPT_LEVELS)}")
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[level])
        if self.profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = self.profile_prefix
        for key, value in dict(self.options.get("session_config") or {}).items():
            so.add_session_config_entry(str(key), str(value))
        providers = list(self.options.get("providers") or ["CPUExecutionProvider"])
        available = ort.get_available_providers()
        missing = [p for p in providers if p not in available]
        fallback = bool(self.options.get("provider_fallback"))
        if missing and fallback and len(missing) < len(providers):  # an explicit fallback order: skip, say so
            keep = [i for i, p in enumerate(providers) if p not in missing]
            if self.options.get("provider_options") is not None:
                self.options["provider_options"] = [list(self.options["provider_options"])[i] for i in keep]
            providers, self.skipped_providers, missing = [providers[i] for i in keep], missing, []
        if missing:
            raise EngineMissingError(
                f"onnxruntime {self.version} on this device lacks the execution provider(s) {missing}; "
                f"it has {available}",
                hint="install the onnxruntime build that ships them (e.g. pip install onnxruntime-gpu), or "
                     "pass options={'providers': ['CPUExecutionProvider']}")
        kwargs: dict[str, Any] = {"sess_options": so, "providers": providers}
        if self.options.get("provider_options") is not None:
            kwargs["provider_options"] = list(self.options["provider_options"])
        try:
            self._session = ort.InferenceSession(str(artifact), **kwargs)
        except Exception as exc:
            raise BundleError(f"onnxruntime {self.version} cannot load {artifact.name}: {exc}",
                              hint="the artifact may need a newer onnxruntime (pip install --upgrade "
                                   "onnxruntime), or the bundle is damaged") from exc
        self.providers = list(self._session.get_providers())
        if fallback:
            self.skipped_providers += [p for p in providers if p not in self.providers]
        manifest_inputs = [t.name for t in manifest.inputs]
        self._manifest_outputs = [t.name for t in manifest.outputs]
        sess_in = [i.name for i in self._session.get_inputs()]
        sess_out = [o.name for o in self._session.get_outputs()]
        pos_in = names_to_positions(manifest_inputs, [[n] for n in sess_in], "input", self.name)
        pos_out = names_to_positions(self._manifest_outputs, [[n] for n in sess_out], "output", self.name)
        self._feed_names = [(name, sess_in[pos_in[k]]) for k, name in enumerate(manifest_inputs)]
        self._output_names = [sess_out[i] for i in pos_out]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self._session.run(self._output_names, {eng: feeds[man] for man, eng in self._feed_names})
        return {name: results[k] for k, name in enumerate(self._manifest_outputs)}

    # -- placement ------------------------------------------------------------------------------------------
    def placement(self) -> str:
        return str(self.providers[0]) if self.providers else "CPU"

    def unhonoured(self, options: Mapping[str, Any]) -> str | None:
        """A provider the options name (not as a fallback order) that the session dropped silently."""
        if options.get("providers") and not options.get("provider_fallback"):
            lost = [str(p) for p in options["providers"] if p not in self.providers]
            if lost:
                return (f"onnxruntime could not start the execution provider(s) {lost}; the session runs on "
                        f"{self.providers}")
        return None

    def skipped_placements(self) -> list[str]:
        return list(self.skipped_providers)

    # -- profile, intermediate tensors ------------------------------------------------------------------------
    def profile_options(self, options: Mapping[str, Any], workdir: str) -> dict[str, Any]:
        ort.prepare(self, workdir)
        return dict(options)

    def profile_collect(self, run: ProfileRun) -> Any:
        ops, extra, intended, missing = ort.collect(self, run.runs, dict(run.options))
        return build_profile(self.name, ort.SOURCE, run.runs, ops, intended, {**run.overhead, **extra}, missing)

    def dump_intermediates(self, artifact: Path, feeds: Mapping[str, np.ndarray], names: frozenset[str] = frozenset(),
                           precision: str = "fp32") -> dict[str, np.ndarray]:
        return dump(self._import_engine(), artifact, feeds)

    def end_profiling(self) -> str:
        """Stop the profiler started by ``profile_prefix``; returns the path of its JSON trace."""
        return str(self._session.end_profiling())

    def close(self) -> None:
        self._session = None
        super().close()
