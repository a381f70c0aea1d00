"""The device state recorded with every result: real readers on this machine (x86 Linux: /proc/stat,
/proc/pressure, load), the Raspberry Pi / Jetson parsers on their real output formats, and the disturbed rule."""

from __future__ import annotations

import time

from edgeify_runtime import device_state as ds


def test_probe_on_this_machine_reads_what_is_there_and_nulls_the_rest() -> None:
    probe = ds.StateProbe()
    t_end = time.perf_counter() + 0.05
    while time.perf_counter() < t_end:
        pass
    state = probe.finish(runs=100, threads=1)
    for key in ("cpu_freq_mhz", "governor", "throttling", "temperature_c", "load_avg", "cpu", "pressure", "energy",
                "disturbed", "disturbed_because", "rule"):
        assert key in state
    assert state["cpu"] is not None and 0 <= state["cpu"]["steal_pct"] <= 100  # /proc/stat is readable here
    assert state["load_avg"] is not None and len(state["load_avg"]["end"]) == 3
    energy = state["energy"]
    assert energy.get("source") == "rapl" or (energy["readable"] is False and "not readable here" in energy["reason"])
    assert isinstance(state["disturbed"], bool) and "steal" in state["rule"]


def test_the_rule_flags_steal_and_says_why(monkeypatch) -> None:
    ticks = iter([{"busy": 100, "steal": 0, "total": 1000}, {"busy": 200, "steal": 100, "total": 2000}])
    monkeypatch.setattr(ds, "proc_stat", lambda text=None: next(ticks))
    state = ds.StateProbe().finish(runs=10, threads=1)
    assert state["cpu"]["steal_pct"] == 10.0 and state["disturbed"] is True
    assert "steal" in state["disturbed_kinds"] and any("steal 10.0%" in w for w in state["disturbed_because"])


def test_raspberry_pi_and_proc_parsers() -> None:
    t = ds.parse_pi_throttled("throttled=0x50005")
    assert t == {"flags": "0x50005", "now": ["under-voltage", "throttled"],
                 "since_boot": ["under-voltage occurred", "throttling occurred"]}
    assert ds.parse_pi_throttled("error") is None
    assert ds.parse_pi_temp("temp=48.3'C") == 48.3
    pmic = ("     3V7_WL_SW_A current(0)=0.09564540A\n        VDD_CORE_A current(7)=1.50000000A\n"
            "     3V7_WL_SW_V volt(8)=3.71060800V\n        VDD_CORE_V volt(15)=0.80000000V\n")
    assert abs(ds.parse_pi_pmic_watts(pmic) - (0.0956454 * 3.710608 + 1.5 * 0.8)) < 1e-3
    stat = ds.proc_stat("cpu  10 0 5 80 5 0 0 3 0 0\ncpu0 1 2 3\n")
    assert stat == {"busy": 15, "steal": 3, "total": 103}
