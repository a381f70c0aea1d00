"""The device fingerprint recorded with every benchmark result.

``python -m edgeify_runtime.fingerprint`` prints it as JSON. It reads ``/proc`` and ``/sys`` where they exist
and never fails because a file is missing or unreadable (the field is then null or empty). The host name, user
names and machine ids are deliberately NOT collected.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import sys
from typing import Any

from .engines import available_engines
from .jetson import jetson_fingerprint

FINGERPRINT_VERSION = 1

#: ISA features summarised in ``cpu.isa`` (canonical name -> /proc/cpuinfo flag names that imply it).
_X86_ISA = (
    ("sse4_2", ("sse4_2",)), ("avx", ("avx",)), ("avx2", ("avx2",)), ("fma", ("fma",)), ("f16c", ("f16c",)),
    ("avx_vnni", ("avx_vnni",)), ("avx512f", ("avx512f",)), ("avx512bw", ("avx512bw",)),
    ("avx512_vnni", ("avx512_vnni",)), ("avx512_bf16", ("avx512_bf16",)), ("avx512_fp16", ("avx512_fp16",)),
    ("amx_tile", ("amx_tile",)), ("amx_int8", ("amx_int8",)), ("amx_bf16", ("amx_bf16",)),
)
_ARM_ISA = (
    ("neon", ("asimd", "neon")), ("fp16", ("asimdhp", "fphp")), ("dotprod", ("asimddp",)),
    ("i8mm", ("i8mm",)), ("bf16", ("bf16",)), ("sve", ("sve",)), ("sve2", ("sve2",)), ("sme", ("sme",)),
)

#: (implementer, part) -> core name for the ARM cores edge boards use (/proc/cpuinfo has no model name there)
_ARM_PARTS = {
    ("0x41", "0xd03"): "Cortex-A53", ("0x41", "0xd04"): "Cortex-A35", ("0x41", "0xd05"): "Cortex-A55",
    ("0x41", "0xd07"): "Cortex-A57", ("0x41", "0xd08"): "Cortex-A72", ("0x41", "0xd09"): "Cortex-A73",
    ("0x41", "0xd0a"): "Cortex-A75", ("0x41", "0xd0b"): "Cortex-A76", ("0x41", "0xd0c"): "Neoverse-N1",
    ("0x41", "0xd0d"): "Cortex-A77", ("0x41", "0xd40"): "Neoverse-V1", ("0x41", "0xd41"): "Cortex-A78",
    ("0x41", "0xd42"): "Cortex-A78AE", ("0x41", "0xd44"): "Cortex-X1", ("0x41", "0xd46"): "Cortex-A510",
    ("0x41", "0xd47"): "Cortex-A710", ("0x41", "0xd48"): "Cortex-X2", ("0x41", "0xd49"): "Neoverse-N2",
    ("0x41", "0xd4a"): "Neoverse-E1", ("0x41", "0xd4b"): "Cortex-A78C", ("0x41", "0xd4d"): "Cortex-A715",
    ("0x41", "0xd4e"): "Cortex-X3", ("0x41", "0xd4f"): "Neoverse-V2", ("0x41", "0xd80"): "Cortex-A520",
    ("0x41", "0xd81"): "Cortex-A720", ("0x41", "0xd82"): "Cortex-X4", ("0x41", "0xd87"): "Cortex-A725",
    ("0x4e", "0x004"): "NVIDIA Carmel", ("0x51", "0x001"): "Qualcomm Oryon",
}


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def _cpuinfo_blocks(text: str | None = None) -> list[dict[str, str]]:
    """/proc/cpuinfo as one dict per processor block (plus any trailing global block, as on ARM)."""
    if text is None:
        text = _read("/proc/cpuinfo") or ""
    blocks: list[dict[str, str]] = []
    for chunk in text.strip().split("\n\n"):
        block: dict[str, str] = {}
        for line in chunk.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                block.setdefault(key.strip().lower(), value.strip())
        if block:
            blocks.append(block)
    return blocks


def logical_cores() -> int:
    return os.cpu_count() or 1


def usable_cores() -> int:
    """CPUs this process may run on (affinity mask / cpuset), else the logical count."""
    try:
        return len(os.sched_getaffinity(0)) or logical_cores()
    except (AttributeError, OSError):
        return logical_cores()


def physical_cores(cpuinfo: str | None = None) -> int:
    """Physical cores: unique (physical id, core id) pairs in /proc/cpuinfo; else unique thread-sibling sets
    in sysfs (ARM has no core ids in cpuinfo); else ``os.cpu_count()``."""
    pairs = {(b["physical id"], b["core id"]) for b in _cpuinfo_blocks(cpuinfo)
             if "physical id" in b and "core id" in b}
    if pairs:
        return len(pairs)
    if cpuinfo is None:
        siblings = set()
        for path in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/topology/thread_siblings_list"):
            text = _read(path)
            if text:
                siblings.add(text.strip())
        if siblings:
            return len(siblings)
    return logical_cores()


def default_threads() -> int:
    """The default thread count: physical cores, bounded by the CPUs this process may use."""
    return max(1, min(physical_cores(), usable_cores()))


def _isa_summary(flags: set[str], arch: str) -> list[str]:
    table = _ARM_ISA if arch.lower().startswith(("aarch64", "arm")) else _X86_ISA
    return [name for name, keys in table if any(k in flags for k in keys)]


def cpu_info(cpuinfo: str | None = None, arch: str | None = None) -> dict[str, Any]:
    """CPU model, vendor, flags and ISA summary from /proc/cpuinfo (x86 ``flags``, ARM ``Features``)."""
    arch = arch or platform.machine()
    blocks = _cpuinfo_blocks(cpuinfo)
    first = blocks[0] if blocks else {}
    merged: dict[str, str] = {}
    for b in blocks:
        for k, v in b.items():
            merged.setdefault(k, v)
    flags_text = merged.get("flags") or merged.get("features") or ""
    flags = sorted(set(flags_text.split()))
    model = first.get("model name") or merged.get("model name") or merged.get("cpu model")
    if not model:  # ARM: name the core types from implementer/part, e.g. "Cortex-A76 + Cortex-A55"
        names: list[str] = []
        for b in blocks:
            impl, part = b.get("cpu implementer"), b.get("cpu part")
            if impl and part:
                name = _ARM_PARTS.get((impl.lower(), part.lower()), f"ARM implementer {impl} part {part}")
                if name not in names:
                    names.append(name)
        model = " + ".join(names) or platform.processor() or None
    return {
        "model": model,
        "vendor": merged.get("vendor_id") or merged.get("cpu implementer"),
        "board": _board_model(merged),
        "flags": flags,
        "isa": _isa_summary(set(flags), arch),
        "logical_cores": logical_cores(),
        "physical_cores": physical_cores(cpuinfo),
        "usable_cores": usable_cores(),
    }


def cpu_summary(info: dict[str, Any] | None = None) -> str:
    """One line naming the CPU for a benchmark table: model, cores and the widest vector ISA, e.g.
    "AMD EPYC, 2 cores, avx512f avx512_vnni avx512_bf16" (the ISA tells apart CPUs sold under one name)."""
    info = info or cpu_info()
    wide = [i for i in info.get("isa") or [] if i.startswith(("avx512", "avx_vnni", "sve", "sme", "dotprod"))]
    isa = " ".join(wide) or " ".join((info.get("isa") or [])[-2:]) or "no vector ISA found"
    return f"{info.get('model') or 'unknown CPU'}, {info.get('logical_cores') or '?'} cores, {isa}"


def _board_model(merged: dict[str, str]) -> str | None:
    """The board (Raspberry Pi, Jetson, ...) from the device tree or cpuinfo's ``Model`` line."""
    text = _read("/proc/device-tree/model") or _read("/sys/firmware/devicetree/base/model")
    if text:
        return text.replace("\x00", "").strip() or None
    return merged.get("model") if not str(merged.get("model", "")).isdigit() else None


