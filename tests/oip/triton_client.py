"""Runs in its own venv with tritonclient[http,grpc]==2.73.0 (not this project's environment): drives a live
edgeify service the way an outside client would and prints one JSON object with what it saw.

    python triton_client.py HTTP_ADDR GRPC_ADDR MODEL INPUT.npy [TOKEN]
"""

import json
import sys
import threading

import numpy as np
import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.utils import InferenceServerException


def main() -> None:
    http_addr, grpc_addr, model, npy = sys.argv[1:5]
    token = sys.argv[5] if len(sys.argv) > 5 else None
    headers = {"Authorization": f"Bearer {token}"} if token else None
    gheaders = {"authorization": f"Bearer {token}"} if token else None  # gRPC metadata keys are lower case
    x = np.load(npy)
    out = {}
    h = th.InferenceServerClient(http_addr, concurrency=8)
    g = tg.InferenceServerClient(grpc_addr)
    out["http_live"], out["http_ready"] = h.is_server_live(headers=headers), h.is_server_ready(headers=headers)
    out["http_model_ready"] = h.is_model_ready(model, headers=headers)
    out["grpc_live"], out["grpc_ready"] = g.is_server_live(headers=gheaders), g.is_server_ready(headers=gheaders)
    out["grpc_model_ready"] = g.is_model_ready(model, headers=gheaders)
    out["http_metadata"] = h.get_model_metadata(model, headers=headers)
    meta = g.get_model_metadata(model, headers=gheaders, as_json=True)
    out["grpc_metadata"] = meta

    def http_infer(arr, binary=True, name="x", datatype="FP32"):
        inp = th.InferInput(name, list(arr.shape), datatype)
        inp.set_data_from_numpy(arr, binary_data=binary)
        # a fresh dict per call: tritonclient adds Inference-Header-Content-Length to the dict it is given
        res = h.infer(model, [inp], outputs=[th.InferRequestedOutput("y", binary_data=binary)],
                      headers=dict(headers or {}))
        return res.as_numpy("y")

    def grpc_infer(arr, name="x", datatype="FP32"):
        inp = tg.InferInput(name, list(arr.shape), datatype)
        inp.set_data_from_numpy(arr)
        return g.infer(model, [inp], headers=gheaders).as_numpy("y")

    out["http_binary"] = http_infer(x).tolist()
    out["http_json"] = http_infer(x, binary=False).tolist()
    out["grpc"] = grpc_infer(x).tolist()

    # several concurrent clients, one sample each: the service batches them together
    results, errors = {}, []

    def worker(i):  # each thread its own client (the HTTP client is gevent-based: one per thread)
        try:
            if i % 2:
                c = tg.InferenceServerClient(grpc_addr)
                mk, hdr = tg.InferInput, gheaders
            else:
                c = th.InferenceServerClient(http_addr)
                mk, hdr = th.InferInput, headers
            for k in range(4):
                j = (i * 4 + k) % len(x)
                inp = mk("x", [1, x.shape[1]], "FP32")
                inp.set_data_from_numpy(x[j:j + 1])
                res = c.infer(model, [inp], headers=dict(hdr or {}))
                results[(i, k)] = (j, res.as_numpy("y").tolist())
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    out["concurrent"] = [results[k] for k in sorted(results)]
    out["concurrent_errors"] = errors

    def error(fn):
        try:
            fn()
        except InferenceServerException as exc:
            return {"status": str(exc.status()), "message": exc.message()}
        return None

    bad_shape = x[:, :-1].copy()
    out["errors"] = {
        "http_unknown_model": error(lambda: h.get_model_metadata("nope", headers=headers)),
        "grpc_unknown_model": error(lambda: g.get_model_metadata("nope", headers=gheaders)),
        "http_wrong_shape": error(lambda: http_infer(bad_shape)),
        "grpc_wrong_shape": error(lambda: grpc_infer(bad_shape)),
        "http_wrong_datatype": error(lambda: http_infer(x.astype(np.float64), datatype="FP64")),
        "grpc_wrong_datatype": error(lambda: grpc_infer(x.astype(np.int32), datatype="INT32")),
        "http_unknown_input": error(lambda: http_infer(x, name="image")),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
