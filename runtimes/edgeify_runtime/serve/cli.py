"""``python -m edgeify_runtime.serve``: an HTTP inference service for one bundle, with dynamic micro-batching
and metrics.

Run it (device or host; Python 3.8+, numpy + edgeify-runtime + one engine + the ``serve`` extra)::

    python -m edgeify_runtime.serve --bundle build/digits-x86 --port 8080
    python examples/apps/serve.py --bundle build/digits-x86 --port 8080      # the same, through the launcher

It listens on 127.0.0.1 unless ``--host`` says otherwise (and warns on stderr when that is not a loopback
address). ``--token-file FILE`` (or the environment variable ``EDGEIFY_SERVE_TOKEN``) turns on a bearer token:
every endpoint then answers 401 without ``Authorization: Bearer <token>``. The token is never logged.

Once the model is loaded, warmed up and the socket listens, it prints one JSON line on stdout,
``{"event": "ready", "url": "http://127.0.0.1:8080", "port": 8080, ...}`` (``--port 0`` picks a free port;
read it from that line). SIGTERM or SIGINT stops it cleanly: no new connections, requests in flight and
queued are answered, the engine is closed, ``{"event": "stopped"}`` is printed and the exit code is 0.

Endpoints
  ``GET  /healthz``     200 ``{"status": "ok", ...}`` while serving (the model has run once at startup);
                        503 ``{"status": "stopping"}`` during shutdown or when the batcher died.
  ``GET  /v1/model``    the signature (names, shapes, dtypes, layouts), labels, preprocessing, engine,
                        accelerator and the batching settings.
  ``POST /v1/predict``  JSON in, JSON out (below).
  ``GET  /metrics``     Prometheus text format: ``edgeify_requests_total{endpoint,code}``,
                        ``edgeify_request_duration_seconds`` (histogram, per endpoint),
                        ``edgeify_batch_size`` (histogram of samples per engine batch),
                        ``edgeify_queue_wait_seconds``, ``edgeify_inference_duration_seconds`` (histograms),
                        ``edgeify_queue_depth`` (gauge), ``edgeify_model_info`` (labels), process metrics.

Request (``POST /v1/predict``)::

    {"inputs": {"x": [[[[0.0, ...], ...]]]}}       # one array per input name; samples stacked on axis 0
    {"inputs": [[[[0.0, ...]]]]}                    # a single-input model may pass the array alone
    {"inputs": {"x": {"b64": "<base64 of the raw little-endian bytes>", "dtype": "float32",
                      "shape": [1, 3, 224, 224]}}, "encoding": "b64"}    # compact form for large tensors

A request holds n >= 1 samples (axis 0); values are cast to the input's dtype when numpy's ``same_kind``
casting allows it. Response: ``{"outputs": {name: nested lists (or the b64 form when the request said
"encoding": "b64")}, "predictions": [{"index", "label", "score"}, ...] (one per sample, when the bundle or
``--labels`` names the classes of a single (batch, classes) output), "batch": {"size", "queue_ms",
"inference_ms"}}``. Errors are ``{"error": {"type", "message"}}`` with 400 (not JSON, wrong structure,
ragged or non-numeric arrays), 413 (body or sample count over the limits), 422 (does not match the model's
signature: names, ranks, fixed dimensions, dtypes), 503 (queue full, or shutting down; ``Retry-After``),
500 (the engine failed on that batch).

Batching: requests wait in one queue; the engine thread takes the oldest and adds the next ones with the
same per-sample shapes until ``--max-batch`` samples or until the oldest has waited ``--max-wait-ms``, then
runs them as ONE engine call on the stacked tensor and splits the outputs. A bundle with a fixed batch size
B runs in calls of exactly B samples (the last one padded; the padding is discarded). ``--max-batch 1``
turns batching off (each request is one engine call). The default ``--max-wait-ms 0`` never holds a request
back: a batch is what queued while the engine ran the previous one, which measured best on CPUs
(``benchmarks/serve_batching.py``: a fixed wait costs latency at low load and bought no throughput there);
a wait pays where the engine runs big batches much faster per sample (GPUs, NPUs). One engine thread runs batches one
after another: ``Model`` is not thread-safe, and the engine's own threads (``--threads``) use the cores.

Limits (slow or idle clients; ``serve/limits.py``): at most ``--max-connections`` open connections (lowered to fit
the open-file limit; a new connection beyond it closes the oldest idle one, so /healthz always gets in), request
headers within ``--header-timeout`` s, no body byte for ``--body-timeout`` s is a 408, idle keep-alive
connections close after ``--keep-alive-timeout`` s, request headers over 64 KiB are refused.

JSON: responses are strict JSON, never ``NaN`` or ``Infinity``. Requests holding ``NaN``/``Infinity`` literals
or numbers out of the float64 range are a 400, values that overflow the input's dtype a 422 (``/v2``: 400). An
output that holds NaN or infinities is a 500 ``non_finite_output`` naming it when it would be written as JSON
numbers; the same values travel as raw bytes with ``"encoding": "b64"`` (``/v1``), the binary tensor extension
(``/v2``) or gRPC.

TLS (``serve/tls.py``): ``--tls-cert CERT.pem --tls-key KEY.pem`` serve HTTPS and gRPC over TLS (TLS 1.2+);
``--tls-client-ca CA.pem`` requires client certificates signed by that CA on both. Plain HTTP to a TLS port gets
no answer. ``/v1/model`` names the bundle, never its path on the device.

Exit codes: 0 clean shutdown; 2 usage error or missing dependency; 5/11/12 the edgeify-runtime errors
(input signature, engine missing or too old, bundle invalid), e.g. from the warmup run; 1 anything else
(e.g. the port is in use).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from .. import CPUFallbackWarning, EdgeifyRuntimeError, load
from . import REQUIREMENTS
from .http import Bodies, create_app
from .limits import ACCEPT_BURST, LISTEN_BACKLOG, fit_connections, guarded_protocol
from .service import Service, read_labels
from .tls import read_tls, tls_config

TOKEN_ENV = "EDGEIFY_SERVE_TOKEN"
#: request headers larger than this are refused by h11 (431); 64 KiB holds any real header set
H11_MAX_HEADER_BYTES = 64 << 10
INSTALL = "pip install 'edgeify-runtime[serve]' (" + ", ".join(REQUIREMENTS) + ")"


# -- command line ---------------------------------------------------------------------------------------------

def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)  # JSON values: lists, numbers, objects; never eval
    except ValueError:
        return key, value  # a plain string, e.g. device=GPU


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edgeify_runtime.serve", description="HTTP inference service for "
                                "an edgeify bundle (micro-batching, /healthz, /v1/predict, /metrics, /v2).")
    p.add_argument("--bundle", required=True, help="bundle directory (edgeify build -o DIR)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for "
                                                       "every interface)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080; 0 picks a free one)")
    p.add_argument("--grpc-port", type=int, default=None, help="also serve the Open Inference Protocol over gRPC "
                   "on this port (0 picks a free one; needs the grpc extra: grpcio, protobuf)")
    p.add_argument("--max-batch", type=int, default=8, help="samples per engine call at most (default 8; 1 "
                                                           "turns batching off)")
    p.add_argument("--max-wait-ms", type=float, default=0.0, help="how long the oldest queued request may wait "
                   "for others (default 0: a batch is what queued while the engine was busy, the best setting "
                   "measured on CPUs by benchmarks/serve_batching.py; raise it where bigger batches pay, e.g. "
                   "accelerators)")
    p.add_argument("--max-queue", type=int, default=1024, help="queued samples before 503 (default 1024)")
    p.add_argument("--max-request-samples", type=int, default=256, help="samples in one request (default 256)")
    p.add_argument("--max-body-mb", type=float, default=32.0, help="request body limit in MiB (default 32)")
    p.add_argument("--max-large-bodies", type=int, default=2, help="request bodies over 256 KiB (gRPC messages over "
                   "4 MiB) read and decoded at once, in worker processes (default 2); more wait, then get 503")
    p.add_argument("--max-connections", type=int, default=1000, help="open client connections at most (default "
                   "1000, lowered to fit the open-file limit); beyond it a new connection closes the oldest idle one")
    p.add_argument("--header-timeout", type=float, default=10.0, help="seconds a connection may take to send a "
                   "request's headers (default 10), then it is closed")
    p.add_argument("--body-timeout", type=float, default=30.0, help="seconds a request body may go without a byte "
                   "(default 30), then 408")
    p.add_argument("--keep-alive-timeout", type=float, default=5.0, help="seconds an idle keep-alive connection is "
                   "kept open (default 5)")
    p.add_argument("--tls-cert", help="serve HTTPS (and gRPC over TLS) with this PEM certificate (chain); needs "
                   "--tls-key")
    p.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", help="require client certificates signed by this PEM CA bundle (mutual TLS, "
                   "HTTP and gRPC)")
    p.add_argument("--token-file", help="require `Authorization: Bearer <token>` on every endpoint; the token is "
                   f"the file's first line (or set {TOKEN_ENV}); never logged")
    p.add_argument("--latency-budget-ms", type=float, default=None, help="the p95 request latency budget, exported "
                   "as edgeify_latency_budget_seconds for the alert rules (default: the manifest's "
                   "latency_budget_ms, else max(3 x p95, p95 + 20 ms) of the bundle measured at startup, labelled "
                   "source=measured)")
    p.add_argument("--model-name", help="the name the model is served under in /v2 (default: the bundle's "
                   "directory name; for WORKDIR/bundles/NAME/current, NAME)")
    p.add_argument("--threads", type=int, default=None, help="engine threads (default: physical cores)")
    p.add_argument("--option", action="append", type=_parse_option, default=[], metavar="KEY=VALUE",
                   help="engine load option (JSON value or string), e.g. providers='[\"CUDAExecutionProvider\"]' "
                        "or device=GPU; repeatable")
    p.add_argument("--cpu-fallback", action="store_true", help="run on the CPU when the accelerator the options "
                                                               "ask for is missing (logged, in /v1/model)")
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the bundle files")
    p.add_argument("--no-warmup", action="store_true", help="skip the startup inference on zeros")
    p.add_argument("--labels", help="class names file, one per line (default: the manifest's labels)")
    p.add_argument("--shutdown-timeout", type=float, default=10.0, help="seconds to finish requests on SIGTERM")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument("--access-log", action="store_true", help="log every request (uvicorn access log)")
    return p


def listen(host: str, port: int, family: int) -> socket.socket:
    """A listening TCP socket. Its protocol must be IPPROTO_TCP (not 0, as ``socket.create_server`` leaves it):
    asyncio sets TCP_NODELAY only on connections from such sockets, and without it every keep-alive response
    written in two parts waits ~40 ms for the client's delayed ACK."""
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def read_token(path: str | None) -> str | None:
    """The bearer token: the first line of ``path``, else ``$EDGEIFY_SERVE_TOKEN``, else None (no token)."""
    if path:
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeError) as exc:
            raise ValueError(f"--token-file {path}: unreadable ({type(exc).__name__})") from None
        token = (text.strip().splitlines() or [""])[0].strip()
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            return None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise ValueError("the bearer token must be at least 16 characters with no spaces")
    return token


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def model_name(bundle: str) -> str:
    """The name a bundle is served under: its directory's name (``NAME`` for ``.../bundles/NAME/current``)."""
    p = Path(bundle).absolute()
    return p.parent.name if p.name == "current" and p.parent.name else p.name


