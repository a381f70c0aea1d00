"""trtexec, TensorRT's command-line builder and benchmark: the command lines edgeify runs and the parser of its log.

Command lines (``build_command``, ``bench_command``):

* the engine is saved with ``--saveEngine`` and the build reuses a timing cache (``--timingCacheFile``);
* a dynamic batch becomes an optimization profile: ``--minShapes/--optShapes/--maxShapes=name:1x3x224x224,...``;
* DLA: ``--useDLACore=N --allowGPUFallback`` (layers the DLA cannot run go to the GPU);
* precision: TensorRT 8 and 10 build "weakly typed" networks and need ``--fp16`` / ``--int8`` to use those
  precisions (``--int8`` with ``--fp16`` for an explicit-quantization QDQ graph, so layers left in float run in
  fp16). TensorRT 11 removed these flags and the INT8 calibrators: the network is strongly typed, the precision
  is the graph's (fp16 weights for fp16, Q/DQ nodes for int8), so no precision flag is passed. edgeify's ONNX
  carries its precision in the graph, so the same file fits both.

The parser (``parse_output``) reads what trtexec prints: the ``&&&& RUNNING/PASSED/FAILED TensorRT.trtexec
[TensorRT vXXXX]`` lines, the device block, build time, engine size, timing cache, and the performance summary
(Throughput; Latency, Enqueue Time, H2D Latency, GPU Compute Time, D2H Latency with min/max/mean/median and
whatever percentiles the run asked for; Total Host Walltime, Total GPU Compute Time). It is checked against
verbatim recordings of real runs in ``tests/data/trtexec`` (each with its source); the TensorRT 11 output and the
DLA build have no real recording there, so those paths are unverified.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

#: metric label in the summary -> key in the parsed result
SUMMARY_METRICS = (
    ("Latency", "latency_ms"),
    ("Enqueue Time", "enqueue_ms"),
    ("H2D Latency", "h2d_ms"),
    ("GPU Compute Time", "gpu_compute_ms"),
    ("D2H Latency", "d2h_ms"),
)
_PREFIX = r"^(?:\[[^\]]*\]\s*)*"  # "[07/02/2026-03:47:08] [I] " (any number of bracketed tags)
_METRIC_RE = re.compile(_PREFIX + r"(Latency|Enqueue Time|H2D Latency|GPU Compute Time|D2H Latency):\s*(min\s*=.*)$")
_STAT_RE = re.compile(r"(min|max|mean|median|percentile\(\s*([\d.]+)\s*%\))\s*=\s*([-+\d.eE]+)\s*(ms|s|us)?")
_THROUGHPUT_RE = re.compile(_PREFIX + r"Throughput:\s*([-+\d.eE]+)\s*qps")
_TOTAL_RE = re.compile(_PREFIX + r"Total (Host Walltime|GPU Compute Time):\s*([-+\d.eE]+)\s*s\b")
_STATUS_RE = re.compile(r"^&&&& (RUNNING|PASSED|FAILED) TensorRT\.trtexec \[TensorRT v(\d+)\](?: \[b\d+\])? # (.*)$")
_TAG_RE = re.compile(r"\[TensorRT v(\d+)\]")
_LEVEL_RE = re.compile(r"^\[[^\]]*\]\s*\[(W|E)\]\s*(.*)$")


def parse_version_tag(text: str) -> str | None:
    """``[TensorRT v8502]`` -> ``8.5.2``, ``[TensorRT v100300]`` -> ``10.3.0``, ``[TensorRT v101600]`` ->
    ``10.16.0``: MAJOR*1000+MINOR*100+PATCH before TensorRT 10, MAJOR*10000+MINOR*100+PATCH from 10 on."""
    m = _TAG_RE.search(text or "")
    if not m:
        return None
    n = int(m.group(1))
    if n >= 100000:
        major, minor, patch = n // 10000, (n // 100) % 100, n % 100
    else:
        major, minor, patch = n // 1000, (n // 100) % 10, n % 100
    return f"{major}.{minor}.{patch}"


def major_version(version: str | None) -> int | None:
    m = re.match(r"(\d+)", version or "")
    return int(m.group(1)) if m else None


def precision_flags(trt_version: str | None, precision: str) -> list[str]:
    """Builder precision flags for this TensorRT: ``[]`` on TensorRT >= 11 (strongly typed, flags removed)."""
    major = major_version(trt_version)
    if major is not None and major >= 11:
        return []
    if precision == "fp16":
        return ["--fp16"]
    if precision in ("int8", "int8-qdq", "int8-mixed"):  # explicit Q/DQ (int8-mixed: some layers float)
        return ["--int8", "--fp16"]
    return []


def shapes_arg(shapes: dict[str, Sequence[int]]) -> str:
    return ",".join(f"{name}:{'x'.join(str(int(d)) for d in dims)}" for name, dims in shapes.items())


def build_command(trtexec: str, onnx: str, plan: str, *, trt_version: str | None, precision: str,
                  timing_cache: str | None = None, profile: dict[str, dict[str, Sequence[int]]] | None = None,
                  dla_core: int | None = None, gpu_fallback: bool = True, workspace_mib: int | None = None,
                  builder_optimization_level: int | None = None, extra: Sequence[str] = ()) -> list[str]:
    """The trtexec command that builds ``plan`` from ``onnx`` (no shell: a list of arguments).

    ``profile``: ``{"min": {input: dims}, "opt": {...}, "max": {...}}`` for inputs with dynamic dimensions.
    """
    cmd = [trtexec, f"--onnx={onnx}", f"--saveEngine={plan}"]
    if timing_cache:
        cmd.append(f"--timingCacheFile={timing_cache}")
    if profile:
        for key, flag in (("min", "--minShapes"), ("opt", "--optShapes"), ("max", "--maxShapes")):
            cmd.append(f"{flag}={shapes_arg(profile[key])}")
    cmd += precision_flags(trt_version, precision)
    if dla_core is not None:
        cmd.append(f"--useDLACore={int(dla_core)}")
        if gpu_fallback:
            cmd.append("--allowGPUFallback")
    if workspace_mib:
        cmd.append(f"--memPoolSize=workspace:{int(workspace_mib)}M")
    if builder_optimization_level is not None:
        cmd.append(f"--builderOptimizationLevel={int(builder_optimization_level)}")
    cmd += ["--skipInference"]
    cmd += list(extra)
    return cmd


def bench_command(trtexec: str, plan: str, *, shapes: dict[str, Sequence[int]] | None = None,
                  warmup_ms: int = 200, iterations: int = 10, duration_s: float = 3.0,
                  dla_core: int | None = None, extra: Sequence[str] = ()) -> list[str]:
    """trtexec timing an existing plan: at least ``iterations`` inferences and ``duration_s`` seconds."""
    cmd = [trtexec, f"--loadEngine={plan}"]
    if shapes:
        cmd.append(f"--shapes={shapes_arg(shapes)}")
    cmd += [f"--warmUp={int(warmup_ms)}", f"--iterations={int(iterations)}", f"--duration={max(0, round(duration_s))}"]
    if dla_core is not None:
        cmd.append(f"--useDLACore={int(dla_core)}")
    cmd += list(extra)
    return cmd


def _stats(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in _STAT_RE.finditer(text):
        name, pct, value, unit = m.group(1), m.group(2), float(m.group(3)), m.group(4) or "ms"
        value = value * 1000.0 if unit == "s" else (value / 1000.0 if unit == "us" else value)
        key = name if pct is None else f"p{pct.rstrip('0').rstrip('.') if '.' in pct else pct}"
        out[key] = value
    return out


def _after(line: str, label: str) -> str:
    return line.split(label, 1)[1].strip()


def parse_output(text: str) -> dict[str, Any]:
    """Everything edgeify uses from a trtexec log (stdout and stderr together). Missing parts are None.

    ``summary`` is None when the run printed no performance summary; ``summary_missing`` then says why when the
    log tells (``--skipInference``, a profiled run without ``--separateProfileRun``, a failure).
    """
    result: dict[str, Any] = {
        "status": None, "command": None, "tensorrt_version": None, "device": {}, "precision": None,
        "build_s": None, "engine_size_mib": None, "timing_cache": {}, "summary": None, "summary_missing": None,
        "warnings": [], "errors": [],
    }
    summary: dict[str, Any] = {}
    in_summary = False
    for raw in (text or "").splitlines():
        line = raw.rstrip()
        m = _STATUS_RE.match(line)
        if m:
            result["status"] = m.group(1).lower()
            result["tensorrt_version"] = result["tensorrt_version"] or parse_version_tag(line)
            result["command"] = m.group(3)
            continue
        lvl = _LEVEL_RE.match(line)
        if lvl and lvl.group(2).strip():
            text = re.sub(r"^\[TRT\]\s*", "", lvl.group(2).strip())
            result["warnings" if lvl.group(1) == "W" else "errors"].append(text)
        body = re.sub(_PREFIX, "", line)
        if body.startswith("=== "):
            in_summary = body.startswith("=== Performance summary ===")
            continue
        if body.startswith("TensorRT version:"):
            result["tensorrt_version"] = _after(body, "TensorRT version:")
        elif body.startswith("Selected Device:"):
            result["device"]["name"] = _after(body, "Selected Device:")
        elif body.startswith("Compute Capability:"):
            result["device"]["compute_capability"] = _after(body, "Compute Capability:")
        elif body.startswith("SMs:"):
            result["device"]["sms"] = int(_after(body, "SMs:") or 0)
        elif body.startswith("Device Global Memory:"):
            result["device"]["memory"] = _after(body, "Device Global Memory:")
        elif body.startswith("DLACore:") and _after(body, "DLACore:"):
            result["device"]["dla_core"] = _after(body, "DLACore:")
        elif body.startswith("Precision:"):
            result["precision"] = _after(body, "Precision:")
        elif body.startswith("timingCacheFile:") and _after(body, "timingCacheFile:"):
            result["timing_cache"]["file"] = _after(body, "timingCacheFile:")
        elif body.startswith("Engine built in"):
            m2 = re.search(r"Engine built in\s*([\d.]+)\s*sec", body)
            result["build_s"] = float(m2.group(1)) if m2 else None
        elif body.startswith("Created engine with size:"):
            m2 = re.search(r"size:\s*([\d.]+)\s*MiB", body)
            result["engine_size_mib"] = float(m2.group(1)) if m2 else None
        elif "Saved" in body and "bytes of timing cache to" in body:
            m2 = re.search(r"Saved (\d+) bytes of timing cache to (.+)$", body)
            if m2:
                result["timing_cache"].update({"saved_bytes": int(m2.group(1)), "file": m2.group(2).strip()})
        elif body.startswith("Could not read cache from:"):
            result["timing_cache"]["loaded"] = False
        elif "Skipped inference phase since --skipInference" in body:
            result["summary_missing"] = "the build ran with --skipInference"
        elif body.startswith("The e2e network timing is not reported"):
            result["summary_missing"] = ("no end-to-end timing: the run profiled layers (--dumpProfile) without "
                                         "--separateProfileRun")
        if not in_summary:
            continue
        m = _THROUGHPUT_RE.match(line)
        if m:
            summary["throughput_qps"] = float(m.group(1))
            continue
        m = _METRIC_RE.match(line)
        if m:
            key = dict(SUMMARY_METRICS)[m.group(1)]
            summary[key] = _stats(m.group(2))
            continue
        m = _TOTAL_RE.match(line)
        if m:
            summary["total_host_walltime_s" if m.group(1) == "Host Walltime" else "total_gpu_compute_s"] = \
                float(m.group(2))
    if summary:
        result["summary"] = summary
        result["summary_missing"] = None
    elif result["summary_missing"] is None:
        result["summary_missing"] = ("trtexec failed" if result["status"] == "failed"
                                     else "the log has no performance summary")
    return result


def profile_command(trtexec: str, plan: str, profile_json: str, layer_info_json: str, *,
                    shapes: dict[str, Sequence[int]] | None = None, iterations: int = 20,
                    dla_core: int | None = None) -> list[str]:
    """trtexec timing every layer of ``plan`` in a run separate from its end-to-end timing
    (``--separateProfileRun``), writing the per-layer profile and the layer info as JSON."""
    cmd = bench_command(trtexec, plan, shapes=shapes, iterations=iterations, duration_s=0, dla_core=dla_core)
    return [*cmd, "--dumpProfile", "--separateProfileRun", f"--exportProfile={profile_json}",
            f"--exportLayerInfo={layer_info_json}", "--profilingVerbosity=detailed"]


def parse_profile(profile: Any, layer_info: Any = None) -> dict[str, Any]:
    """trtexec's ``--exportProfile`` JSON (``[{"count": N}, {"name", "timeMs", "averageMs", "medianMs",
    "percentage"}, ...]``) and, when given, its ``--exportLayerInfo`` JSON.

    Returns ``{"iterations": N, "layers": [{"name", "average_ms", "median_ms", "percentage", "type",
    "precision"}]}``; ``type`` and ``precision`` come from a detailed layer info (``LayerType``, the first
    output's ``Format/Datatype``) and are None when the engine was built with layer names only.
    """
    rows = list(profile or [])
    count = next((int(r["count"]) for r in rows if isinstance(r, dict) and "count" in r), None)
    detail: dict[str, dict[str, Any]] = {}
    for layer in (layer_info or {}).get("Layers", []) if isinstance(layer_info, dict) else []:
        if isinstance(layer, dict) and "Name" in layer:
            outs = layer.get("Outputs") or [{}]
            detail[str(layer["Name"])] = {"type": layer.get("LayerType"),
                                          "precision": (outs[0] or {}).get("Format/Datatype")}
    layers = []
    for r in rows:
        if not isinstance(r, dict) or "name" not in r:
            continue
        d = detail.get(str(r["name"]), {})
        layers.append({"name": str(r["name"]), "average_ms": float(r.get("averageMs") or 0.0),
                       "median_ms": r.get("medianMs"), "percentage": r.get("percentage"),
                       "type": d.get("type"), "precision": d.get("precision")})
    return {"iterations": count, "layers": layers}


__all__ = ["SUMMARY_METRICS", "bench_command", "build_command", "major_version", "parse_output", "parse_profile",
           "parse_version_tag", "precision_flags", "profile_command", "shapes_arg"]
