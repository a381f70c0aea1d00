"""The TensorRT-specific code that needs no GPU: trtexec log parsing against verbatim recordings of real runs
(tests/data/trtexec, sources in SOURCES.json), trtexec command lines, the Jetson fingerprint from real identity
files (tests/data/jetson), and the engine cache decisions with a stand-in trtexec that replays a real log.

Nothing here runs TensorRT: there is none on these machines. What is verified is what the text of real runs and
real devices says; see the README's Jetson section for what has never run on real hardware."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from edgeify_runtime import EngineMissingError, jetson, trt_engine
from edgeify_runtime.errors import EngineBuildError
from edgeify_runtime.manifest import Manifest
from edgeify_runtime.trtexec import (
    bench_command,
    build_command,
    parse_output,
    parse_version_tag,
    precision_flags,
)

DATA = Path(__file__).parent / "data"
REC = DATA / "trtexec"
JET = DATA / "jetson"


def _rec(name: str) -> dict:
    return parse_output((REC / name).read_text(encoding="utf-8"))


def test_every_recording_states_its_source() -> None:
    sources = json.loads((REC / "SOURCES.json").read_text())["recordings"]
    recorded = sorted(p.name for p in REC.iterdir() if p.suffix in (".log", ".json") and p.name != "SOURCES.json")
    assert recorded == sorted(sources)
    for name, src in sources.items():
        assert src["repository"] and src["url"].startswith("https://github.com/"), name
        assert src["command"] and src["tensorrt_version"] and src["machine"], name
        if not name.endswith(".log"):  # an exported layer profile (--exportProfile): JSON, not trtexec's log
            assert isinstance(json.loads((REC / name).read_text()), list), name
            continue
        text = (REC / name).read_text()
        assert "&&&& PASSED TensorRT.trtexec" in text  # every recording ends as the real run ended
        assert parse_output(text)["tensorrt_version"] == src["tensorrt_version"].split()[0]


def test_trt10_performance_summary_with_percentiles() -> None:
    r = _rec("trt10.16_rtx6000ada_onnx_default.log")
    assert (r["status"], r["tensorrt_version"]) == ("passed", "10.16.0")
    assert r["device"] == {"name": "NVIDIA RTX 6000 Ada Generation", "compute_capability": "8.9", "sms": 142,
                           "memory": "48501 MiB"}
    assert (r["build_s"], r["engine_size_mib"]) == (3.10201, 12.5703)
    s = r["summary"]
    assert s["throughput_qps"] == 18392.0
    assert s["latency_ms"] == {"min": 0.0334473, "max": 0.882324, "mean": 0.0431899, "median": 0.0386963,
                               "p90": 0.0480957, "p95": 0.0548096, "p99": 0.144043}
    assert s["gpu_compute_ms"]["median"] == 0.0297852 and s["gpu_compute_ms"]["p99"] == 0.0952148
    assert s["enqueue_ms"]["mean"] == 0.0286857
    assert s["h2d_ms"]["max"] == 0.265503 and s["d2h_ms"]["p95"] == 0.00720215
    assert (s["total_host_walltime_s"], s["total_gpu_compute_s"]) == (3.00005, 1.84486)
    assert any("--useCudaGraph" in w for w in r["warnings"])


def test_trt8_6_summary_ignores_the_verbose_explanations() -> None:
    r = _rec("trt8.6.0_rtx3090_loadengine.log")
    assert r["tensorrt_version"] == "8.6.0" and r["device"]["compute_capability"] == "8.6"
    s = r["summary"]
    assert s["throughput_qps"] == 21009.2
    assert s["gpu_compute_ms"] == {"min": 0.041748, "max": 0.609253, "mean": 0.0451127, "median": 0.0439453,
                                   "p90": 0.0449219, "p95": 0.045105, "p99": 0.0521851}
    assert s["latency_ms"]["p99"] == 0.0630798 and s["total_gpu_compute_s"] == 2.84346


def test_jetson_xavier_trt8_4_summary_has_only_p99() -> None:
    r = _rec("trt8.4.0_jetson-agx-xavier_loadengine.log")
    assert r["tensorrt_version"] == "8.4.0" and r["command"] == "trtexec --loadEngine=mnist16.trt --batch=16"
    s = r["summary"]
    assert s["throughput_qps"] == 41087.7
    assert s["gpu_compute_ms"] == {"min": 0.375977, "max": 0.403564, "mean": 0.388221, "median": 0.388443,
                                   "p99": 0.393188}
    assert set(s) == {"throughput_qps", "latency_ms", "enqueue_ms", "h2d_ms", "gpu_compute_ms", "d2h_ms",
                      "total_host_walltime_s", "total_gpu_compute_s"}


def test_jetson_orin_int8_build_without_summary_says_why() -> None:
    r = _rec("trt8.5.2_jetson-orin_int8_qdq_dumpprofile.log")
    assert r["tensorrt_version"] == "8.5.2" and r["status"] == "passed"
    assert r["device"] == {"name": "Orin", "compute_capability": "8.7", "sms": 4, "memory": "7755 MiB"}
    assert r["precision"] == "FP32+INT8" and r["build_s"] == 320.636
    assert r["summary"] is None and "--separateProfileRun" in r["summary_missing"]


def test_build_log_with_timing_cache_and_skip_inference() -> None:
    r = _rec("trt10.16_rtx6000ada_build_dynamic_fp16_timingcache.log")
    assert r["precision"] == "FP32+FP16" and (r["build_s"], r["engine_size_mib"]) == (15.576, 6.37628)
    assert r["timing_cache"] == {"file": "model-trained.TimingCache", "loaded": False, "saved_bytes": 107484}
    assert r["summary"] is None and "--skipInference" in r["summary_missing"]
    assert any(w.startswith("Weakly-typed networks have been deprecated") for w in r["warnings"])


def test_version_tags() -> None:
    assert parse_version_tag("[TensorRT v8502]") == "8.5.2"
    assert parse_version_tag("&&&& RUNNING TensorRT.trtexec [TensorRT v8400] # x") == "8.4.0"
    assert parse_version_tag("[TensorRT v100300] [b17]") == "10.3.0"
    assert parse_version_tag("[TensorRT v101600]") == "10.16.0"
    assert parse_version_tag("no banner") is None


def test_our_build_command_uses_the_flags_of_a_real_trtexec_run() -> None:
    """The recorded NVIDIA cookbook command (TensorRT 10.16) built an engine with these exact flag spellings."""
    real = (REC / "trt10.16_rtx6000ada_build_dynamic_fp16_timingcache.log").read_text().splitlines()[0]
    real_args = set(real.split(" # ", 1)[1].split())
    ours = build_command("trtexec", "m.onnx", "model-trained.trt", trt_version="10.16.0", precision="fp16",
                         timing_cache="model-trained.TimingCache",
                         profile={"min": {"x": [1, 1, 28, 28]}, "opt": {"x": [4, 1, 28, 28]},
                                  "max": {"x": [16, 1, 28, 28]}})
    assert set(ours[2:]) <= real_args, set(ours[2:]) - real_args


def test_precision_flags_follow_the_tensorrt_major_version() -> None:
    assert precision_flags("8.5.2", "fp16") == ["--fp16"]
    assert precision_flags("10.3.0", "int8") == ["--int8", "--fp16"]
    assert precision_flags("10.3.0", "fp32") == []
    assert precision_flags("11.1.0", "fp16") == [] and precision_flags("11.1.0", "int8") == []  # unverified
    cmd = build_command("/usr/src/tensorrt/bin/trtexec", "/b/model.onnx", "/b/engines/k.plan", trt_version="10.3.0",
                        precision="int8", timing_cache="/b/engines/t.cache", dla_core=1, workspace_mib=1024)
    assert cmd[:3] == ["/usr/src/tensorrt/bin/trtexec", "--onnx=/b/model.onnx", "--saveEngine=/b/engines/k.plan"]
    assert "--timingCacheFile=/b/engines/t.cache" in cmd and "--memPoolSize=workspace:1024M" in cmd
    assert cmd.index("--useDLACore=1") + 1 == cmd.index("--allowGPUFallback")
    assert "--allowGPUFallback" not in build_command("t", "o", "p", trt_version="10.3.0", precision="fp16",
                                                     dla_core=0, gpu_fallback=False)
    assert bench_command("t", "p.plan", shapes={"x": [2, 3]}, iterations=50, duration_s=2.0) == [
        "t", "--loadEngine=p.plan", "--shapes=x:2x3", "--warmUp=200", "--iterations=50", "--duration=2"]


# -- the Jetson fingerprint, from real identity files ---------------------------------------------------------

def _jetson_root(tmp: Path, release: str = "r36.4.3") -> Path:
    root = tmp / "root"
    (root / "etc").mkdir(parents=True, exist_ok=True)
    shutil.copy(JET / f"nv_tegra_release.{release}", root / "etc/nv_tegra_release")
    dt = root / "proc/device-tree"
    dt.mkdir(parents=True, exist_ok=True)
    (dt / "model").write_text((JET / "device-tree-model.orin-nano-super").read_text().strip() + "\0")
    return root


def test_jetson_fingerprint_from_real_identity_files(tmp_path: Path) -> None:
    root = _jetson_root(tmp_path)
    fp = jetson.jetson_fingerprint(str(root))
    assert fp["is_jetson"] and fp["l4t"] == "36.4.3" and fp["jetpack"] == "6.2"
    assert fp["model"] == "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"
    assert fp["board"] == "jetson-orin-nano" and fp["compute_capability"] == "8.7"
    assert fp["tensorrt"] is None and fp["trtexec"] is None  # nothing of TensorRT in this root
    # a TensorRT install, as JetPack's Debian packages and the CUDA toolkit record it
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(
        "Package: libnvinfer10\nStatus: install ok installed\nVersion: 10.3.0.30-1+cuda12.5\n\n"
        "Package: cuda-cudart-12-6\nStatus: install ok installed\nVersion: 12.6.68-1\n")
    fp = jetson.jetson_fingerprint(str(root))
    assert (fp["tensorrt"], fp["cuda"]) == ("10.3.0", "12.6.68")
    assert not jetson.jetson_fingerprint(str(tmp_path / "empty"))["is_jetson"]
    assert jetson.parse_nv_tegra_release((JET / "nv_tegra_release.r36.4.7").read_text())["l4t"] == "36.4.7"


def test_cache_key_changes_with_each_input() -> None:
    fp = {"l4t": "36.4.3", "tensorrt": "10.3.0", "cuda": "12.6.68", "compute_capability": "8.7", "model": "x"}
    key = jetson.engine_cache_key(fp, precision="fp16", onnx_sha256="a", dla_core=None)
    assert key == jetson.engine_cache_key({**fp, "model": "other board text"}, precision="fp16", onnx_sha256="a",
                                          dla_core=None)
    for change in ({"l4t": "36.4.7"}, {"tensorrt": "10.7.0"}, {"cuda": "12.8"}, {"compute_capability": "7.2"}):
        assert jetson.engine_cache_key({**fp, **change}, precision="fp16", onnx_sha256="a", dla_core=None) != key
    for kw in ({"precision": "int8"}, {"onnx_sha256": "b"}, {"dla_core": 0}):
        args = {"precision": "fp16", "onnx_sha256": "a", "dla_core": None, **kw}
        assert jetson.engine_cache_key(fp, **args) != key


# -- engine cache decisions with a stand-in trtexec replaying a real log ------------------------------------

def _bundle(tmp: Path, precision: str = "fp16") -> Path:
    """A minimal valid Jetson bundle (the ONNX bytes do not matter: nothing parses them here)."""
    from edgeify_runtime.manifest import FORMAT_NAME, files_digest, sha256_file

    b = tmp / "bundle"
    b.mkdir()
    (b / "model.onnx").write_bytes(b"onnx bytes for " + precision.encode())
    files = {"model.onnx": {"sha256": sha256_file(b / "model.onnx"), "size": (b / "model.onnx").stat().st_size}}
    raw = {"schema_version": 1, "format": FORMAT_NAME, "target": {"name": "jetson-orin-nano"},
           "engine": {"name": "tensorrt", "artifact": "model.onnx", "options": {}}, "precision": precision,
           "inputs": [{"name": "x", "shape": ["batch", 1, 8, 8], "dtype": "float32", "layout": "NCHW"}],
           "outputs": [{"name": "y", "shape": ["batch", 10], "dtype": "float32", "layout": None}],
           "files": files, "bundle_digest": files_digest(files),
           "device_steps": [{"id": "engine", "uses": "tensorrt-engine", "where": "device",
                             "config": {"dla_cores": 0, "max_batch": 8}}]}
    (b / "manifest.json").write_text(json.dumps(raw))
    return b


def _stand_in(tmp: Path, recording: str = "trt8.5.2_jetson-orin_int8_qdq_dumpprofile.log") -> Path:
    d = tmp / "tensorrt/bin"
    d.mkdir(parents=True)
    shutil.copy(REC / "replay_trtexec.sh", d / "trtexec")
    shutil.copy(REC / recording, d / "replay.log")
    return d / "trtexec"


def test_engine_built_then_reused_then_rebuilt_when_the_device_changes(tmp_path: Path) -> None:
    b = _bundle(tmp_path)
    exe = _stand_in(tmp_path)
    fp = {"is_jetson": True, "l4t": "36.4.3", "tensorrt": "8.5.2", "cuda": "11.4", "compute_capability": "8.7",
          "trtexec": str(exe), "tensorrt_python": False}
    man = Manifest.read(b)
    first = trt_engine.ensure_engine(b, man, fingerprint=fp)
    assert (first.decision, first.reason) == ("built", "first use on this device")
    call = (exe.parent / "calls.log").read_text().splitlines()[-1].split()
    assert f"--onnx={b / 'model.onnx'}" in call and "--fp16" in call and "--skipInference" in call
    assert any(a.startswith("--timingCacheFile=") for a in call)
    assert "--minShapes=x:1x1x8x8" in call and "--maxShapes=x:8x1x8x8" in call
    meta = first.meta
    assert meta["trtexec"]["build_s"] == 320.636 and meta["trtexec"]["device"]["name"] == "Orin"
    assert meta["plan"]["sha256"] and Path(first.plan).parent == b / "engines"
    assert meta["key_payload"]["l4t"] == "36.4.3" and meta["timing_cache"]["size"] > 0

    again = trt_engine.ensure_engine(b, man, fingerprint=fp)
    assert (again.decision, again.key) == ("reused", first.key)
    assert len((exe.parent / "calls.log").read_text().splitlines()) == 1  # no second build

    upgraded = trt_engine.ensure_engine(b, man, fingerprint={**fp, "l4t": "36.4.7", "tensorrt": "10.3.0"})
    assert upgraded.decision == "rebuilt" and upgraded.key != first.key
    assert "l4t '36.4.3' -> '36.4.7'" in upgraded.reason and "tensorrt '8.5.2' -> '10.3.0'" in upgraded.reason
    assert not Path(first.plan).exists()  # the plan for the old fingerprint is gone
    call = (exe.parent / "calls.log").read_text().splitlines()[-1].split()
    assert "--fp16" in call

    Path(upgraded.plan).write_bytes(b"damaged")
    assert trt_engine.ensure_engine(b, man, fingerprint={**fp, "l4t": "36.4.7", "tensorrt": "10.3.0"}).decision \
        == "rebuilt"


def test_failed_build_and_missing_tensorrt_are_typed_errors(tmp_path: Path) -> None:
    b = _bundle(tmp_path, "int8")
    man = Manifest.read(b)
    fp = {"is_jetson": True, "l4t": "36.4.3", "tensorrt": None, "cuda": None, "compute_capability": "8.7",
          "trtexec": None, "tensorrt_python": False}
    with pytest.raises(EngineMissingError) as exc:
        trt_engine.ensure_engine(b, man, fingerprint=fp)
    assert exc.value.exit_code == 11 and "nvidia-jetpack" in exc.value.hint
    exe = _stand_in(tmp_path)
    (exe.parent / "replay.exit").write_text("1")
    with pytest.raises(EngineBuildError) as exc2:
        trt_engine.ensure_engine(b, man, fingerprint={**fp, "trtexec": str(exe)})
    assert exc2.value.exit_code == 8 and "build.log" in exc2.value.hint
    with pytest.raises(EngineMissingError, match="0 DLA core"):
        trt_engine.ensure_engine(b, man, {"dla_core": 0}, fingerprint={**fp, "trtexec": str(exe)})


def test_device_steps_on_a_machine_without_tensorrt_exit_11_naming_the_fix(tmp_path: Path) -> None:
    b = _bundle(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "edgeify_runtime.device_steps", "--bundle", str(b)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 11, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] is False and out["error"]["type"] == "EngineMissingError"
    assert "TensorRT is not installed" in out["error"]["message"] and "nvidia-jetpack" in out["error"]["hint"]


def test_bench_agent_records_trtexec_breakdown_from_a_replayed_real_run(tmp_path: Path) -> None:
    """The agent's trtexec timing of the engine plan: command line and parsed summary (a replayed Jetson log)."""
    from edgeify_runtime.bench import BenchRequest, trtexec_breakdown

    exe = _stand_in(tmp_path, "trt8.4.0_jetson-agx-xavier_loadengine.log")
    record = trt_engine.EngineRecord("reused", "same", "k" * 64, str(tmp_path / "k.plan"),
                                     {"fingerprint": {"trtexec": str(exe)}, "dla_core": None})
    req = BenchRequest(bundle=str(tmp_path), runs=300, min_duration_s=2.0, max_duration_s=30.0)
    out = trtexec_breakdown(record, req, {"x": [1, 3, 224, 224]})
    assert out["available"] and out["exit_code"] == 0
    assert out["command"][1:] == [f"--loadEngine={tmp_path / 'k.plan'}", "--shapes=x:1x3x224x224", "--warmUp=200",
                                  "--iterations=300", "--duration=2"]
    assert out["tensorrt_version"] == "8.4.0" and out["summary"]["gpu_compute_ms"]["median"] == 0.388443
    gone = trt_engine.EngineRecord("reused", "same", "k", "p", {"fingerprint": {"trtexec": None}})
    assert trtexec_breakdown(gone, req, {})["available"] is False
