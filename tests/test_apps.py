"""The embedding API as documented, and the example device apps (examples/apps) driven for real.

One real bundle (the trained digits CNN, built fp32 for x86 with a PNG folder as eval data, so its manifest
has labels and preprocessing) serves every test. The apps run in subprocesses where the host packages
(torch, onnx, edgeify, ...) cannot be imported, as on a device. Every server listens on 127.0.0.1, is stopped
in ``finally``, and every request loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import base64
import doctest
import http.client
import importlib.util
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import edgeify_runtime as er
import numpy as np
import pytest
from _kit import REPO
from edgeify.build import build

APPS = REPO / "examples" / "apps"
#: what a device does not have: importing any of these in an app process raises ImportError
HOST_ONLY = ("torch", "onnx", "onnxscript", "onnxslim", "tensorflow", "edgeify", "pydantic", "typer", "rich",
             "sklearn", "openvino", "nncf")
BLOCKER = """
import sys
BLOCKED = set({blocked!r})
class _DeviceOnly:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(name + " is not installed on this (simulated) device")
        return None
sys.meta_path.insert(0, _DeviceOnly())
"""


# -- fixtures -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pngs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.spec_from_file_location("edgeify_make_pngs", REPO / "examples/images/make_pngs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main(tmp_path_factory.mktemp("pngs") / "digits", count=20)


@pytest.fixture(scope="module")
def bundle(digits: dict[str, Path], pngs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("apps") / "build" / "digits-x86"
    build(digits["model"], target="x86", precision="fp32", engine="onnxruntime", eval=pngs, out=out,
          measure_latency=False)
    return out


@pytest.fixture(scope="module")
def samples(digits: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    with np.load(digits["eval"]) as z:
        return z["x"][:64].astype(np.float32), z["labels"][:64]


def _reference(bundle: Path, x: np.ndarray) -> np.ndarray:
    """Unbatched answers: one Model.run per sample."""
    with er.load(bundle, threads=1) as model:
        return np.concatenate([model.run(x[i:i + 1])["output"] for i in range(len(x))])


def _app(target: str, *args: str, block: tuple[str, ...] = HOST_ONLY, module: bool = False) -> list[str]:
    """argv running an app (a script path, or with module=True a module name run from its folder) with the
    host-only packages blocked."""
    run = (f"import runpy; sys.path.insert(0, {str(APPS)!r}); sys.argv = [{target!r}, *{list(args)!r}]; "
           f"runpy.run_module({target!r}, run_name='__main__', alter_sys=True)" if module else
           f"import runpy; sys.argv = [{target!r}, *{list(args)!r}]; runpy.run_path({target!r}, run_name='__main__')")
    return [sys.executable, "-c", BLOCKER.format(blocked=set(block)) + run]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("EDGEIFY_DEBUG", None)
    return env


# -- the embedding API ----------------------------------------------------------------------------------------

def test_module_docstring_example_runs_against_a_real_bundle(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(bundle.parent.parent)  # the example loads "build/digits-x86", as after `edgeify build`
    tests = [t for t in doctest.DocTestFinder().find(er, "edgeify_runtime") if t.name == "edgeify_runtime"]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 4 and result.failed == 0


def test_signature_labels_and_preprocessing_from_the_manifest(bundle: Path) -> None:
    with er.load(bundle, threads=1) as model:
        assert [(t.name, t.shape, t.dtype, t.layout) for t in model.inputs] == \
            [("x", ("batch", 1, 8, 8), "float32", "NCHW")]
        assert model.labels == [str(i) for i in range(10)]
        prep = model.preprocessing
        assert prep["size"] == [8, 8] and prep["mode"] == "L" and prep["layout"] == "NCHW"
        assert model.accelerator == "CPUExecutionProvider" and model.fallback is None
        assert "on CPUExecutionProvider" in repr(model)


def test_missing_accelerator_is_refused_unless_cpu_fallback_is_asked(bundle: Path,
                                                                     samples: tuple[np.ndarray, np.ndarray]) -> None:
    x = samples[0][:4]
    gpu = {"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
    with pytest.raises(er.EngineMissingError, match="CUDAExecutionProvider"):
        er.load(bundle, options=gpu)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default path warns about nothing
        with er.load(bundle, threads=1) as cpu_model:
            want = cpu_model.run(x)["output"]
    with pytest.warns(er.CPUFallbackWarning, match=r"CUDAExecutionProvider.*loaded on the CPU instead"):
        model = er.load(bundle, options=gpu, threads=1, cpu_fallback=True)
    with model:
        assert model.accelerator == "CPUExecutionProvider"
        assert "CUDAExecutionProvider" in model.fallback
        np.testing.assert_array_equal(model.run(x)["output"], want)


def test_openvino_device_fallback(digits: dict[str, Path], tmp_path: Path) -> None:
    ov = build(digits["model"], target="x86", precision="fp32", engine="openvino", out=tmp_path / "ov",
               measure_latency=False).out
    with pytest.raises(er.EngineMissingError, match="no device 'NPU'"):
        er.load(ov, options={"device": "NPU"})
    with pytest.warns(er.CPUFallbackWarning, match="NPU"), \
            er.load(ov, options={"device": "NPU"}, threads=1, cpu_fallback=True) as model:
        assert model.accelerator == "CPU" and "NPU" in model.fallback
        assert model.run(np.zeros((2, 1, 8, 8), np.float32))["output"].shape == (2, 10)


def test_bundle_for_a_newer_engine_is_refused_with_the_fix(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "newer"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["engine"]["min_version"] = "99.0"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(er.EngineMissingError, match=r"needs onnxruntime >= 99.0") as info:
        er.load(copy, cpu_fallback=True)  # a fallback is about accelerators, never about versions
    assert "pip install --upgrade" in info.value.hint


# -- classify.py ----------------------------------------------------------------------------------------------

def _classify(*args: str, block: tuple[str, ...] = HOST_ONLY) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_app(str(APPS / "classify.py"), *args, block=block), capture_output=True, text=True,
                          timeout=120, env=_env())


def test_classify_image_folder_matches_the_host_preprocessing(bundle: Path, pngs: Path) -> None:
    from edgeify.data import load_dataset

    proc = _classify("--bundle", str(bundle), str(pngs), "--format", "json", "--top-k", "2")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    results = doc["results"]
    assert len(results) == 20 and doc["summary"]["labelled"] == 20
    assert doc["summary"]["accuracy"] >= 0.9
    # the device-side preprocessing gives the very inputs the host built and validated the bundle with
    with er.load(bundle, threads=1) as model:
        data = load_dataset(pngs, list(model.inputs), purpose="evaluation")
        logits = model.run(data.inputs["x"])["output"]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    files = sorted(str(f) for f in pngs.rglob("*.png"))
    assert [r["file"] for r in results] == files
    assert [r["index"] for r in results] == probs.argmax(1).tolist()
    np.testing.assert_allclose([r["score"] for r in results], probs.max(1), atol=2e-6)
    assert all(len(r["top_k"]) == 2 and r["top_k"][0]["label"] == r["label"] for r in results)

    text = _classify("--bundle", str(bundle), str(pngs))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert re.fullmatch(r"\S+/3/\d+\.png\s+3\s+0\.\d{4}|\S+/3/\d+\.png\s+3\s+1\.0000",
                        next(ln for ln in lines if "/3/" in ln))
    assert lines[-1].startswith("accuracy: ") and "/20 (" in lines[-1]


def test_classify_npy_without_pillow(bundle: Path, samples: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    x = samples[0]
    np.save(tmp_path / "one.npy", x[0])          # one sample, no batch axis
    np.save(tmp_path / "stack.npy", x[1:6])      # five samples
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "img.png")
    no_pil = (*HOST_ONLY, "PIL")
    proc = _classify("--bundle", str(bundle), str(tmp_path / "one.npy"), str(tmp_path / "stack.npy"),
                     "--format", "json", block=no_pil)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert [r["file"].rsplit("/", 1)[1] for r in results] == ["one.npy"] + [f"stack.npy[{i}]" for i in range(5)]
    assert [r["index"] for r in results] == _reference(bundle, x[:6]).argmax(1).tolist()
    # an image needs Pillow: a clear message and exit 2, not a traceback
    proc = _classify("--bundle", str(bundle), str(tmp_path / "img.png"), block=no_pil)
    assert proc.returncode == 2 and "pip install pillow" in proc.stderr and "Traceback" not in proc.stderr
    # an array that fits no input shape: exit 5, naming the file and the input
    np.save(tmp_path / "bad.npy", np.zeros((3, 8, 8), np.float32))
    proc = _classify("--bundle", str(bundle), str(tmp_path / "bad.npy"), block=no_pil)
    assert proc.returncode == 5 and "bad.npy" in proc.stderr and "'x'" in proc.stderr


# -- serve.py: the HTTP service --------------------------------------------------------------------------------

class Server:
    """A serve.py subprocess on 127.0.0.1 with a free port; ``stop()`` sends SIGTERM and waits (bounded)."""

    def __init__(self, bundle: Path, *args: str, module: bool = False) -> None:
        target = "serve" if module else str(APPS / "serve.py")
        argv = _app(target, "--bundle", str(bundle), "--host", "127.0.0.1", "--port", "0", "--threads", "1", *args,
                    module=module)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                                     cwd=APPS if module else None)
        self.stderr_lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._pumps = [threading.Thread(target=self._pump_out, daemon=True),
                       threading.Thread(target=self._pump_err, daemon=True)]
        for t in self._pumps:
            t.start()
        self.ready = self._next_event("ready", timeout=90)
        self.port = int(self.ready["port"])

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def _pump_out(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _pump_err(self) -> None:
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def _next_event(self, name: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            event = json.loads(line)
            if event.get("event") == name:
                return event
        self.kill()
        raise AssertionError(f"no {name!r} event from serve.py within {timeout}s; stderr:\n{self.stderr}")

    def request(self, method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[int, Any, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            text = resp.read().decode()
            ctype = resp.getheader("Content-Type", "")
            return resp.status, (json.loads(text) if "json" in ctype else None), text
        finally:
            conn.close()

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait for the exit (bounded); the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        for t in self._pumps:
            t.join(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()


def _metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text; labels must match exactly the given ones (order-free)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        m = re.match(r"([^{ ]+)(?:\{(.*)\})? (\S+)$", line)
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if m.group(1) == name and got == labels:
            return float(m.group(3))
    raise AssertionError(f"no sample {name}{labels} in:\n{text}")


@pytest.fixture(scope="module")
def server(bundle: Path) -> Server:
    srv = Server(bundle, "--max-batch", "8", "--max-wait-ms", "20")
    try:
        yield srv
    finally:
        srv.kill()


def test_health_and_model_endpoints(server: Server, bundle: Path) -> None:
    status, doc, _ = server.request("GET", "/healthz")
    assert status == 200 and doc["status"] == "ok"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert doc["bundle_digest"] == manifest["bundle_digest"] == server.ready["bundle_digest"]
    status, info, _ = server.request("GET", "/v1/model")
    assert status == 200 and info["inputs"] == manifest["inputs"] and info["labels"] == manifest["labels"]
    assert info["batching"] == {"enabled": True, "max_batch": 8, "max_wait_ms": 20.0, "fixed_batch": None,
                                "max_request_samples": 256}


def test_concurrent_requests_are_batched_and_equal_unbatched_answers(
        server: Server, bundle: Path, samples: tuple[np.ndarray, np.ndarray]) -> None:
    x = samples[0][:48]
    want = _reference(bundle, x)
    # 12 clients x 4 requests; clients 0-1 send 2 samples per request (mixed request sizes in one batch)
    jobs: list[list[tuple[int, int]]] = [[] for _ in range(12)]
    i = 0
    for c in range(12):
        for _ in range(4):
            n = 2 if c < 2 else 1
            if i + n <= len(x):
                jobs[c].append((i, n))
                i += n
    answers: dict[int, tuple[int, dict[str, Any]]] = {}
    errors: list[str] = []
    start = threading.Barrier(12, timeout=30)

    def client(work: list[tuple[int, int]]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            start.wait()
            for lo, n in work:
                conn.request("POST", "/v1/predict", body=json.dumps({"inputs": {"x": x[lo:lo + n].tolist()}}),
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    errors.append(f"{resp.status}: {body[:300]!r}")
                    return
                answers[lo] = (n, json.loads(body))
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(w,), daemon=True) for w in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads), errors
    assert sum(n for n, _ in answers.values()) == i == 48
    sizes = []
    for lo, (n, doc) in answers.items():
        got = np.asarray(doc["outputs"]["output"], np.float32)
        assert got.shape == (n, 10)
        np.testing.assert_allclose(got, want[lo:lo + n], rtol=1e-5, atol=1e-6)
        assert [p["index"] for p in doc["predictions"]] == want[lo:lo + n].argmax(1).tolist()
        assert [p["label"] for p in doc["predictions"]] == [str(k) for k in want[lo:lo + n].argmax(1)]
        sizes.append(doc["batch"]["size"])
    assert max(sizes) > 1, sizes  # requests really shared engine calls

    status, _, text = server.request("GET", "/metrics")
    assert status == 200
    batches = _metric(text, "edgeify_batch_size_count")
    singles = _metric(text, "edgeify_batch_size_bucket", le="1.0")
    assert batches - singles > 0, "the batch-size histogram has no batch above 1"
    assert _metric(text, "edgeify_batch_size_sum") >= 48
    assert batches < len(answers) == 40  # fewer engine calls than requests
    assert _metric(text, "edgeify_requests_total", endpoint="/v1/predict", code="200") >= 40
    assert _metric(text, "edgeify_request_duration_seconds_count", endpoint="/v1/predict") >= 40
    assert _metric(text, "edgeify_model_info", bundle_digest=server.ready["bundle_digest"], target="x86-avx2",
                   engine="onnxruntime", engine_version=er.available_engines()["onnxruntime"], precision="fp32",
                   accelerator="CPUExecutionProvider", max_batch="8", max_wait_ms="20.0") == 1


def test_compact_b64_tensors(server: Server, bundle: Path, samples: tuple[np.ndarray, np.ndarray]) -> None:
    x = samples[0][:3]
    tensor = {"b64": base64.b64encode(x.astype("<f4").tobytes()).decode(), "dtype": "float32",
              "shape": list(x.shape)}
    want = _reference(bundle, x)
    for inputs in ({"x": tensor}, tensor):  # by name, or alone for a single-input model
        status, doc, text = server.request("POST", "/v1/predict", {"inputs": inputs, "encoding": "b64"})
        assert status == 200, text
        out = doc["outputs"]["output"]
        assert out["dtype"] == "float32" and out["shape"] == [3, 10]
        got = np.frombuffer(base64.b64decode(out["b64"]), "<f4").reshape(out["shape"])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("body", "status", "needle"), [
    (b"{not json", 400, "not valid JSON"),
    ({"x": [1.0]}, 400, '{"inputs"'),
    ({"inputs": {"image": [[[[0.0] * 8] * 8]]}}, 422, "unknown input(s) ['image']; missing input(s) ['x']"),
    ({"inputs": [[[[0.0] * 8] * 7]]}, 422, "dimension 2 must be 8"),
    ({"inputs": [[0.0] * 8, [0.0] * 7]}, 400, "not a rectangular array"),
    ({"inputs": [[[["a"] * 8] * 8]]}, 400, "expected numbers"),
    ({"inputs": {"x": {"b64": "AAAA", "dtype": "float32", "shape": [1, 1, 8, 8]}}}, 400, "b64 holds 3 bytes"),
    ({"inputs": np.zeros((257, 1, 8, 8)).tolist()}, 413, "the limit is 256"),
])
def test_malformed_requests_get_a_4xx_with_a_clear_message(server: Server, body: Any, status: int,
                                                           needle: str) -> None:
    got, doc, text = server.request("POST", "/v1/predict", body)
    assert got == status, text
    assert needle in doc["error"]["message"], doc
    assert server.request("GET", "/healthz")[0] == 200  # and the service keeps serving


def test_shutdown_is_clean_when_run_as_a_module(bundle: Path) -> None:
    srv = Server(bundle, "--max-batch", "4", module=True)
    try:
        assert srv.request("GET", "/healthz")[0] == 200
        assert srv.request("POST", "/v1/predict", {"inputs": np.zeros((2, 1, 8, 8)).tolist()})[0] == 200
        code = srv.stop(timeout=30)
        out_tail = srv._next_event("stopped", timeout=5)
    finally:
        srv.kill()
    assert code == 0, srv.stderr
    assert out_tail["pid"] == srv.ready["pid"]
    assert "Traceback" not in srv.stderr and "ERROR" not in srv.stderr, srv.stderr
    with pytest.raises(OSError):  # the port is closed
        http.client.HTTPConnection("127.0.0.1", srv.port, timeout=2).connect()


def test_startup_errors_exit_with_the_runtime_codes(bundle: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle, tampered)
    with open(tampered / "model.onnx", "ab") as f:
        f.write(b"\0")
    proc = subprocess.run(_app(str(APPS / "serve.py"), "--bundle", str(tampered), "--port", "0"),
                          capture_output=True, text=True, timeout=60, env=_env())
    assert proc.returncode == 12 and "integrity check" in proc.stderr and "fix:" in proc.stderr
    assert proc.stdout == ""
    proc = subprocess.run(_app(str(APPS / "serve.py"), "--bundle", str(bundle), "--max-batch", "0"),
                          capture_output=True, text=True, timeout=60, env=_env())
    assert proc.returncode == 2 and "--max-batch must be >= 1" in proc.stderr


# -- the batching core, in process ------------------------------------------------------------------------------

def _serve_module() -> Any:
    spec = importlib.util.spec_from_file_location("edgeify_example_serve", APPS / "serve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fixed_batch_bundle_runs_in_padded_calls_of_its_size(bundle: Path, tmp_path: Path,
                                                             samples: tuple[np.ndarray, np.ndarray]) -> None:
    fixed = tmp_path / "fixed4"
    shutil.copytree(bundle, fixed)
    manifest = json.loads((fixed / "manifest.json").read_text())
    manifest["inputs"][0]["shape"][0] = 4
    manifest["outputs"][0]["shape"][0] = 4
    (fixed / "manifest.json").write_text(json.dumps(manifest))
    serve = _serve_module()
    x = samples[0][:7]
    with er.load(fixed, threads=1) as model:
        calls: list[tuple[int, ...]] = []
        run = model.run
        model.run = lambda feeds: calls.append(feeds["x"].shape) or run(feeds)  # record, then the real run
        service = serve.Service(model, max_batch=8)
        assert service.fixed_batch == 4 and service.batchable
        got = service.infer({"x": x})["output"]
    assert calls == [(4, 1, 8, 8), (4, 1, 8, 8)]
    np.testing.assert_allclose(got, _reference(bundle, x), rtol=1e-5, atol=1e-6)


def test_stop_answers_every_queued_request(bundle: Path, samples: tuple[np.ndarray, np.ndarray]) -> None:
    serve = _serve_module()
    x = samples[0][:10]

    async def scenario(service: Any) -> list[Any]:
        service.batcher.start()
        feeds = [service.parse(json.dumps({"inputs": x[i:i + 1].tolist()}).encode()) for i in range(10)]
        tasks = [asyncio.ensure_future(service.batcher.submit(f, n, key)) for f, n, key, _ in feeds]
        await asyncio.sleep(0.05)  # queued; the batch loop waits for more (up to 16 samples or 1 s)
        await asyncio.wait_for(service.batcher.stop(drain_timeout=10), 20)
        late = await asyncio.gather(service.batcher.submit(*feeds[0][:3]), return_exceptions=True)
        return [*await asyncio.gather(*tasks, return_exceptions=True), *late]

    with er.load(bundle, threads=1) as model:
        service = serve.Service(model, max_batch=16, max_wait_ms=1000)
        t0 = time.perf_counter()
        results = asyncio.run(asyncio.wait_for(scenario(service), 30))
        elapsed = time.perf_counter() - t0
    answered, late = results[:10], results[10]
    assert all(isinstance(r, tuple) for r in answered), answered
    np.testing.assert_allclose(np.concatenate([r[0]["output"] for r in answered]), _reference(bundle, x),
                               rtol=1e-5, atol=1e-6)
    assert [r[1]["size"] for r in answered] == [10] * 10  # one batch, sent when stop() began
    assert elapsed < 0.9  # stop() did not sit out the 1 s max wait
    assert isinstance(late, serve.HTTPError) and late.status == 503
