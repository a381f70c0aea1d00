"""OpenVINO: performance counters (``PERF_COUNT``) of the compiled model.

``InferRequest.get_profiling_info()`` lists, for the last inference, every layer of the *runtime* graph (after
fusions): ``node_name``, ``node_type``, ``exec_type`` (the kernel, ending with the precision it ran in, e.g.
``brgconv_avx512_amx_I8``, ``jit_avx512_f32``), ``status`` (EXECUTED, or NOT_RUN / OPTIMIZED_OUT for layers
fused into others) and ``real_time`` (wall time). ``CompiledModel.get_runtime_model()`` maps each runtime layer
to the ``originalLayersNames`` of the bundle's IR it implements.

Placement: for an int8 bundle, the IR says which layers the quantizer meant to run in int8 (those that consume a
``FakeQuantize`` output); a runtime layer implementing one of them that executed in another precision (FP32,
BF16) is counted as a fallback.
"""

from __future__ import annotations

import re
from typing import Any

from .record import OpProfile

SOURCE = "openvino performance counters (PERF_COUNT, InferRequest.get_profiling_info)"
LOW_PRECISIONS = frozenset({"I8", "U8", "I4", "U4"})
_PRECISION = re.compile(r"(?:^|_)(i8|u8|i4|u4|i32|i64|f32|fp32|bf16|f16|fp16)$", re.IGNORECASE)


def exec_precision(exec_type: str) -> str | None:
    """``"brgconv_avx512_amx_I8"`` -> ``"I8"``, ``"jit_avx512_f32"`` -> ``"FP32"``; None when it does not say."""
    m = _PRECISION.search(exec_type or "")
    if not m:
        return None
    p = m.group(1).upper()
    return {"F32": "FP32", "F16": "FP16"}.get(p, p)


def options_with_counters(options: dict[str, Any]) -> dict[str, Any]:
    out = dict(options)
    out["config"] = {**dict(options.get("config") or {}), "PERF_COUNT": "YES"}
    return out


def quantized_layers(model: Any) -> set[str]:
    """Friendly names of the IR's layers that consume a FakeQuantize output (what the quantizer meant as int8)."""
    names: set[str] = set()
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind in ("FakeQuantize", "Result", "Convert"):
            continue
        for inp in op.inputs():
            if inp.get_source_output().get_node().get_type_name() == "FakeQuantize":
                names.add(op.get_friendly_name())
                break
    return names


def runtime_origins(compiled: Any) -> dict[str, list[str]]:
    """Runtime layer name -> the IR layer names it implements."""
    out: dict[str, list[str]] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        try:
            names = str(info["originalLayersNames"].astype(str))
        except Exception:
            names = ""
        out[op.get_friendly_name()] = [n for n in names.split(",") if n]
    return out


class Counters:
    """Accumulates ``get_profiling_info()`` after each profiled inference."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.fused = 0
        self.runs = 0

    def add(self, infos: Any) -> None:
        self.runs += 1
        fused = 0
        for p in infos:
            status = str(p.status).rsplit(".", 1)[-1]
            if status != "EXECUTED":
                fused += 1
                continue
            row = self.rows.get(p.node_name)
            if row is None:
                row = self.rows[p.node_name] = {"us": 0.0, "type": str(p.node_type), "exec": str(p.exec_type)}
                self.order.append(p.node_name)
            row["us"] += p.real_time.total_seconds() * 1e6
        self.fused = fused


def build_ops(counters: Counters, origins: dict[str, list[str]], quantized: set[str], device: str,
              precision: str) -> list[OpProfile]:
    int8 = precision.lower().startswith("int8") and bool(quantized)
    ops = []
    for name in counters.order:
        row = counters.rows[name]
        prec = exec_precision(row["exec"])
        meant = int8 and bool(set(origins.get(name) or [name]) & quantized)
        off = meant and prec is not None and prec not in LOW_PRECISIONS
        ops.append(OpProfile(
            name=name, type=row["type"], time_ms=round(row["us"] / max(counters.runs, 1) / 1000.0, 6),
            placement=f"{device} {row['exec']}", precision=prec, fallback=off,
            reason=f"int8 layer of the bundle executed in {prec}" if off else None))
    return ops


def collect(adapter: Any, counters: Counters, manifest: Any) -> tuple[list[OpProfile], dict[str, Any], str,
                                                                      str | None]:
    import openvino as ov  # the adapter already imported it

    model = ov.Core().read_model(str(adapter.artifact_path))
    quantized = quantized_layers(model) if manifest.precision.lower().startswith("int8") else set()
    origins = runtime_origins(adapter.compiled_model)
    ops = build_ops(counters, origins, quantized, adapter.device, manifest.precision)
    intended = f"{adapter.device} " + ("int8 (I8/U8) for the quantized layers" if quantized else manifest.precision)
    extra = {"fused_layers": counters.fused,
             "note": "profiled_run_ms - ops_sum_ms is the inference request outside the layers' kernels (input/"
                     "output copies, the Python binding); OpenVINO times fused layers (status OPTIMIZED_OUT / "
                     "NOT_RUN, counted in fused_layers) inside the layer they were fused into"}
    return ops, extra, intended, None