def _fail(message: str, hint: str = "", code: int = 1) -> int:
    print(f"serve: error: {message}", file=sys.stderr)
    if hint:
        print(f"fix: {hint}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for flag, value in (("--max-batch", args.max_batch), ("--max-queue", args.max_queue),
                        ("--max-request-samples", args.max_request_samples),
                        ("--max-large-bodies", args.max_large_bodies)):
        if value < 1:
            return _fail(f"{flag} must be >= 1, not {value}", code=2)
    if not (args.max_wait_ms >= 0 and math.isfinite(args.max_wait_ms)):
        return _fail(f"--max-wait-ms must be >= 0, not {args.max_wait_ms}", code=2)
    for flag, seconds in (("--header-timeout", args.header_timeout), ("--body-timeout", args.body_timeout),
                          ("--keep-alive-timeout", args.keep_alive_timeout)):
        if not (seconds > 0 and math.isfinite(seconds)):
            return _fail(f"{flag} must be > 0 seconds, not {seconds}", code=2)
    if args.max_connections < 1:
        return _fail(f"--max-connections must be >= 1, not {args.max_connections}", code=2)
    try:
        tls = read_tls(args.tls_cert, args.tls_key, args.tls_client_ca)
    except ValueError as exc:
        return _fail(str(exc), "pass --tls-cert CERT.pem --tls-key KEY.pem (PEM files readable by this user; see "
                               "the README's security section)", code=2)
    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as exc:
        return _fail(f"missing dependency: {exc}", INSTALL, code=2)
    if args.grpc_port is not None:
        try:
            from .proto import grpc_predict_v2_pb2_grpc  # noqa: F401  (grpcio + a protobuf new enough)
        except Exception as exc:
            return _fail(f"--grpc-port needs grpcio and protobuf>=7.35: {type(exc).__name__}: {exc}",
                         "pip install 'edgeify-runtime[grpc]'", code=2)
    try:
        token = read_token(args.token_file)
    except ValueError as exc:
        return _fail(str(exc), "write a token of 16+ characters on the file's first line, e.g. "
                               "`openssl rand -hex 32 > FILE`", code=2)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if not is_loopback(args.host):
        missing = [what for what, on in (("no token (--token-file)", token), ("no TLS (--tls-cert)", tls)) if not on]
        print(f"serve: warning: listening on {args.host}: reachable from the network"
              + (" with " + " and ".join(missing) if missing else ""), file=sys.stderr)
    with warnings_to_log():
        try:
            model = load(args.bundle, threads=args.threads, verify=not args.no_verify,
                            options=dict(args.option) or None, cpu_fallback=args.cpu_fallback)
        except EdgeifyRuntimeError as err:
            return _fail(err.message, err.hint, err.exit_code)
        except (OSError, ValueError) as exc:
            return _fail(str(exc), code=2)
    try:
        labels = read_labels(args.labels)
        service = Service(model, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                          max_request_samples=args.max_request_samples, labels=labels,
                          name=args.model_name or model_name(args.bundle),
                          latency_budget_ms=args.latency_budget_ms or model.manifest.raw.get("latency_budget_ms"),
                          budget_source="given" if args.latency_budget_ms else "manifest")
        if not args.no_warmup:
            service.warmup()
            if service.latency_budget_ms is None:  # the alerts still need a threshold: this device's own p95
                service.budget_from_measurement()
    except EdgeifyRuntimeError as err:
        model.close()
        return _fail(f"warmup inference failed: {err.message}", err.hint or "pass --no-warmup to skip it",
                     err.exit_code)
    except Exception as exc:
        model.close()
        return _fail(f"startup failed: {type(exc).__name__}: {exc}")
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    try:
        sock = listen(args.host, args.port, family)
    except OSError as exc:
        model.close()
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc}", "pick another --port, or stop the "
                                                                        "process that holds it")
    port = sock.getsockname()[1]
    max_body = int(args.max_body_mb * (1 << 20))
    bodies = Bodies(max_body_bytes=max_body, max_large_bodies=args.max_large_bodies,  # shared by REST and gRPC
                    body_timeout=args.body_timeout)
    app = create_app(service, max_body_bytes=max_body, drain_timeout=args.shutdown_timeout, token=token,
                     bodies=bodies)
    max_connections = fit_connections(args.max_connections)
    # limit_concurrency: a backstop only (uvicorn answers 503 to every request, /healthz too, once that many
    # connections or requests are open; the guarded protocol keeps connections below it)
    config = uvicorn.Config(app, lifespan="on", log_level=args.log_level, access_log=args.access_log,
                            timeout_graceful_shutdown=args.shutdown_timeout, server_header=False,
                            http=guarded_protocol(max_connections, args.header_timeout),
                            limit_concurrency=max_connections + 1, timeout_keep_alive=args.keep_alive_timeout,
                            backlog=ACCEPT_BURST,
                            h11_max_incomplete_event_size=H11_MAX_HEADER_BYTES, **tls_config(tls))
    server = uvicorn.Server(config)
    host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    scheme = "https" if tls else "http"
    ready = {"event": "ready", "url": f"{scheme}://{host}:{port}", "port": port, "pid": os.getpid(),
             "bundle_digest": model.manifest.bundle_digest, "engine": model.engine_name,
             "accelerator": model.accelerator, "fallback": model.fallback, "max_batch": args.max_batch,
             "max_wait_ms": args.max_wait_ms, "model": service.name, "token": token is not None,
             "tls": bool(tls), "client_certs": bool(tls and tls.get("client_ca")), "max_connections": max_connections}

    failed: list[str] = []

    async def run() -> None:
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:  # asyncio listened with ACCEPT_BURST (its accept-loop count): the kernel's queue again
            sock.listen(LISTEN_BACKLOG)
        grpc_server = None
        if server.started and args.grpc_port is not None:
            from .grpc_server import start_grpc

            try:
                grpc_server, ready["grpc_port"] = await start_grpc(
                    service, args.host, args.grpc_port, token=token, max_message_bytes=max_body, bodies=bodies,
                    tls=tls)
            except (OSError, RuntimeError) as exc:
                failed.append(f"cannot listen on {args.host}:{args.grpc_port} (gRPC): {exc}")
                server.should_exit = True
        if server.started and not failed:
            print(json.dumps(ready), flush=True)
        await task
        if grpc_server is not None:
            await grpc_server.stop(1.0)
        bodies.close()

    # uvicorn handles SIGINT/SIGTERM while serving and re-raises them afterwards: these no-op handlers take
    # that re-raise, so a clean shutdown exits 0 instead of dying by the signal
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        asyncio.run(run())
    finally:
        sock.close()
        model.close()
    if failed:
        return _fail(failed[0], "pick another --grpc-port, or stop the process that holds it")
    print(json.dumps({"event": "stopped", "pid": os.getpid()}), flush=True)
    return 0


@contextlib.contextmanager
def warnings_to_log() -> Any:
    """Print warnings raised while loading (the runtime's CPUFallbackWarning) as one stderr line each."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CPUFallbackWarning)
        yield
    for w in caught:
        print(f"serve: warning: {w.category.__name__}: {w.message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
