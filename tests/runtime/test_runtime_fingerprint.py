"""Device fingerprint (on this machine and on recorded /proc/cpuinfo texts) and latency statistics."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys

import numpy as np
import pytest
from edgeify_runtime import fingerprint as fpmod
from edgeify_runtime.stats import summarize

# A 1-socket, 2-core, 4-thread x86 machine (hyper-threading): 4 logical, 2 physical.
X86_HT = "\n\n".join(
    f"processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel\t\t: 85\n"
    f"model name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz\nphysical id\t: 0\ncore id\t\t: {i % 2}\n"
    "flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni\n"
    for i in range(4)) + "\n"

# A Raspberry Pi 5 (4x Cortex-A76): no model name, no core ids; a trailing board block.
RPI5 = "\n\n".join(
    f"processor\t: {i}\nBogoMIPS\t: 108.00\n"
    "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop "
    "asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\n"
    "CPU revision\t: 1\n" for i in range(4)
) + "\n\nRevision\t: d04170\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n"

# big.LITTLE phone SoC: two core types
BIG_LITTLE = ("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm bf16 sve sve2\nCPU implementer\t: 0x41\n"
              "CPU part\t: 0xd46\n\nprocessor\t: 1\nFeatures\t: fp asimd asimddp i8mm bf16 sve sve2\n"
              "CPU implementer\t: 0x41\nCPU part\t: 0xd47\n")


def test_physical_cores_from_cpuinfo():
    assert fpmod.physical_cores(X86_HT) == 2
    info = fpmod.cpu_info(X86_HT, arch="x86_64")
    assert info["model"].startswith("Intel(R) Xeon(R) Gold 6230")
    assert info["vendor"] == "GenuineIntel"
    assert info["isa"] == ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"]
    assert "avx512_vnni" in info["flags"] and info["flags"] == sorted(info["flags"])


def test_arm_cpuinfo():
    info = fpmod.cpu_info(RPI5, arch="aarch64")
    assert info["model"] == "Cortex-A76"
    assert info["isa"] == ["neon", "fp16", "dotprod"]
    assert "asimddp" in info["flags"]
    assert fpmod.physical_cores(RPI5) == os.cpu_count()  # no core ids in the text: the fallback
    big_little = fpmod.cpu_info(BIG_LITTLE, arch="aarch64")
    assert big_little["model"] == "Cortex-A510 + Cortex-A710"
    assert big_little["isa"] == ["neon", "dotprod", "i8mm", "bf16", "sve", "sve2"]


def test_fingerprint_of_this_machine():
    fp = fpmod.fingerprint()
    assert fp["arch"] == platform.machine()
    assert fp["python"]["version"] == platform.python_version()
    assert fp["numpy"] == np.__version__
    cpu = fp["cpu"]
    assert 1 <= cpu["physical_cores"] <= cpu["logical_cores"] == os.cpu_count()
    assert isinstance(cpu["flags"], list) and isinstance(cpu["isa"], list)
    if sys.platform.startswith("linux"):
        assert cpu["model"] and cpu["flags"]
        assert fp["os"]["kernel"] == platform.release()
        assert fp["memory_total_mb"] > 100
    for zone in fp["temperatures_c"]:
        assert -50 < zone["temp_c"] < 150
    assert "onnxruntime" in fp["engines"]
    json.dumps(fp)  # serialisable


def test_fingerprint_has_no_hostname():
    text = json.dumps(fpmod.fingerprint())
    assert "hostname" not in text and "node" not in json.loads(text)
    host = socket.gethostname()
    if len(host) >= 6:  # a short name could appear by chance inside a CPU model string
        assert host not in text


def test_unreadable_files_never_fail(monkeypatch):
    def unreadable(path):
        return None

    monkeypatch.setattr(fpmod, "_read", unreadable)
    fp = fpmod.fingerprint()
    assert fp["governor"] is None and fp["temperatures_c"] == [] and fp["cpu"]["flags"] == []
    assert fp["cpu"]["physical_cores"] >= 1


def test_fingerprint_cli_prints_json(agent_env):
    out = subprocess.run([sys.executable, "-m", "edgeify_runtime.fingerprint"], capture_output=True,
                         text=True, check=True, timeout=120, env=agent_env())
    data = json.loads(out.stdout)
    assert data["arch"] == platform.machine() and data["fingerprint_version"] == 1


def test_summarize():
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["p50"] == 3.0 and s["min"] == 1.0 and s["max"] == 100.0 and s["mean"] == 22.0
    assert s["p50"] <= s["p90"] <= s["p95"] <= s["p99"] <= s["max"]
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4, 100]), abs=1e-6)
    assert s["cv"] == pytest.approx(s["std"] / s["mean"], rel=1e-6)
    assert summarize([])["p50"] is None and summarize([2.0])["cv"] == 0.0
