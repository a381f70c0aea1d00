"""ExecuTorch: the per-operator profile and the intermediate tensors, from the runtime's ETDump.

A program loaded with ``enable_etdump=True`` records one profile event per instruction it executes: the
portable kernels' ``native_call_<op>.out`` events, and inside every ``DELEGATE_CALL`` the delegate's own events
(XNNPACK: one per XNNPACK operator, e.g. ``Convolution (NHWC, F32) IGEMM #1``). With a debug buffer it also
records the output tensor of every instruction (a delegate call's outputs, a portable op's output).

The ETDump is a flatbuffer; it is decoded with the ``flatc`` binary and the schema that the ``executorch`` wheel
ships (``executorch/data/bin/flatc``, ``executorch/devtools/etdump/*.fbs``), without importing
``executorch.devtools`` (whose Inspector needs pandas) and without torch. Times are the runtime's ticks, which
are nanoseconds on Linux (``et_pal_ticks_to_ns_multiplier`` is 1/1 there). Standard library + numpy.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Sequence

from ..errors import BundleError
from .record import OpProfile

SOURCE = "executorch ETDump (enable_etdump): portable-kernel and XNNPACK delegate events"
XNNPACK = "XNNPACK delegate"
PORTABLE = "ExecuTorch portable kernels"
_WRAPPERS = ("OPERATOR_CALL", "DELEGATE_CALL", "Method::execute", "Method::init", "Program::load_method")
_SCALAR = {"FLOAT": "float32", "HALF": "float16", "DOUBLE": "float64", "INT": "int32", "LONG": "int64",
           "CHAR": "int8", "BYTE": "uint8", "SHORT": "int16", "BOOL": "bool"}


def _package_dir() -> Path:
    spec = importlib.util.find_spec("executorch")
    locs = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locs:
        raise BundleError("executorch is not installed: no ETDump decoder", hint="pip install executorch")
    return Path(locs[0])


def decode(etdump: Path, timeout_s: float = 60.0) -> dict[str, Any]:
    """The ETDump file as JSON (``{"version", "run_data": [{"events": [...]}, ...]}``)."""
    pkg = _package_dir()
    flatc = pkg / "data" / "bin" / "flatc"
    schemas = sorted((pkg / "devtools" / "etdump").glob("*.fbs"))
    if not flatc.is_file() or not schemas:
        raise BundleError(f"this executorch install has no flatc/ETDump schema ({flatc})",
                          hint="pip install --force-reinstall executorch")
    with tempfile.TemporaryDirectory(prefix="edgeify-etdump-") as d:
        for s in schemas:
            shutil.copyfile(s, Path(d) / s.name)
        data = Path(d) / "etdump.bin"
        shutil.copyfile(etdump, data)
        schema = Path(d) / "etdump_schema_flatcc.fbs"
        proc = subprocess.run([str(flatc), "--json", "--defaults-json", "--strict-json", "--size-prefixed",
                               "-o", d, str(schema), "--", str(data)], capture_output=True, text=True,
                              timeout=timeout_s)
        out = Path(d) / "etdump.json"
        if proc.returncode != 0 or not out.is_file():
            raise BundleError(f"cannot decode the ETDump: {(proc.stderr or proc.stdout).strip()[:300]}")
        return json.loads(out.read_text(encoding="utf-8"))


def executions(decoded: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The events of each ``Method::execute``, in order (init/load events dropped)."""
    runs: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    for block in decoded.get("run_data") or []:
        for ev in block.get("events") or []:
            pe = ev.get("profile_event") or {}
            if pe.get("name") in ("Method::init", "Program::load_method"):
                continue
            current.append(ev)
            if pe.get("name") == "Method::execute":
                runs.append(current)
                current = []
    return runs


def _op_of(event_name: str) -> str:
    m = re.match(r"native_call_(.+?)(\.out)?$", event_name)
    return f"aten.{m.group(1)}" if m else event_name