def memory_total_mb() -> float | None:
    text = _read("/proc/meminfo")
    if text:
        for line in text.splitlines():
            if line.startswith("MemTotal:"):
                try:
                    return round(int(line.split()[1]) / 1024.0, 1)
                except (IndexError, ValueError):
                    return None
    try:  # non-Linux POSIX
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20, 1)
    except (AttributeError, ValueError, OSError):
        return None


def cpu_governor() -> str | None:
    text = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return text.strip() if text else None


def cpu_freq_mhz() -> dict[str, float] | None:
    """cpu0's current/min/max frequency in MHz, where cpufreq is exposed."""
    out: dict[str, float] = {}
    for key, name in (("cur", "scaling_cur_freq"), ("min", "cpuinfo_min_freq"), ("max", "cpuinfo_max_freq")):
        text = _read(f"/sys/devices/system/cpu/cpu0/cpufreq/{name}")
        try:
            if text:
                out[key] = round(int(text.strip()) / 1000.0, 1)
        except ValueError:
            pass
    return out or None


def temperatures_c() -> list[dict[str, Any]]:
    """Readable thermal zones: ``[{"zone": "thermal_zone0", "type": "cpu-thermal", "temp_c": 48.3}, ...]``."""
    zones = []
    for path in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        text = _read(os.path.join(path, "temp"))
        if not text:
            continue
        try:
            milli = int(text.strip())
        except ValueError:
            continue
        kind = (_read(os.path.join(path, "type")) or "").strip() or None
        zones.append({"zone": os.path.basename(path), "type": kind, "temp_c": round(milli / 1000.0, 1)})
    return zones


def _os_release() -> str | None:
    text = _read("/etc/os-release") or _read("/usr/lib/os-release")
    if not text:
        return None
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"') or None
    return None


def _numpy_version() -> str | None:
    try:
        import numpy
    except Exception:  # the runtime needs numpy, but a fingerprint must still print without it
        return None
    return str(numpy.__version__)


def fingerprint() -> dict[str, Any]:
    """Everything about this device that can change a benchmark result (no host name, no user, no ids)."""

    arch = platform.machine()
    try:
        libc = " ".join(x for x in platform.libc_ver() if x) or None
    except Exception:
        libc = None
    return {
        "fingerprint_version": FINGERPRINT_VERSION,
        "arch": arch,
        "os": {"system": platform.system(), "kernel": platform.release(),
               "kernel_version": platform.version(), "distro": _os_release(), "libc": libc},
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable_bits": 64 if sys.maxsize > 2**32 else 32},
        "numpy": _numpy_version(),
        "cpu": cpu_info(arch=arch),
        "memory_total_mb": memory_total_mb(),
        "governor": cpu_governor(),
        "cpu_freq_mhz": cpu_freq_mhz(),
        "temperatures_c": temperatures_c(),
        "engines": available_engines(),
        "jetson": _jetson(),
    }


def _jetson() -> dict[str, Any] | None:
    """L4T/JetPack, TensorRT, CUDA and GPU compute capability on a Jetson (``edgeify_runtime.jetson``); None
    elsewhere."""
    try:
        fp = jetson_fingerprint()
    except Exception:  # a fingerprint never fails
        return None
    return fp if fp.get("is_jetson") else None


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m edgeify_runtime.fingerprint",
                                     description="Print this device's fingerprint as JSON.")
    parser.add_argument("--compact", action="store_true", help="one line instead of indented JSON")
    args = parser.parse_args(argv)
    print(json.dumps(fingerprint(), indent=None if args.compact else 2, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
