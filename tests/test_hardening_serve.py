"""The device service against hostile or unlucky clients (issue 24, items 1 and 4), on a real
``python -m edgeify_runtime.serve`` over 127.0.0.1: never an invalid JSON document (NaN/Infinity), whatever the
inputs or the model's outputs; no absolute bundle path in ``/v1/model``.

Every response body here is read with a strict JSON parser (``NaN``, ``Infinity`` refused) as a strict client
(Go, JavaScript ``JSON.parse``, Rust serde) would read it."""

from __future__ import annotations

import http.client
import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_bench() -> Any:
    spec = importlib.util.spec_from_file_location("edgeify_serve_load", REPO / "benchmarks" / "serve_load.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bench = _load_bench()


def strict_loads(text: bytes | str) -> Any:
    """json.loads that refuses NaN, Infinity and -Infinity (they are not JSON)."""
    def refuse(const: str) -> Any:
        raise ValueError(f"invalid JSON constant {const}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    bundle = bench._bundle(tmp_path_factory.mktemp("hardening-serve"))
    proc, port = bench.start(bench.serve_argv(bundle), env=dict(os.environ))
    proc.bundle = bundle  # type: ignore[attr-defined]
    proc.port = port  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        bench.stop(proc)


def _request(port: int, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


OVERFLOWS_FP32 = [[1e300] * 16]          # finite in JSON, infinite as float32
NAN_OUTPUT = [[3e38] * 16]               # finite float32 inputs whose Gemm outputs overflow (inf, inf - inf)


def test_v1_predict_never_answers_nan(service: Any) -> None:
    port = service.port
    # an input that overflows the model's float32: refused, naming the input
    status, body, _ = _request(port, "POST", "/v1/predict", json.dumps({"inputs": {"x": OVERFLOWS_FP32}}).encode())
    doc = strict_loads(body)
    assert status == 422 and "float32" in doc["error"]["message"] and "'x'" in doc["error"]["message"], doc
    # NaN / Infinity literals in the request are not JSON either: 400
    status, body, _ = _request(port, "POST", "/v1/predict", b'{"inputs": {"x": [[NaN' + b", 0.0" * 15 + b"]]}}")
    assert status == 400 and "NaN" in strict_loads(body)["error"]["message"]
    status, body, _ = _request(port, "POST", "/v1/predict", b'{"inputs": {"x": [[1e400' + b", 0.0" * 15 + b"]]}}")
    assert status == 400, body
    strict_loads(body)
    # outputs that are not finite: a clear error in JSON, the values themselves with the b64 encoding
    status, body, _ = _request(port, "POST", "/v1/predict", json.dumps({"inputs": {"x": NAN_OUTPUT}}).encode())
    doc = strict_loads(body)
    assert status == 500 and doc["error"]["type"] == "non_finite_output", doc
    assert "'y'" in doc["error"]["message"] and '"encoding": "b64"' in doc["error"]["message"], doc
    status, body, _ = _request(port, "POST", "/v1/predict",
                               json.dumps({"inputs": {"x": NAN_OUTPUT}, "encoding": "b64"}).encode())
    assert status == 200, body
    out = strict_loads(body)["outputs"]["y"]
    import base64

    y = np.frombuffer(base64.b64decode(out["b64"]), out["dtype"]).reshape(out["shape"])
    assert not np.isfinite(y).all()
    # the service keeps serving
    status, body, _ = _request(port, "POST", "/v1/predict", json.dumps({"inputs": {"x": [[0.5] * 16]}}).encode())
    assert status == 200 and all(math.isfinite(v) for v in strict_loads(body)["outputs"]["y"][0])


def _infer_doc(x: list[list[float]], binary_out: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {"inputs": [{"name": "x", "shape": [len(x), 16], "datatype": "FP32",
                                       "data": [v for row in x for v in row]}]}
    if binary_out:
        doc["outputs"] = [{"name": "y", "parameters": {"binary_data": True}}]
    return doc


def test_v2_infer_never_answers_nan(service: Any) -> None:
    port, path = service.port, "/v2/models/model/infer"
    status, body, _ = _request(port, "POST", path, json.dumps(_infer_doc(OVERFLOWS_FP32)).encode())
    doc = strict_loads(body)
    assert status == 400 and "FP32" in doc["error"], doc
    status, body, _ = _request(port, "POST", path, json.dumps(_infer_doc(NAN_OUTPUT)).encode())
    doc = strict_loads(body)
    assert status == 500 and "binary_data" in doc["error"] and "'y'" in doc["error"], doc
    # the binary tensor extension carries them: a strict JSON header, then raw float32
    status, body, headers = _request(port, "POST", path, json.dumps(_infer_doc(NAN_OUTPUT, True)).encode())
    assert status == 200, body
    n = int(headers["inference-header-content-length"])
    head = strict_loads(body[:n])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 16
    assert not np.isfinite(np.frombuffer(body[n:], np.float32)).all()
    # binary input of non-finite values: accepted (raw bytes can carry them); JSON outputs refused cleanly
    x = np.full((1, 16), np.inf, np.float32)
    head_in = json.dumps({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32",
                                      "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    status, body, _ = _request(port, "POST", path, head_in + x.tobytes(),
                               {"Inference-Header-Content-Length": str(len(head_in))})
    assert status == 500 and "binary_data" in strict_loads(body)["error"]


def test_grpc_refuses_nothing_it_can_carry(service: Any) -> None:
    """gRPC carries raw bytes, so non-finite outputs are fine there; a decoded request with typed contents that
    overflow is a clean INVALID_ARGUMENT (covered by the decoder test in test_fuzz)."""
    from edgeify_runtime.serve.grpc_server import decode_message, encode_message
    from edgeify_runtime.serve.proto import grpc_predict_v2_pb2 as pb

    reply = pb.ModelInferResponse.FromString(encode_message("m", "1", {"y": np.full((1, 4), np.nan, np.float32)}))
    assert np.isnan(np.frombuffer(reply.raw_output_contents[0], np.float32)).all()
    req = pb.ModelInferRequest(model_name="m")
    t = req.inputs.add(name="x", datatype="FP32", shape=[1, 1])
    t.contents.fp32_contents.append(1.0)
    _, feeds = decode_message(req.SerializeToString())
    assert feeds["x"].tolist() == [[1.0]]


def test_model_info_does_not_leak_the_bundle_path(service: Any) -> None:
    status, body, _ = _request(service.port, "GET", "/v1/model")
    assert status == 200
    doc = strict_loads(body)
    text = body.decode()
    bundle = Path(service.bundle).absolute()
    assert str(bundle) not in text and str(bundle.parent) not in text, doc
    assert doc["bundle"] == bundle.name  # the name it is served under, not where it lives


# -- slow clients (item 2) ------------------------------------------------------------------------------------------

def _start_limited(bundle: Path, nofile: int, *extra: str) -> Any:
    """The service with at most ``nofile`` open files (soft and hard), as a small device or a container has."""
    import resource
    import subprocess
    import threading
    import time

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen(bench.serve_argv(bundle, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=limit)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        event = json.loads(line)
        if event.get("event") == "ready":
            proc.ready = event  # type: ignore[attr-defined]
            # drain stderr (a full pipe would block the service's logging, and with it the service)
            proc.errors = []  # type: ignore[attr-defined]
            threading.Thread(target=lambda: proc.errors.extend(proc.stderr), daemon=True).start()
            return proc
    proc.kill()
    raise RuntimeError(f"the service did not start: {proc.stderr.read()}")


def _half_requests(port: int, n: int) -> list[Any]:
    import socket

    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # half a request, then nothing
        socks.append(s)
    return socks


def test_slow_clients_do_not_lock_out_healthz(service: Any) -> None:
    """300 connections that send half a request and stop, against a service limited to 256 open files: /healthz
    and /metrics keep answering (the oldest idle half-requests are closed to make room), and the service
    never runs out of file descriptors. Bounded: loopback only, every socket has a timeout and is closed."""
    proc = _start_limited(service.bundle, 256)
    port = proc.ready["port"]
    socks: list[Any] = []
    try:
        socks = _half_requests(port, 300)
        for path in ("/healthz", "/metrics", "/healthz"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                assert resp.status == 200, path
                resp.read()
            finally:
                conn.close()
    finally:
        for s in socks:
            s.close()
        bench.stop(proc)
    assert not [ln for ln in proc.errors if "Too many open files" in ln]  # never reached EMFILE


def test_a_half_request_is_closed_after_the_header_timeout(service: Any) -> None:
    import socket
    import time

    proc = _start_limited(service.bundle, 1024, "--header-timeout", "1", "--body-timeout", "1")
    port = proc.ready["port"]
    try:
        (s,) = _half_requests(port, 1)
        t0 = time.monotonic()
        with s:
            s.settimeout(20)
            got = s.recv(1024)
        assert time.monotonic() - t0 < 15  # closed by the server, not by our own timeout
        assert got == b"" or got.startswith(b"HTTP/1.1 408"), got
        # a body that stops half-way: 408 after the body timeout
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"inputs\": ")
            got = b""
            while chunk := s.recv(4096):
                got += chunk
        assert got.startswith(b"HTTP/1.1 408"), got
        assert b"--body-timeout" in got
    finally:
        bench.stop(proc)