def rows(runs: Sequence[list[dict[str, Any]]]) -> list[OpProfile]:
    """One row per operator: XNNPACK operators (delegate events) and portable-kernel calls, mean ms per run."""
    total: dict[tuple[int, int, str], float] = {}
    meta: dict[tuple[int, int, str], tuple[str, str, bool]] = {}
    for run in runs:
        seen: dict[tuple[int, str], int] = {}
        for ev in run:
            pe = ev.get("profile_event")
            if not pe:
                continue
            name = pe.get("name") or ""
            delegate = pe.get("delegate_debug_id_str") or ""
            if delegate:
                label, placement, fallback = delegate, XNNPACK, False
                typ = re.sub(r"\s*#\d+$", "", delegate)
            elif name and name not in _WRAPPERS:
                label, placement, fallback = name, PORTABLE, True
                typ = _op_of(name)
            else:
                continue
            instr = int(pe.get("instruction_id", 0))
            k = seen.get((instr, label), 0)
            seen[(instr, label)] = k + 1
            key = (instr, k, label)
            total[key] = total.get(key, 0.0) + (int(pe["end_time"]) - int(pe["start_time"])) / 1e6
            meta[key] = (typ, placement, fallback)
    n = max(len(runs), 1)
    out = []
    for key in sorted(total):
        instr, _, label = key
        typ, placement, fallback = meta[key]
        out.append(OpProfile(
            name=f"#{instr} {label}" if placement == PORTABLE else label, type=typ,
            time_ms=round(total[key] / n, 6), placement=placement, fallback=fallback,
            reason="the XNNPACK partitioner did not take this op: it runs on ExecuTorch's portable (reference) "
                   "kernels" if fallback else None))
    return out


def collect(etdump: Path, warmup: int) -> tuple[list[OpProfile], dict[str, Any], str, str | None]:
    runs = executions(decode(etdump))
    recorded = runs[warmup:] if len(runs) > warmup else runs
    ops = rows(recorded)
    partitions = len({int((ev.get("profile_event") or {}).get("instruction_id", 0)) for ev in
                      (recorded[0] if recorded else []) if (ev.get("profile_event") or {}).get("name") ==
                      "DELEGATE_CALL"})
    extra = {"delegate_partitions": partitions, "etdump_runs": len(runs),
             "note": "XNNPACK reports its operator times in microsecond steps; the mean over the runs is kept"}
    return ops, extra, XNNPACK, None


def intermediates(etdump: Path, debug_buffer: Path) -> dict[str, Any]:
    """The output tensor of every instruction of the first execution, keyed ``instr<N>[.<k>]`` (N: the
    instruction, k: the k-th output of a delegate call). Tensors are read from the debug buffer by offset."""
    import numpy as np

    runs = executions(decode(etdump))
    if not runs:
        return {}
    buf = debug_buffer.read_bytes()
    out: dict[str, Any] = {}
    counts: dict[int, int] = {}
    for ev in runs[0]:
        de = ev.get("debug_event")
        if not de:
            continue
        tensor = (de.get("debug_entry") or {}).get("tensor")
        instr = int(de.get("instruction_id", 0))
        if not tensor or int(de.get("chain_index", 0)) != 0 or str(tensor.get("scalar_type")) not in _SCALAR:
            continue
        dtype = np.dtype(_SCALAR[str(tensor["scalar_type"])])
        sizes = [int(s) for s in tensor.get("sizes") or []]
        count = int(np.prod(sizes)) if sizes else 1
        off = int(tensor.get("offset", 0))
        if off + count * dtype.itemsize > len(buf):
            continue
        k = counts.get(instr, 0)
        counts[instr] = k + 1
        key = f"instr{instr}" if k == 0 else f"instr{instr}.{k}"
        out[key] = np.frombuffer(buf, dtype=dtype, count=count, offset=off).reshape(sizes).copy()
    return out

