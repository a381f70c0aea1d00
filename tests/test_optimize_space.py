"""The optimize search space, target choice, Pareto front and durations (no builds: fast)."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgeify.optimize.autotarget import choose_target
from edgeify.optimize.choose import pareto
from edgeify.optimize.records import Accuracy, Candidate
from edgeify.optimize.space import DeviceFacts, build_space, settings_grid
from edgeify.targets import load_registry

XEON = DeviceFacts(arch="x86_64", cpu_model="Intel(R) Xeon(R) Processor", physical_cores=2,
                   flags=("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"))
AVX2 = DeviceFacts(arch="x86_64", cpu_model="AMD EPYC 7B13", physical_cores=2, flags=("avx2", "fma"))


@pytest.fixture(scope="module")
def reg():
    return load_registry(user_dir=Path("/nonexistent"))


def test_auto_target_from_fingerprint(reg) -> None:
    spec, why = choose_target(reg, XEON)
    assert spec.name == "x86-avx512" and "avx512_vnni" in why and "x86-avx2" in why
    assert choose_target(reg, AVX2)[0].name == "x86-avx2"
    from edgeify.errors import TargetError

    with pytest.raises(TargetError):
        choose_target(reg, DeviceFacts(arch="riscv64"))


def test_space_offers_bf16_only_where_the_cpu_has_it(reg) -> None:
    spec = reg.get("x86-avx512")
    with_bf16 = build_space(spec, XEON, has_calib=True)
    keys = {a.key() for a in with_bf16.artifacts}
    assert "openvino/bf16/default" in keys and "onnxruntime/int8/default" in keys
    assert "onnxruntime/int8/s8s8" in keys  # the U8S8 vs S8S8 speed recipe is screened on every int8 search
    no_bf16 = build_space(spec, XEON.model_copy(update={"flags": ("avx2", "fma", "avx512f", "avx512_vnni")}),
                          has_calib=False)
    keys = {a.key() for a in no_bf16.artifacts}
    assert not any("/bf16/" in k or "/int8/" in k for k in keys)
    assert any("bf16" in s for s in no_bf16.skipped) and any("--calib" in s for s in no_bf16.skipped)
    assert not any(a.precision == "int8-mixed" for a in with_bf16.artifacts)  # only the ladder builds it


def test_settings_grid_threads_and_engine_options() -> None:
    grid = settings_grid("onnxruntime", 4, frozenset({"graph_optimization_level"}))
    assert {s.threads for s in grid} == {1, 2, 3, 4} and grid[0].threads == 4
    assert {s.options["graph_optimization_level"] for s in grid} == {"all", "extended"}
    ov = settings_grid("openvino", 2, frozenset({"config", "device"}))
    assert {s.options["performance_hint"] for s in ov} == {"LATENCY", "THROUGHPUT"}
    assert [s.options for s in settings_grid("litert", 2, frozenset())] == [{}, {}]


def _cand(p50: float, drop: float, size: int) -> Candidate:
    return Candidate(engine="e", precision="fp32", latency_ms={"p50": p50}, accuracy_drop=drop, size_bytes=size,
                     accuracy=Accuracy(measure="labels", drop=drop))


def test_pareto_front() -> None:
    cands = [_cand(1.0, 0.5, 100), _cand(2.0, 0.0, 400), _cand(2.0, 0.5, 400), _cand(0.5, 2.0, 50)]
    assert pareto(cands, "p50") == [0, 1, 3]  # #2 is dominated by #0


def test_max_time_durations() -> None:
    from edgeify.cli.optimize import parse_duration
    from edgeify.errors import UsageError

    assert parse_duration("20m") == 1200 and parse_duration("90s") == 90 and parse_duration("1h30m") == 5400
    assert parse_duration("45") == 45
    for bad in ("", "soon", "0"):
        with pytest.raises(UsageError):
            parse_duration(bad)
