"""The Open Inference Protocol (issue 15.1-15.2) against a client nobody here wrote: ``tritonclient[http,grpc]``
2.73.0, installed in a venv of its own (it pins protobuf<7, which clashes with this environment), driving a live
``python -m edgeify_runtime.serve --port 0 --grpc-port 0`` on 127.0.0.1 over REST and gRPC."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import edgeify_runtime as er
import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "benchmarks"))
import serve_load  # noqa: E402  (start/stop a real service; the tiny real bundle)

TRITONCLIENT = "tritonclient[http,grpc]==2.73.0"
TOKEN = "oip-token-0123456789abcdef"


@pytest.fixture(scope="session")
def client_python() -> Path:
    """A venv with tritonclient, made once per machine under the user's cache dir (created when missing, so a
    fresh machine builds it in the first session: about 30 s)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeify-tests" / "tritonclient-2.73.0"
    py = cache / "bin" / "python"
    marker = cache / ".installed"
    if not marker.is_file():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(cache)], check=True, timeout=120)
        proc = subprocess.run([str(py), "-m", "pip", "install", "-q", TRITONCLIENT], capture_output=True,
                              text=True, timeout=600)
        if proc.returncode != 0:
            pytest.fail(f"cannot install {TRITONCLIENT} into {cache}: {proc.stderr[-2000:]}")
        marker.write_text(TRITONCLIENT + "\n")
    return py


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return serve_load._bundle(tmp_path_factory.mktemp("oip"))


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        m = re.match(r"([^{ ]+)(?:\{(.*)\})? (\S+)$", line)
        if m and m.group(1) == name and dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")) == labels:
            return float(m.group(3))
    raise AssertionError(f"no {name}{labels}")


def test_tritonclient_rest_and_grpc(client_python: Path, bundle: Path, tmp_path: Path) -> None:
    x = np.random.default_rng(3).standard_normal((5, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    with er.load(bundle, threads=1) as model:
        want = model.run({"x": x})["y"]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    proc, port = serve_load.start(serve_load.serve_argv(bundle, "--grpc-port", "0", "--max-batch", "8",
                                                        "--max-wait-ms", "20", "--token-file", str(token_file)),
                                  env=dict(os.environ))
    try:
        ready = proc.ready  # type: ignore[attr-defined]
        assert ready["model"] == "model" and ready["port"] == port and ready["token"] is True
        grpc_port = int(ready["grpc_port"])
        assert grpc_port > 0
        run = subprocess.run([str(client_python), str(HERE / "triton_client.py"), f"127.0.0.1:{port}",
                              f"127.0.0.1:{grpc_port}", "model", str(tmp_path / "x.npy"), TOKEN],
                             capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, run.stderr[-3000:]
        out = json.loads(run.stdout)
        # without the token, the real client gets the protocol's refusal
        anon = subprocess.run([str(client_python), "-c",
                               "import tritonclient.http as h, sys; c = h.InferenceServerClient(sys.argv[1]); "
                               "print(c.is_server_ready())", f"127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=60)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        metrics = conn.getresponse().read().decode()
        conn.close()
    finally:
        serve_load.stop(proc)
    assert anon.stdout.strip() == "False" or anon.returncode != 0
    assert all(out[k] is True for k in ("http_live", "http_ready", "http_model_ready", "grpc_live", "grpc_ready",
                                        "grpc_model_ready"))
    meta = out["http_metadata"]
    assert meta["name"] == "model" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 16]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]
    gmeta = out["grpc_metadata"]
    assert [int(d) for d in gmeta["inputs"][0]["shape"]] == [-1, 16] and gmeta["inputs"][0]["datatype"] == "FP32"
    for key in ("http_binary", "http_json", "grpc"):  # equal to Model.run on the same inputs
        np.testing.assert_allclose(np.asarray(out[key], np.float32), want, rtol=1e-5, atol=1e-6)
    assert not out["concurrent_errors"] and len(out["concurrent"]) == 32
    for j, y in out["concurrent"]:
        np.testing.assert_allclose(np.asarray(y, np.float32)[0], want[j], rtol=1e-5, atol=1e-6)
    batches = _metric(metrics, "edgeify_batch_size_count")
    assert batches - _metric(metrics, "edgeify_batch_size_bucket", le="1.0") > 0  # some engine calls held >1 request
    err = out["errors"]
    assert "unknown model 'nope'" in err["http_unknown_model"]["message"]
    assert "NOT_FOUND" in err["grpc_unknown_model"]["status"]
    assert err["http_wrong_shape"]["status"] == "400" and "dimension 1 must be 16" in err["http_wrong_shape"]["message"]
    assert "INVALID_ARGUMENT" in err["grpc_wrong_shape"]["status"]
    assert err["http_wrong_datatype"]["status"] == "400" and "expected datatype float32" in \
        err["http_wrong_datatype"]["message"]
    assert "INVALID_ARGUMENT" in err["grpc_wrong_datatype"]["status"]
    assert "unknown input(s) ['image']" in err["http_unknown_input"]["message"]

