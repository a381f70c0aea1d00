"""The benchmark agent end to end, as the deployer runs it: a child process, JSON in, JSON out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import edgeify_runtime as er
import numpy as np
import pytest
from edgeify_runtime.bench import BenchRequest, RequestError, input_shapes, resolve_batch, save_npz
from edgeify_runtime.fingerprint import default_threads

FAST = {"warmup": 2, "runs": 20, "min_duration_s": 0.05, "max_duration_s": 30}


def agent(request: Any, env: dict[str, str], *, via: str = "stdin", tmp: Path | None = None,
          extra_env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    """Run the agent; return (exit code, the single JSON object on stdout, stderr)."""
    text = request if isinstance(request, str) else json.dumps(request)
    args = [sys.executable, "-m", "edgeify_runtime.bench"]
    stdin = text
    if via == "file":
        assert tmp is not None
        path = tmp / "request.json"
        path.write_text(text, encoding="utf-8")
        args += ["--request", str(path)]
        stdin = ""
    proc = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=300,
                          env={**env, **(extra_env or {})})
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, f"stdout must be one JSON line, got: {proc.stdout!r}\nstderr: {proc.stderr}"
    return proc.returncode, json.loads(lines[0]), proc.stderr


def check_result(res: dict[str, Any], *, runs: int) -> None:
    assert res["ok"] is True
    proto = res["protocol"]
    assert proto["runs_done"] >= runs == proto["runs"]
    assert len(res["samples_ms"]) == proto["runs_done"]
    assert proto["timer"] == "perf_counter_ns" and proto["threads"] >= 1 and proto["batch"] >= 1
    lat = res["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert lat["cv"] == pytest.approx(lat["std"] / lat["mean"], rel=1e-3)
    assert min(res["samples_ms"]) == pytest.approx(lat["min"])
    assert max(res["samples_ms"]) == pytest.approx(lat["max"])
    total_s = sum(res["samples_ms"]) / 1000
    assert res["throughput_ips"] == pytest.approx(proto["runs_done"] * proto["batch"] / total_s, rel=1e-3)
    assert total_s * 1000 >= proto["min_duration_s"] * 1000 * 0.5  # timed runs fill most of the min duration
    assert res["load_ms"] > 0 and res["first_inference_ms"] > 0 and res["peak_rss_mb"] > 10
    assert res["agent_version"] == er.__version__
    assert res["fingerprint"]["arch"] and "onnxruntime" in res["fingerprint"]["engines"]


def test_bench_onnxruntime_end_to_end(kit, agent_env, tmp_path):
    bundle = kit.ort_bundle("gemm")
    code, res, err = agent({"bundle": str(bundle), **FAST, "batch": 4, "threads": 1}, agent_env())
    assert code == 0, res
    check_result(res, runs=20)
    manifest = er.Manifest.read(bundle)
    assert res["bundle_digest"] == manifest.bundle_digest
    assert res["engine"] == {"name": "onnxruntime", "version": __import__("onnxruntime").__version__,
                             "module": "onnxruntime", "accelerator": "CPUExecutionProvider"}
    assert res["precision"] == "fp32" and res["target"] == "x86-avx2"
    assert res["protocol"]["batch"] == 4 and res["protocol"]["threads"] == 1
    assert res["protocol"]["input_shapes"] == {"x": [4, 8]}
    assert res["verify_ms"] >= 0 and res["import_ms"] > 0
    assert res["protocol"]["stopped_by"] == "runs_and_min_duration"
    assert "[edgeify bench]" in err  # progress on stderr


def test_bench_defaults_and_request_file(kit, agent_env, tmp_path):
    bundle = kit.ort_bundle("conv")
    req = {"bundle": str(bundle), "warmup": 0, "runs": 5, "min_duration_s": 0, "engine": None,
           "threads": None, "batch": None, "verify": False}
    code, res, _ = agent(req, agent_env(), via="file", tmp=tmp_path)
    assert code == 0, res
    check_result(res, runs=5)
    assert res["protocol"]["batch"] == 1  # the fixed batch dim
    assert res["protocol"]["threads"] == default_threads()  # physical cores (this process may use)
    assert res["verify_ms"] is None and res["protocol"]["warmup_done"] == 0


def test_bench_openvino(kit, agent_env):
    pytest.importorskip("openvino")
    code, res, _ = agent({"bundle": str(kit.ov_bundle("conv")), **FAST}, agent_env())
    assert code == 0, res
    check_result(res, runs=20)
    assert res["engine"]["name"] == "openvino" and res["engine"]["module"] == "openvino"


def test_bench_max_duration_stops_early(kit, agent_env):
    req = {"bundle": str(kit.ort_bundle("gemm")), "warmup": 1, "runs": 10**9, "min_duration_s": 0,
           "max_duration_s": 0.3}
    code, res, err = agent(req, agent_env())
    assert code == 0, res
    proto = res["protocol"]
    assert proto["stopped_by"] == "max_duration" and 0 < proto["runs_done"] < 10**9
    assert len(res["samples_ms"]) == proto["runs_done"]
    assert proto["timed_phase_s"] < 5
    assert "max_duration" in err


def test_bench_parity_npz(kit, agent_env, tmp_path):
    bundle = kit.ort_bundle("two_input")
    rng = np.random.default_rng(7)
    inputs = {"x": rng.standard_normal((3, 4)).astype(np.float32), "k": rng.integers(0, 9, (3, 4))}
    np.savez(tmp_path / "in.npz", **inputs)
    out_path = tmp_path / "outputs"  # no .npz suffix: the agent must write exactly here
    req = {"bundle": str(bundle), **FAST, "inputs_npz": str(tmp_path / "in.npz"),
           "outputs_npz": str(out_path)}
    code, res, _ = agent(req, agent_env())
    assert code == 0, res
    assert res["extra"]["parity"]["outputs"] == {"z": {"shape": [3, 4], "dtype": "float32"},
                                        "y": {"shape": [3, 4], "dtype": "float32"}}
    with np.load(out_path, allow_pickle=False) as z:
        got = {k: z[k] for k in z.files}
    assert list(got) == ["z", "y"]
    with er.load(bundle) as model:
        want = model.run(inputs)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    np.testing.assert_array_equal(got["y"], inputs["x"] + inputs["k"].astype(np.float32))


def test_bench_parity_wrong_inputs_exit_5(kit, agent_env, tmp_path):
    np.savez(tmp_path / "in.npz", image=np.zeros((1, 3, 8, 8), np.float32))
    req = {"bundle": str(kit.ort_bundle("gemm")), **FAST, "inputs_npz": str(tmp_path / "in.npz"),
           "outputs_npz": str(tmp_path / "out.npz")}
    code, res, _ = agent(req, agent_env())
    assert code == 5 and res["ok"] is False
    assert res["error"]["type"] == "InputSignatureError" and "'image'" in res["error"]["message"]
    assert not (tmp_path / "out.npz").exists()


def test_bench_missing_bundle_exit_12(agent_env, tmp_path):
    code, res, err = agent({"bundle": str(tmp_path / "no-such-bundle")}, agent_env())
    assert code == 12
    assert res == {"ok": False, "agent_version": er.__version__, "error": {
        "type": "BundleError", "exit_code": 12, "hint": res["error"]["hint"],
        "message": f"{tmp_path / 'no-such-bundle'}: no manifest.json; not an edgeify bundle"}}
    assert "Traceback" not in err


def test_bench_tampered_bundle_exit_12(kit, agent_env):
    bundle = kit.ort_bundle("gemm")
    (bundle / "model.onnx").write_bytes(b"not a model")
    code, res, _ = agent({"bundle": str(bundle), **FAST}, agent_env())
    assert code == 12 and "integrity" in res["error"]["message"]


def test_bench_engine_too_old_exit_11(kit, agent_env):
    code, res, _ = agent({"bundle": str(kit.ort_bundle("gemm", min_version="999.0")), **FAST}, agent_env())
    assert code == 11 and res["error"]["type"] == "EngineMissingError" and "999.0" in res["error"]["message"]


@pytest.mark.parametrize(("request_text", "needle"), [
    ("{not json", "not valid JSON"),
    ('["a list"]', "JSON object"),
    ("{}", "needs `bundle`"),
    ('{"bundle": "b", "runz": 3}', "unknown request field(s) ['runz']"),
    ('{"bundle": "b", "runs": 0}', "'runs' must be >= 1"),
    ('{"bundle": "b", "threads": true}', "not a bool"),
    ('{"bundle": "b", "warmup": "10"}', "'warmup' must be int"),
    ('{"bundle": "b", "inputs_npz": "in.npz"}', "needs outputs_npz"),
])
def test_bench_bad_requests_exit_2(agent_env, request_text, needle):
    code, res, _ = agent(request_text, agent_env())
    assert code == 2 and res["ok"] is False and res["error"]["type"] == "RequestError"
    assert needle in res["error"]["message"]


def test_bench_unexpected_error_exit_1_traceback_only_with_debug(kit, agent_env):
    # a dynamic non-batch dim fed as 0 makes the engine itself fail: an unexpected (non-edgeify) error
    bundle = kit.ort_bundle("gemm")
    kit.rewrite_manifest(bundle, lambda m: m["inputs"][0].update(shape=["batch", "features"]))
    req = {"bundle": str(bundle), **FAST, "input_shapes": {"x": [1, 3]}}
    code, res, err = agent(req, agent_env())
    assert code == 1 and res["ok"] is False and res["error"]["exit_code"] == 1
    assert res["error"]["type"] and res["error"]["message"]
    assert "Traceback" not in err
    code, res, err = agent(req, agent_env(), extra_env={"EDGEIFY_DEBUG": "1"})
    assert code == 1 and "Traceback" in err


def test_bench_sigterm_reports_json_and_130(kit, agent_env):
    import signal
    import time

    req = {"bundle": str(kit.ort_bundle("gemm")), "warmup": 0, "runs": 10**9, "max_duration_s": 60}
    proc = subprocess.Popen([sys.executable, "-m", "edgeify_runtime.bench"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=agent_env())
    try:
        assert proc.stdin is not None and proc.stderr is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(req))
        proc.stdin.close()
        deadline = time.monotonic() + 60
        while "timing at least" not in proc.stderr.readline():  # wait until the timed phase runs
            assert time.monotonic() < deadline and proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    res = json.loads(out)
    assert res["ok"] is False and res["error"]["type"] == "Interrupted"


def test_skipped_providers_are_the_results_fallback(kit, agent_env):
    """A provider fallback order the device cannot honour runs on the CPU and says so (issue 11.8)."""
    from edgeify_runtime.result import BenchResult

    opts = {"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"], "provider_fallback": True}
    code, res, _ = agent({"bundle": str(kit.ort_bundle("gemm")), **FAST, "options": opts, "samples": False},
                         agent_env())
    assert code == 0, res
    assert "samples_ms" not in res and res["sample_count"] == res["protocol"]["runs_done"]
    fb = BenchResult.from_dict(res).fallback
    assert fb is not None and fb.used and fb.skipped == ("CUDAExecutionProvider",)
    assert fb.active == ("CPUExecutionProvider",) and "CUDAExecutionProvider" in fb.reason


def test_dynamic_axes_are_named_and_the_batch_is_what_ran(kit, agent_env):
    bundle = kit.ort_bundle("gemm")
    kit.rewrite_manifest(bundle, lambda m: m["inputs"][0].update(shape=["batch", 8]))
    code, res, _ = agent({"bundle": str(bundle), **FAST, "input_shapes": {"x": [3, 8]}}, agent_env())
    assert code == 0, res
    assert res["protocol"]["dynamic_axes"] == {"x": {"batch": 3}} and res["protocol"]["batch"] == 3


def test_the_agent_enforces_the_hosts_deadline_itself(kit, agent_env):
    """A device without `timeout` still stops: EDGEIFY_DEADLINE_S makes the agent end with exit 25 (issue 11.12)."""
    req = {"bundle": str(kit.ort_bundle("gemm")), "warmup": 0, "runs": 10**9, "min_duration_s": 60,
           "max_duration_s": 60}
    code, res, _ = agent(req, agent_env(), extra_env={"EDGEIFY_DEADLINE_S": "1"})
    assert code == 25 and res["ok"] is False and res["error"]["exit_code"] == 25
    assert res["error"]["type"] == "DeadlineError" and "1 s deadline" in res["error"]["message"]


def test_bench_help_goes_to_stdout(agent_env):
    proc = subprocess.run([sys.executable, "-m", "edgeify_runtime.bench", "--help"], capture_output=True,
                          text=True, timeout=60, env=agent_env())
    assert proc.returncode == 0 and "min_duration_s" in proc.stdout


def test_request_parsing_and_batch_rules():
    req = BenchRequest.from_dict({"bundle": "b", "warmup": None, "seed": 3})
    assert req.warmup == 10 and req.runs == 100 and req.min_duration_s == 1.0 and req.max_duration_s == 120
    assert req.seed == 3 and req.verify is True and req.batch is None and req.threads is None
    fixed = (er.TensorSpec("image", (1, 3, 8, 8), "float32", "NCHW"),)
    dynamic = (er.TensorSpec("x", ("n", "seq"), "int64"),)
    nhwc_dyn = (er.TensorSpec("image", (8, "h", "w", "n"), "float32", "HWCN"),)
    assert resolve_batch(fixed, None) == 1 and resolve_batch(dynamic, None) == 1
    assert resolve_batch(dynamic, 8) == 8
    with pytest.raises(RequestError, match="fixed"):
        resolve_batch(fixed, 4)
    assert input_shapes(dynamic, 8) == {"x": [8, 1]}
    assert input_shapes(dynamic, 8, {"x": [2, 16]}) == {"x": [2, 16]}
    assert input_shapes(nhwc_dyn, 4) == {"image": [8, 1, 1, 4]}  # batch axis from the layout's N
    with pytest.raises(RequestError, match="unknown input"):
        input_shapes(dynamic, 1, {"y": [1]})


def test_save_npz_accepts_any_output_name(tmp_path):
    arrays = {"file": np.arange(3), "allow_pickle": np.ones(2), "a/b:0": np.zeros((1, 2), np.float16)}
    save_npz(str(tmp_path / "o"), arrays)
    with np.load(tmp_path / "o", allow_pickle=False) as z:
        assert sorted(z.files) == sorted(arrays)
        np.testing.assert_array_equal(z["a/b:0"], arrays["a/b:0"])
    assert [p.name for p in tmp_path.iterdir()] == ["o"]  # no temp file left behind


def test_stdout_is_reserved_for_the_result(capfd):
    """Anything written to fd 1 while the agent works (Python or native code) lands on stderr."""
    import os

    from edgeify_runtime.envelope import _stdout_reserved

    with _stdout_reserved() as out:
        print("python chatter")
        os.write(1, b"native chatter\n")
        out.write('{"ok": true}\n')
    print("after")
    captured = capfd.readouterr()
    assert captured.out == '{"ok": true}\nafter\n'
    assert "python chatter" in captured.err and "native chatter" in captured.err
