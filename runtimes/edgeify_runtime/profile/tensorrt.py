"""TensorRT: trtexec's per-layer profile of the bundle's engine plan (``--dumpProfile --separateProfileRun
--exportProfile``), parsed by ``edgeify_runtime.trtexec.parse_profile``.

A TensorRT layer is already a fusion of ONNX nodes (``conv.weight + .../QuantizeLinear + .../Conv``): trtexec
times layers, so one row per layer is the finest grain there is. ``percentage`` is trtexec's share of the layer
in the profiled time. Checked against the recorded ``tests/data/trtexec`` profile only (no GPU here).
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from ..trtexec import parse_profile, profile_command
from .record import OpProfile

SOURCE = "trtexec --dumpProfile --separateProfileRun --exportProfile"


def layer_type(name: str, reported: str | None) -> str:
    """The layer type from a detailed layer info, else what TensorRT's own layer names say."""
    if reported:
        return str(reported)
    if name.startswith("Reformatting CopyNode"):
        return "Reformat"
    if name.startswith("{ForeignNode["):
        return "ForeignNode"
    if name.startswith("[trainStation"):
        return "TrainStation"
    if name.startswith("PWN("):
        return "PointWise"
    return "unknown"


def rows_from_profile(parsed: dict[str, Any], placement: str) -> list[OpProfile]:
    return [OpProfile(name=layer["name"], type=layer_type(layer["name"], layer.get("type")),
                      time_ms=round(float(layer["average_ms"]), 6), placement=placement,
                      precision=layer.get("precision")) for layer in parsed["layers"]]


def collect(record: Any, workdir: str, shapes: dict[str, list[int]] | None, iterations: int,
            timeout_s: float) -> tuple[list[OpProfile], dict[str, Any], str, str | None]:
    exe = (record.meta.get("fingerprint") or {}).get("trtexec")
    dla = record.meta.get("dla_core")
    placement = f"DLA core {dla} (GPU fallback allowed)" if dla is not None else "TensorRT GPU"
    if not exe:
        return [], {}, placement, "trtexec is not on this device: TensorRT per-layer times need it"
    prof, info = os.path.join(workdir, "profile.json"), os.path.join(workdir, "layers.json")
    cmd = profile_command(exe, record.plan, prof, info, shapes=shapes, iterations=iterations, dla_core=dla)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0 or not os.path.isfile(prof):
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        return [], {"command": cmd}, placement, f"trtexec exited {proc.returncode}: {tail}"
    with open(prof, encoding="utf-8") as f:
        profile = json.load(f)
    layer_info = None
    if os.path.isfile(info):
        with open(info, encoding="utf-8") as f:
            layer_info = json.load(f)
    parsed = parse_profile(profile, layer_info)
    extra = {"command": cmd, "iterations": parsed["iterations"],
             "note": "times are trtexec's GPU layer times; the host-side copies and synchronisation that "
                     "Model.run adds are the difference to the end-to-end p50"}
    return rows_from_profile(parsed, placement), extra, placement, None
