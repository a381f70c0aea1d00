"""The load generator of benchmarks/serve_throughput.py. Runs in a venv of its own with
tritonclient[http,grpc]==2.73.0 (it pins protobuf<7, which clashes with this project's environment), as an outside
client would; Python 3.8+ and numpy, nothing from this repository.

    python serve_throughput_client.py {http|grpc} ADDRESS MODEL INPUT.npy CLIENTS SECONDS WARMUP_SECONDS

CLIENTS threads, each with its own tritonclient client (the HTTP client is gevent-based: one per thread), send
one sample per request in a closed loop (the next request as soon as the answer is in; binary tensors over
REST, raw_input_contents over gRPC) for WARMUP_SECONDS (discarded) and then SECONDS. Prints one JSON object:
requests, samples, elapsed_s, latency percentiles (ms, end to end at the client), errors, and this process's
CPU seconds (the load generator shares the machine's cores with the service).
"""

import json
import os
import sys
import threading
import time

import numpy as np


def main() -> None:
    protocol, address, model, npy = sys.argv[1:5]
    clients, seconds, warmup = int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
    if protocol == "http":
        import tritonclient.http as tc
    elif protocol == "grpc":
        import tritonclient.grpc as tc
    else:
        raise SystemExit(f"protocol must be http or grpc, not {protocol!r}")
    x = np.load(npy)
    name = sys.argv[8] if len(sys.argv) > 8 else "x"
    start = time.monotonic() + 0.5  # every thread connects first
    measure_from = start + warmup
    stop_at = measure_from + seconds
    lat = [[] for _ in range(clients)]
    errors = []
    cpu0 = os.times()

    def worker(i: int) -> None:
        try:
            c = tc.InferenceServerClient(address)
            inputs = []
            for j in range(len(x)):
                inp = tc.InferInput(name, [1, *x.shape[1:]], "FP32")
                if protocol == "http":
                    inp.set_data_from_numpy(x[j:j + 1], binary_data=True)
                else:
                    inp.set_data_from_numpy(x[j:j + 1])
                inputs.append(inp)
            while time.monotonic() < start:
                time.sleep(0.005)
            k = i
            while True:
                t0 = time.monotonic()
                if t0 >= stop_at:
                    break
                c.infer(model, [inputs[k % len(inputs)]])
                t1 = time.monotonic()
                if t0 >= measure_from:
                    lat[i].append(t1 - t0)
                k += 1
            c.close()
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:300])

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(warmup + seconds + 120)
    cpu1 = os.times()
    ms = np.sort(np.concatenate([np.asarray(v, np.float64) for v in lat])) * 1e3 if any(lat) else np.zeros(0)

    def pct(q: float) -> float:
        return round(float(ms[min(len(ms) - 1, int(q * len(ms)))]), 3) if len(ms) else float("nan")

    print(json.dumps({"protocol": protocol, "clients": clients, "requests": len(ms), "samples": len(ms),
                      "elapsed_s": seconds, "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
                      "errors": errors[:5], "client_cpu_s": round((cpu1.user - cpu0.user) + (cpu1.system -
                                                                                            cpu0.system), 2)}))


if __name__ == "__main__":
    main()
