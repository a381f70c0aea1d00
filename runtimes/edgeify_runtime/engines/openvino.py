"""OpenVINO adapter: artifact ``model.xml`` (its ``model.bin`` lies beside it).

Compiles for ``"CPU"`` with ``INFERENCE_NUM_THREADS = threads``, ``PERFORMANCE_HINT = LATENCY`` and one
stream. For an ``fp32`` bundle it also pins ``INFERENCE_PRECISION_HINT = f32``: OpenVINO otherwise runs fp32
models in bf16 (CPUs with AMX/AVX512-BF16) or fp16 (ARM), which the host's parity check did not validate.
A ``bf16`` bundle (the fp32 IR, precision ``bf16``) sets ``INFERENCE_PRECISION_HINT = bf16``.

Options (manifest ``engine.options`` or ``load(options=...)``):
  ``device``  OpenVINO device name (default ``"CPU"``)
  ``inference_precision``  ``INFERENCE_PRECISION_HINT`` (``f32``, ``bf16``, ``f16``)
  ``performance_hint``     ``PERFORMANCE_HINT`` (``LATENCY``, ``THROUGHPUT``, ``CUMULATIVE_THROUGHPUT``)
  ``threads``  ``INFERENCE_NUM_THREADS`` when the caller of ``load`` names none
  ``config``  dict of extra compile properties; they override the defaults above
  ``static_shapes``  how many input shapes get their own static compile (default 2; 0: one dynamic compile)

Static shapes: with a synchronous ``infer()`` an IR with a dynamic batch (``[?,3,224,224]``) ran 8-13% slower on the
CPU plugin than the same IR reshaped to a static batch (benchmarks/engine_overhead.py, MobileNetV2); with
``start_async`` + ``wait`` (below) the two measured within load noise (0.91x-1.04x). The model is compiled at
load for batch 1 (when the batch axis 0 is its only dynamic dimension), and the first ``static_shapes`` distinct input
shapes fed to ``run`` each get a static compile of their own (made on first use, kept); any further shape runs on
one dynamic compile (made on first use). A loaded model accepts every shape it accepted before; each static
compile costs one compile's time on first use and its own copy of the compiled weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from ..errors import BundleError, EngineMissingError
from ..profile import openvino as ov_prof
from ..profile.record import build_profile
from .base import (
    THREADS,
    EngineAdapter,
    Option,
    ProfileRun,
    TuningAxis,
    int_range,
    matches,
    names_to_positions,
    one_of,
    scalar_table,
)

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    import numpy as np

    from ..manifest import Manifest


#: compile properties a bundle's ``config`` may set (None: any non-negative integer)
_CONFIG = {"INFERENCE_PRECISION_HINT": ("f32", "bf16", "f16"),
           "PERFORMANCE_HINT": ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"),
           "EXECUTION_MODE_HINT": ("PERFORMANCE", "ACCURACY"), "NUM_STREAMS": None, "INFERENCE_NUM_THREADS": None,
           "ENABLE_CPU_PINNING": ("YES", "NO", "True", "False"),
           "ENABLE_HYPER_THREADING": ("YES", "NO", "True", "False")}


#: distinct input shapes that get a static compile of their own (the ``static_shapes`` option's default)
STATIC_SHAPES = 2


def _port_names(port: Any) -> list[str]:
    try:
        return sorted(str(n) for n in port.get_names())
    except Exception:  # a port with no tensor names: only its position identifies it
        return []


class OpenVINOAdapter(EngineAdapter):
    name = "openvino"
    modules = ("openvino",)
    distributions = ("openvino",)
    pip = "openvino"
    option_specs: ClassVar[Mapping[str, Option]] = {
        "threads": THREADS,
        "device": Option(matches(r"^[A-Z][A-Z0-9_.:,]*$"), "OpenVINO device name (default CPU)"),
        "inference_precision": Option(one_of(*_CONFIG["INFERENCE_PRECISION_HINT"] or ()), "INFERENCE_PRECISION_HINT"),
        "performance_hint": Option(one_of(*_CONFIG["PERFORMANCE_HINT"] or ()), "PERFORMANCE_HINT"),
        "config": Option(scalar_table(_CONFIG), "extra compile properties (override the defaults)"),
        "static_shapes": Option(int_range(0, 64), "input shapes compiled static, each on first use (0: dynamic)"),
    }
    tuning_axes = (TuningAxis("performance_hint", ("LATENCY", "THROUGHPUT"), via=("config", "PERFORMANCE_HINT")),)
    cpu_placement: ClassVar[Mapping[str, Any]] = {"device": "CPU"}
    profile_source = "openvino performance counters (PERF_COUNT, InferRequest.get_profiling_info)"
    can_dump = True

    def __init__(self) -> None:
        super().__init__()
        self._compiled: Any = None
        self._request: Any = None
        self._in_ports: list[tuple[str, Any]] = []   # (manifest input name, compiled-model input port)
        self._out_ports: list[tuple[str, Any]] = []  # (manifest output name, compiled-model output port)
        self.device = "CPU"
        self.config: dict[str, str] = {}
        self.artifact_path: Path | None = None
        self._counters: Any = None
        self._core: Any = None
        self._model: Any = None  # the IR as read (dynamic dims kept): reshaped copies are compiled per shape
        self._pos_in: list[int] = []
        self._pos_out: list[int] = []
        self._in_names: list[str] = []
        self._out_names: list[str] = []
        #: input shapes (in manifest input order) -> (request, input ports, output ports) of their static compile
        self._shaped: dict[tuple[tuple[int, ...], ...], tuple[Any, list, list]] = {}
        self._dynamic: tuple[Any, list, list] | None = None
        self._static_left = 0
        self._static_ir = False

    def _load(self, artifact: Path, manifest: Manifest) -> None:
        ov = self._import_engine()
        if artifact.suffix == ".xml" and not artifact.with_suffix(".bin").is_file():
            weights = artifact.with_suffix(".bin").name
            raise BundleError(f"openvino: {weights} (the weights of {artifact.name}) is not in the bundle",
                              hint="rebuild or redeploy the bundle")
        self.device = str(self.options.get("device", "CPU"))
        config: dict[str, str] = {"INFERENCE_NUM_THREADS": str(self.threads), "PERFORMANCE_HINT": "LATENCY",
                                  "NUM_STREAMS": "1"}
        if manifest.precision.lower() in ("fp32", "float32", "f32"):
            config["INFERENCE_PRECISION_HINT"] = "f32"
        elif manifest.precision.lower() == "bf16":  # the fp32 IR computed in bfloat16 (AVX-512 BF16 / AMX CPUs)
            config["INFERENCE_PRECISION_HINT"] = "bf16"
        for key, prop in (("inference_precision", "INFERENCE_PRECISION_HINT"),
                          ("performance_hint", "PERFORMANCE_HINT")):
            if self.options.get(key) is not None:
                config[prop] = str(self.options[key])
        config.update({str(k): str(v) for k, v in dict(self.options.get("config") or {}).items()})
        core = ov.Core()
        if self.device.split(":")[0].split(".")[0] not in {d.split(".")[0] for d in core.available_devices} \
                and not self.device.startswith(("AUTO", "MULTI", "HETERO")):
            raise EngineMissingError(f"openvino {self.version} sees no device {self.device!r} here; it has "
                                     f"{core.available_devices}",
                                     hint="install the device's OpenVINO plugin/driver, or use device 'CPU'")
        self.config = config
        self.artifact_path = artifact
        self._core = core
        self._in_names = [t.name for t in manifest.inputs]
        self._out_names = [t.name for t in manifest.outputs]
        try:
            model = core.read_model(str(artifact))
            self._pos_in = names_to_positions(self._in_names, [_port_names(p) for p in model.inputs], "input",
                                              self.name)
            self._pos_out = names_to_positions(self._out_names, [_port_names(p) for p in model.outputs], "output",
                                               self.name)
            self._model = model
            self._static_ir = all(p.get_partial_shape().is_static for p in model.inputs)
            self._static_left = 0 if self._static_ir else int(self.options.get("static_shapes", STATIC_SHAPES))
            first = self._batch1_shapes()
            entry = self._static_entry(first) if first is not None else None
            if entry is None:
                entry = self._dynamic_entry()
        except BundleError:
            raise
        except Exception as exc:
            raise BundleError(f"openvino {self.version} cannot load {artifact.name} on {self.device}: {exc}",
                              hint="the artifact may need a newer openvino (pip install --upgrade openvino), "
                                   "or the bundle is damaged") from exc
        self._use(entry)

    # -- compiles: static per input shape (the first few), one dynamic for the rest -----------------------------
    def _entry(self, compiled: Any) -> tuple[Any, list, list]:
        ins, outs = list(compiled.inputs), list(compiled.outputs)
        return (compiled.create_infer_request(),
                [(name, ins[self._pos_in[k]]) for k, name in enumerate(self._in_names)],
                [(name, outs[self._pos_out[k]]) for k, name in enumerate(self._out_names)])

    def _use(self, entry: tuple[Any, list, list]) -> None:
        self._request, self._in_ports, self._out_ports = entry
        self._compiled = self._request.get_compiled_model()

    def _batch1_shapes(self) -> tuple[tuple[int, ...], ...] | None:
        """The IR's input shapes at batch 1 when axis 0 is the only dynamic dimension of every input, else None."""
        if self._static_ir or self._static_left <= 0:
            return None
        shapes = []
        for k in range(len(self._in_names)):
            ps = self._model.inputs[self._pos_in[k]].get_partial_shape()
            if ps.is_static:  # e.g. a scalar or fixed-size second input beside a batched one
                shapes.append(tuple(int(d) for d in ps.to_shape()))
                continue
            if ps.rank.is_dynamic or any(ps[i].is_dynamic for i in range(1, ps.rank.get_length())):
                return None
            shapes.append((1, *(ps[i].get_length() for i in range(1, ps.rank.get_length()))))
        return tuple(shapes)

    def _static_entry(self, shapes: tuple[tuple[int, ...], ...]) -> tuple[Any, list, list] | None:
        """Compile the IR reshaped to ``shapes`` (manifest input order); None when it cannot be reshaped."""
        ov = self._import_engine()
        wanted = [ov.PartialShape(list(s)) for s in shapes]
        if not all(self._model.inputs[self._pos_in[k]].get_partial_shape().compatible(w)
                   for k, w in enumerate(wanted)):
            return None  # a shape the IR does not accept: the dynamic compile says so, as it always did
        model = self._model.clone()
        try:
            model.reshape({model.inputs[self._pos_in[k]]: w for k, w in enumerate(wanted)})
            entry = self._entry(self._core.compile_model(model, self.device, self.config))
        except Exception:  # e.g. a shape the graph's ops reject: that shape runs on the dynamic compile
            self._static_left = 0
            return None
        self._shaped[shapes] = entry
        self._static_left -= 1
        return entry

    def _dynamic_entry(self) -> tuple[Any, list, list]:
        if self._dynamic is None:
            self._dynamic = self._entry(self._core.compile_model(self._model, self.device, self.config))
        return self._dynamic

    def _entry_for(self, feeds: dict[str, np.ndarray]) -> tuple[Any, list, list]:
        if self._static_ir:
            return self._request, self._in_ports, self._out_ports
        shapes = tuple(tuple(feeds[name].shape) for name in self._in_names)
        entry = self._shaped.get(shapes)
        if entry is None:
            entry = (self._static_entry(shapes) if self._static_left > 0 else None) or self._dynamic_entry()
        return entry

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request, in_ports, out_ports = self._entry_for(feeds)
        if request is not self._request:
            self._use((request, in_ports, out_ports))  # profiling reads the request that ran last
        inputs = {port: feeds[name] for name, port in in_ports}
        # start_async + wait, as benchmark_app runs it: the compiled stream's own threads do the work. A synchronous
        # infer() ran on the calling thread and measured 1.2x slower on a quiet 2-core machine and 3.4x under load
        # (same compiled model, alternating blocks; issue 28 item 6). share_inputs: the feeds are not copied (we
        # wait before returning); the outputs are copied, safe to keep across runs.
        request.start_async(inputs, share_inputs=True)
        request.wait()
        return {name: request.get_tensor(port).data.copy() for name, port in out_ports}

    # -- for edgeify_runtime.profile (load with config PERF_COUNT=YES) -----------------------------------------
    @property
    def compiled_model(self) -> Any:
        return self._compiled

    def profiling_info(self) -> Any:
        """The performance counters of the last ``run`` (needs PERF_COUNT=YES at compile time)."""
        return self._request.get_profiling_info()

    # -- profile, intermediate tensors ------------------------------------------------------------------------
    def profile_options(self, options: Mapping[str, Any], workdir: str) -> dict[str, Any]:
        self._counters = ov_prof.Counters()
        return ov_prof.options_with_counters(dict(options))

    def profile_mark(self, recorded: bool) -> None:
        info = self.profiling_info()  # counters are per inference: a warm-up's are dropped
        if recorded:
            self._counters.add(info)

    def profile_collect(self, run: ProfileRun) -> Any:
        ops, extra, intended, missing = ov_prof.collect(self, self._counters, run.manifest)
        return build_profile(self.name, ov_prof.SOURCE, run.runs, ops, intended, {**run.overhead, **extra}, missing)

    def dump_intermediates(self, artifact: Path, feeds: Mapping[str, np.ndarray], names: frozenset[str] = frozenset(),
                           precision: str = "fp32") -> dict[str, np.ndarray]:
        """The IR's ports that carry one of ``names`` (the source's tensor names) become outputs."""
        import numpy as np

        ov = self._import_engine()
        core = ov.Core()
        model = core.read_model(str(artifact))
        ports = [out for op in model.get_ordered_ops() if op.get_type_name() not in ("Constant", "Result", "Parameter")
                 for out in op.outputs() if out.get_names() & set(names)]
        if ports:
            model.add_outputs(ports)
        config = {"INFERENCE_PRECISION_HINT": "f32"} if precision in ("fp32", "fp16") else {}
        compiled = core.compile_model(model, "CPU", config)
        res = compiled.create_infer_request().infer({p.get_any_name(): feeds[p.get_any_name()]
                                                     for p in compiled.inputs if p.get_any_name() in feeds})
        out: dict[str, np.ndarray] = {}
        for port, value in res.items():
            for n in port.get_names():
                out.setdefault(n, np.asarray(value))
        return out

    def unsupported_ops(self, artifact: Path) -> list[str] | None:
        """``Core.query_model`` on the CPU: the IR's ops the CPU plugin does not support."""
        ov = self._import_engine()
        core = ov.Core()
        model = core.read_model(str(artifact))
        supported = core.query_model(model, "CPU")
        return sorted(op.get_friendly_name() for op in model.get_ops() if op.get_friendly_name() not in supported)

    def close(self) -> None:
        self._request = None
        self._compiled = None
        self._shaped.clear()
        self._dynamic = None
        self._model = None
        self._core = None
        super().close()
