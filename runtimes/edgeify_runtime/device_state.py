"""The device's state during a benchmark run, recorded with the result as ``device_state``.

:class:`StateProbe` reads a snapshot when the timed phase starts and another when it ends and reports::

    {"cpu_freq_mhz": {"start": 2600.0, "end": 2450.0, "max": 3700.0} | null,
     "governor": "performance" | null,
     "throttling": {"source": "x86 thermal_throttle" | "vcgencmd", "events": 0, "flags": "0x0", ...} | null,
     "temperature_c": {"start": 41.0, "end": 47.5, "max_zone": "cpu-thermal"} | null,
     "load_avg": {"start": [1m, 5m, 15m], "end": [...]} | null,
     "cpu": {"steal_pct": 0.0, "others_busy_pct": 3.1, "cores": 2} | null,   from /proc/stat deltas
     "pressure": {"cpu_some_pct": 1.2, "memory_some_pct": 0.0, "io_some_pct": 0.0} | null,   /proc/pressure deltas
     "energy": {"source": "rapl", "joules": 1.9, "per_inference_mj": 4.1, "domain": "package-0"}
               | {"readable": false, "reason": "not readable here"},
     "jetson": {...} | null, "disturbed": false, "disturbed_because": [], "rule": "..."}

Every reader returns None when its file or tool is missing or unreadable; a probe never fails a benchmark.
x86 (``/sys/devices/system/cpu``, ``/proc/stat``, ``/proc/pressure``, RAPL powercap), Raspberry Pi (``vcgencmd``:
throttled flags, temperature, clock, Pi 5 PMIC rails) and Jetson (INA3221 power rails) are read.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import time
from typing import Any

#: thresholds of the "disturbed" rule (stated in every record's ``rule``)
MAX_STEAL_PCT = 5.0
MAX_OTHERS_BUSY_PCT = 25.0
RULE = (f"disturbed when CPU steal > {MAX_STEAL_PCT:g}% of CPU time, or other processes kept > "
        f"{MAX_OTHERS_BUSY_PCT:g}% of the CPUs busy, or the 1-min load average exceeded cores + this run's threads, "
        "or the CPU was throttled during the run")

_CPU = "/sys/devices/system/cpu"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except (OSError, ValueError):
        return None


def _int(path: str) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def cpu_freq_mhz() -> float | None:
    """The mean current frequency over the CPUs that expose cpufreq (MHz)."""
    vals = [_int(p) for p in glob.glob(f"{_CPU}/cpu[0-9]*/cpufreq/scaling_cur_freq")]
    vals = [v for v in vals if v]
    return round(sum(vals) / len(vals) / 1000.0, 1) if vals else None


def cpu_max_mhz() -> float | None:
    v = _int(f"{_CPU}/cpu0/cpufreq/cpuinfo_max_freq")
    return round(v / 1000.0, 1) if v else None


def governor() -> str | None:
    return _read(f"{_CPU}/cpu0/cpufreq/scaling_governor") or None


def x86_throttle_count() -> int | None:
    """Sum of core + package thermal throttle events over the CPUs (x86 ``thermal_throttle``)."""
    total, seen = 0, False
    for p in glob.glob(f"{_CPU}/cpu[0-9]*/thermal_throttle/*_throttle_count"):
        v = _int(p)
        if v is not None:
            total, seen = total + v, True
    return total if seen else None


def thermal_max() -> dict[str, Any] | None:
    """The hottest readable thermal zone: {"temp_c", "zone"}."""
    best: dict[str, Any] | None = None
    for path in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        milli = _int(os.path.join(path, "temp"))
        if milli is None:
            continue
        t = round(milli / 1000.0, 1)
        if best is None or t > best["temp_c"]:
            best = {"temp_c": t, "zone": _read(os.path.join(path, "type")) or os.path.basename(path)}
    return best


def proc_stat(text: str | None = None) -> dict[str, int] | None:
    """The aggregate ``cpu`` line of /proc/stat in clock ticks: {"busy", "steal", "total"}."""
    text = _read("/proc/stat") if text is None else text
    if not text:
        return None
    for line in text.splitlines():
        if line.startswith("cpu "):
            try:
                v = [int(x) for x in line.split()[1:]]
            except ValueError:
                return None
            v += [0] * (8 - len(v))
            user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
            busy = user + nice + system + irq + softirq
            return {"busy": busy, "steal": steal, "total": busy + idle + iowait + steal}
    return None


def pressure_totals() -> dict[str, int] | None:
    """``some`` stall totals (microseconds) of /proc/pressure/{cpu,memory,io}."""
    out: dict[str, int] = {}
    for kind in ("cpu", "memory", "io"):
        text = _read(f"/proc/pressure/{kind}")
        m = re.search(r"^some .*total=(\d+)", text or "", re.M)
        if m:
            out[kind] = int(m.group(1))
    return out or None


def rapl_domains() -> list[dict[str, Any]]:
    """Readable RAPL package domains: [{"path", "name", "max_uj"}] (powercap's energy_uj is often root-only)."""
    out = []
    for path in sorted(glob.glob("/sys/class/powercap/intel-rapl:[0-9]*")):
        if path.count(":") != 1:  # sub-domains (core, uncore, dram) are inside the package counter
            continue
        if _int(os.path.join(path, "energy_uj")) is None:
            continue
        out.append({"path": path, "name": _read(os.path.join(path, "name")) or os.path.basename(path),
                    "max_uj": _int(os.path.join(path, "max_energy_range_uj"))})
    return out


def _rapl_read(domains: list[dict[str, Any]]) -> list[int | None]:
    return [_int(os.path.join(d["path"], "energy_uj")) for d in domains]


def _vcgencmd(*args: str) -> str | None:
    exe = shutil.which("vcgencmd")
    if not exe:
        return None
    try:
        proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


#: Raspberry Pi ``get_throttled`` bits (now: 0-3; since boot: 16-19)
PI_THROTTLE_BITS = {0: "under-voltage", 1: "arm frequency capped", 2: "throttled", 3: "soft temperature limit",
                    16: "under-voltage occurred", 17: "arm frequency capping occurred", 18: "throttling occurred",
                    19: "soft temperature limit occurred"}


def parse_pi_throttled(text: str | None) -> dict[str, Any] | None:
    """``throttled=0x50005`` -> {"flags": "0x50005", "now": [...], "since_boot": [...]}."""
    m = re.search(r"throttled=(0x[0-9a-fA-F]+)", text or "")
    if not m:
        return None
    v = int(m.group(1), 16)
    names = [name for bit, name in PI_THROTTLE_BITS.items() if v >> bit & 1]
    return {"flags": m.group(1), "now": [n for n in names if not n.endswith("occurred")],
            "since_boot": [n for n in names if n.endswith("occurred")]}


def parse_pi_temp(text: str | None) -> float | None:
    m = re.search(r"temp=([\d.]+)", text or "")
    return float(m.group(1)) if m else None


def parse_pi_pmic_watts(text: str | None) -> float | None:
    """Pi 5 ``vcgencmd pmic_read_adc``: sum over rails of current (A) x voltage (V) of the same rail."""
    if not text:
        return None
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for m in re.finditer(r"(\S+)_([AV]) \S+=([\d.]+)[AV]", text):
        (amps if m.group(2) == "A" else volts)[m.group(1)] = float(m.group(3))
    watts = [amps[k] * volts[k] for k in amps if k in volts]
    return round(sum(watts), 4) if watts else None


def jetson_rails_mw() -> dict[str, float] | None:
    """Jetson INA3221 power rails in mW (``in_power*_input`` or current x voltage in hwmon), by rail label."""
    out: dict[str, float] = {}
    for p in glob.glob("/sys/bus/i2c/drivers/ina3221*/*/iio:device*/in_power*_input"):
        label = _read(p.replace("in_power", "rail_name_").replace("_input", "")) or os.path.basename(p)
        v = _int(p)
        if v is not None:
            out[label] = float(v)
    for p in glob.glob("/sys/bus/i2c/drivers/ina3221*/*/hwmon/hwmon*/in[0-9]*_label"):
        n = re.search(r"in(\d+)_label$", p)
        if not n:
            continue
        base = os.path.dirname(p)
        mv, ma = _int(f"{base}/in{n.group(1)}_input"), _int(f"{base}/curr{n.group(1)}_input")
        if mv is not None and ma is not None:
            out[_read(p) or f"rail{n.group(1)}"] = round(mv * ma / 1000.0, 1)
    return out or None


class StateProbe:
    """``probe = StateProbe(); ...timed runs...; state = probe.finish(runs, threads)``."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.cpu0 = proc_stat()
        self.own0 = self._own_cpu_s()
        self.psi0 = pressure_totals()
        self.freq0 = cpu_freq_mhz()
        self.temp0 = thermal_max()
        self.load0 = self._load()
        self.throttle0 = x86_throttle_count()
        self.rapl = rapl_domains()
        self.rapl0 = _rapl_read(self.rapl)
        self.pi_temp0 = parse_pi_temp(_vcgencmd("measure_temp"))
        self.watts0 = parse_pi_pmic_watts(_vcgencmd("pmic_read_adc"))
        self.rails0 = jetson_rails_mw()

    @staticmethod
    def _own_cpu_s() -> float:
        t = os.times()
        return t.user + t.system

    @staticmethod
    def _load() -> list[float] | None:
        try:
            return [round(x, 2) for x in os.getloadavg()]
        except (AttributeError, OSError):
            return None

    def finish(self, runs: int, threads: int | None = None) -> dict[str, Any]:
        wall = max(time.monotonic() - self.t0, 1e-9)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        total_cores = os.cpu_count() or cores
        state: dict[str, Any] = {"window_s": round(wall, 3)}
        freq1, fmax = cpu_freq_mhz(), cpu_max_mhz()
        state["cpu_freq_mhz"] = None if freq1 is None and fmax is None else {"start": self.freq0, "end": freq1,
                                                                             "max": fmax}
        state["governor"] = governor()
        because: list[str] = []
        kinds: list[str] = []
        throttle = None
        t1 = x86_throttle_count()
        if t1 is not None and self.throttle0 is not None:
            throttle = {"source": "x86 thermal_throttle", "events": t1 - self.throttle0}
            if t1 > self.throttle0:
                kinds.append("throttled")
                because.append(f"{t1 - self.throttle0} thermal throttle event(s)")
        pi = parse_pi_throttled(_vcgencmd("get_throttled"))
        if pi is not None:
            throttle = {"source": "vcgencmd", **pi}
            if pi["now"]:
                kinds.append("throttled")
                because.append("vcgencmd: " + ", ".join(pi["now"]))
        state["throttling"] = throttle
        temp1 = thermal_max()
        pi_temp1 = parse_pi_temp(_vcgencmd("measure_temp"))
        if pi_temp1 is not None:
            state["temperature_c"] = {"start": self.pi_temp0, "end": pi_temp1, "max_zone": "vcgencmd"}
        elif temp1 is not None:
            state["temperature_c"] = {"start": (self.temp0 or {}).get("temp_c"), "end": temp1["temp_c"],
                                      "max_zone": temp1["zone"]}
        else:
            state["temperature_c"] = None
        load1 = self._load()
        state["load_avg"] = None if load1 is None else {"start": self.load0, "end": load1}
        if load1 is not None and load1[0] > total_cores + (threads or 1):
            kinds.append("load")
            because.append(f"load average {load1[0]:g} > {total_cores} cores + {threads or 1} threads")
        cpu1 = proc_stat()
        if self.cpu0 and cpu1 and cpu1["total"] > self.cpu0["total"]:
            ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
            dt = cpu1["total"] - self.cpu0["total"]
            steal = 100.0 * (cpu1["steal"] - self.cpu0["steal"]) / dt
            own_ticks = (self._own_cpu_s() - self.own0) * ticks
            others = 100.0 * max(0.0, cpu1["busy"] - self.cpu0["busy"] - own_ticks) / dt
            state["cpu"] = {"steal_pct": round(steal, 2), "others_busy_pct": round(others, 2),
                            "cores": total_cores}
            if steal > MAX_STEAL_PCT:
                kinds.append("steal")
                because.append(f"CPU steal {steal:.1f}% > {MAX_STEAL_PCT:g}%")
            if others > MAX_OTHERS_BUSY_PCT:
                kinds.append("other processes")
                because.append(f"other processes kept {others:.0f}% of the CPUs busy (> {MAX_OTHERS_BUSY_PCT:g}%)")
        else:
            state["cpu"] = None
        psi1 = pressure_totals()
        if self.psi0 and psi1:
            state["pressure"] = {f"{k}_some_pct": round(100.0 * (psi1[k] - self.psi0[k]) / (wall * 1e6), 2)
                                 for k in psi1 if k in self.psi0}
        else:
            state["pressure"] = None
        state["energy"] = self._energy(wall, runs)
        rails1 = jetson_rails_mw()
        state["jetson"] = None if rails1 is None else {"rails_mw_start": self.rails0, "rails_mw_end": rails1}
        state["disturbed"] = bool(because)
        state["disturbed_because"] = because
        state["disturbed_kinds"] = kinds
        state["rule"] = RULE
        return state

    def _energy(self, wall: float, runs: int) -> dict[str, Any]:
        if self.rapl:
            joules = 0.0
            for d, e0, e1 in zip(self.rapl, self.rapl0, _rapl_read(self.rapl)):
                if e0 is None or e1 is None:
                    break
                delta = e1 - e0 if e1 >= e0 else e1 + (d["max_uj"] or 0) - e0  # the counter wraps
                joules += delta / 1e6
            else:
                return {"source": "rapl", "domain": ",".join(d["name"] for d in self.rapl),
                        "joules": round(joules, 6), "watts": round(joules / wall, 3),
                        "per_inference_mj": round(1e3 * joules / runs, 6) if runs else None,
                        "note": "whole package (every process on it), not this model alone"}
        watts1 = parse_pi_pmic_watts(_vcgencmd("pmic_read_adc"))
        if watts1 is not None and self.watts0 is not None:
            w = (watts1 + self.watts0) / 2
            return {"source": "pi5 pmic", "watts": round(w, 3), "joules": round(w * wall, 4),
                    "per_inference_mj": round(1e3 * w * wall / runs, 6) if runs else None,
                    "note": "estimated from two PMIC readings (start, end)"}
        rails1 = jetson_rails_mw()
        if rails1 and self.rails0:
            w = (sum(rails1.values()) + sum(self.rails0.values())) / 2000.0
            return {"source": "jetson ina3221", "watts": round(w, 3), "joules": round(w * wall, 4),
                    "per_inference_mj": round(1e3 * w * wall / runs, 6) if runs else None,
                    "note": "estimated from two rail readings (start, end)"}
        return {"readable": False, "reason": "not readable here (no RAPL powercap energy_uj, PMIC or INA3221 "
                                             "rails this user can read)"}


__all__ = ["MAX_OTHERS_BUSY_PCT", "MAX_STEAL_PCT", "RULE", "StateProbe", "parse_pi_pmic_watts",
           "parse_pi_temp", "parse_pi_throttled", "proc_stat"]
