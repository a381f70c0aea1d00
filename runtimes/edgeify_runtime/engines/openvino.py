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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import BundleError, EngineMissingError
from .base import EngineAdapter, names_to_positions

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    import numpy as np

    from ..manifest import Manifest


def _port_names(port: Any) -> list[str]:
    try:
        return sorted(str(n) for n in port.get_names())
    except Exception:  # a port with no tensor names: only its position identifies it
        return []


class OpenVINOAdapter(EngineAdapter):
    name = "openvino"
    option_keys = frozenset({"device", "config", "inference_precision", "performance_hint", "threads"})

    def __init__(self) -> None:
        super().__init__()
        self._compiled: Any = None
        self._request: Any = None
        self._in_ports: list[tuple[str, Any]] = []   # (manifest input name, compiled-model input port)
        self._out_ports: list[tuple[str, Any]] = []  # (manifest output name, compiled-model output port)
        self.device = "CPU"
        self.config: dict[str, str] = {}
        self.artifact_path: Path | None = None

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
        try:
            model = core.read_model(str(artifact))
            self._compiled = core.compile_model(model, self.device, config)
        except Exception as exc:
            raise BundleError(f"openvino {self.version} cannot load {artifact.name} on {self.device}: {exc}",
                              hint="the artifact may need a newer openvino (pip install --upgrade openvino), "
                                   "or the bundle is damaged") from exc
        self.config = config
        self.artifact_path = artifact
        self._request = self._compiled.create_infer_request()
        in_names = [t.name for t in manifest.inputs]
        out_names = [t.name for t in manifest.outputs]
        ins = list(self._compiled.inputs)
        outs = list(self._compiled.outputs)
        pos_in = names_to_positions(in_names, [_port_names(p) for p in ins], "input", self.name)
        pos_out = names_to_positions(out_names, [_port_names(p) for p in outs], "output", self.name)
        self._in_ports = [(name, ins[pos_in[k]]) for k, name in enumerate(in_names)]
        self._out_ports = [(name, outs[pos_out[k]]) for k, name in enumerate(out_names)]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {port: feeds[name] for name, port in self._in_ports}
        # share_inputs: no copy of the (already contiguous) feeds for this synchronous call;
        # share_outputs=False: the returned arrays are copies, safe to keep across runs.
        results = self._request.infer(inputs, share_inputs=True, share_outputs=False)
        return {name: results[port] for name, port in self._out_ports}

    # -- for edgeify_runtime.profile (load with config PERF_COUNT=YES) -----------------------------------------
    @property
    def compiled_model(self) -> Any:
        return self._compiled

    def profiling_info(self) -> Any:
        """The performance counters of the last ``run`` (needs PERF_COUNT=YES at compile time)."""
        return self._request.get_profiling_info()

    def close(self) -> None:
        self._request = None
        self._compiled = None
        super().close()
