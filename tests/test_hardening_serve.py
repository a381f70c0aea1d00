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
