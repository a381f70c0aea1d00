"""The benchmark agent: ``python -m edgeify_runtime.bench [--request FILE]``.

Reads one JSON request from FILE (or stdin; the fields: :mod:`edgeify_runtime.bench_request`), writes ONE JSON
object to stdout and nothing else there (engine chatter on file descriptor 1 is redirected to stderr while the
agent works): a :class:`edgeify_runtime.result.BenchResult` as ``to_dict(samples=request.samples)``. Progress goes
to stderr. The host's deadline (``EDGEIFY_DEADLINE_S``) is enforced by the agent itself
(:func:`edgeify_runtime.envelope.respond`), also where the device has no ``timeout``.

Exit codes: 0 ok; 2 bad request; 5/11/12 the runtime's errors (InputSignatureError, EngineMissingError,
BundleError); 25 past the deadline; 1 anything unexpected (``EDGEIFY_DEBUG=1`` prints the traceback on stderr);
130 interrupted. On failure stdout holds ``{"ok": false, "error": {"type", "message", "hint", "exit_code"}, ...}``.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import sys
import time
from typing import Any

import numpy as np

from . import __version__
from .bench_inputs import dynamic_axes, input_shapes, load_npz, random_feeds, resolve_batch, run_batch, save_npz
from .bench_request import BenchRequest, RequestError
from .bench_request import __doc__ as _request_doc_text
from .device_state import StateProbe
from .engines import registry
from .envelope import error_payload, respond
from .fingerprint import fingerprint, temperatures_c
from .identity import manifest_identity
from .manifest import Manifest
from .profile.agent import profile_for_agent
from .result import BenchResult, EngineInfo, Fallback, Latency, Protocol
from .session import Model, load
from .stats import summarize
from .trtexec import bench_command, parse_output

AGENT_VERSION = __version__
TIMER = "perf_counter_ns"
_request_doc = _request_doc_text or ""


# -- measurement ---------------------------------------------------------------------------------------------

def _log(msg: str) -> None:
    print(f"[edgeify bench] {msg}", file=sys.stderr, flush=True)


def _ms(ns: int) -> float:
    return round(ns / 1e6, 6)


def peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0  # bytes on macOS, KiB on Linux
    return round(rss / scale, 2)


def _import_engine_module(manifest: Manifest, engine: str | None) -> tuple[float | None, str | None]:
    """Import the engine's module up front so ``load_ms`` measures session creation, not the import."""

    name = engine or manifest.engine.name
    info = registry().get(name)
    if info is None or name != manifest.engine.name:
        return None, None  # load() raises the proper error
    for mod in info.modules:
        t0 = time.perf_counter_ns()
        try:
            importlib.import_module(mod)
        except Exception:  # not installed / broken: load() raises EngineMissingError with the fix
            continue
        return _ms(time.perf_counter_ns() - t0), mod
    return None, None


def _timed_loop(model: Model, feeds: dict[str, np.ndarray], count: int, min_s: float, max_s: float,
                samples: list[int] | None) -> tuple[int, str, int]:
    """Run until ``count`` runs and ``min_s`` seconds are both reached, or ``max_s`` has passed.

    Returns (runs done, why it stopped, elapsed ns); appends each run's ns to ``samples`` when given.
    """
    clock = time.perf_counter_ns
    run = model.run
    min_ns, max_ns = int(min_s * 1e9), int(max_s * 1e9)
    done = 0
    start = clock()
    now = start
    while True:
        if done >= count and now - start >= min_ns:
            return done, "runs_and_min_duration", now - start
        if now - start >= max_ns and (done > 0 or samples is None):
            return done, "max_duration", now - start
        t0 = clock()
        run(feeds)
        now = clock()
        if samples is not None:
            samples.append(now - t0)
        done += 1


def _fallback(model: Model, options: dict[str, Any]) -> Fallback | None:
    """Where the engine did not run as the bundle asked: skipped providers, or a CPU fallback."""
    adapter = getattr(model, "_adapter", None)
    skipped = tuple(getattr(adapter, "skipped_providers", None) or ())
    if not skipped and not model.fallback:
        return None
    requested = tuple(options.get("providers") or ())
    active = tuple(getattr(adapter, "providers", None) or ())
    reason = model.fallback or f"skipped the execution provider(s) {list(skipped)}"
    return Fallback(used=True, requested=requested, active=active, skipped=skipped, reason=reason)


def run_benchmark(req: BenchRequest) -> dict[str, Any]:
    """Measure the bundle as the request says; the result as one JSON-ready dict (``BenchResult.to_dict``)."""
    started = time.time()
    fp = fingerprint()
    manifest = Manifest.read(req.bundle)
    verify_ms = None
    if req.verify:
        t0 = time.perf_counter_ns()
        manifest.verify_files(req.bundle)
        verify_ms = _ms(time.perf_counter_ns() - t0)
    import_ms, _ = _import_engine_module(manifest, req.engine)
    t0 = time.perf_counter_ns()
    model = load(req.bundle, engine=req.engine, threads=req.threads, verify=False, options=req.options)
    load_ms = _ms(time.perf_counter_ns() - t0)
    extra: dict[str, Any] = {}
    try:
        _log(f"loaded {req.bundle} on {model.engine_name} {model.engine_version}, {model.threads} threads, "
             f"in {load_ms:.1f} ms")
        batch = resolve_batch(model.inputs, req.batch)
        shapes = input_shapes(model.inputs, batch, req.input_shapes)
        batch = run_batch(model.inputs, shapes, batch)
        feeds = random_feeds(model.inputs, shapes, req.seed)

        t0 = time.perf_counter_ns()
        model.run(feeds)
        first_ms = _ms(time.perf_counter_ns() - t0)

        warmup_done, _, _ = _timed_loop(model, feeds, req.warmup, 0.0, req.max_duration_s, None)
        _log(f"warmup {warmup_done} runs; timing at least {req.runs} runs and {req.min_duration_s} s")
        samples_ns: list[int] = []
        gc.collect()
        gc_was_enabled = gc.isenabled()
        gc.disable()
        probe = StateProbe()
        try:
            runs_done, stopped_by, elapsed_ns = _timed_loop(model, feeds, req.runs, req.min_duration_s,
                                                            req.max_duration_s, samples_ns)
        finally:
            if gc_was_enabled:
                gc.enable()
        state = probe.finish(runs_done, model.threads)
        if stopped_by == "max_duration":
            _log(f"stopped by max_duration_s={req.max_duration_s} after {runs_done} of {req.runs} runs")

        if req.inputs_npz:
            outputs = model.run(load_npz(req.inputs_npz))
            if req.outputs_npz is None:  # pragma: no cover - BenchRequest._check refuses it
                raise RequestError("inputs_npz needs outputs_npz")
            save_npz(req.outputs_npz, outputs)
            described = {k: {"shape": list(v.shape), "dtype": v.dtype.name} for k, v in outputs.items()}
            extra["parity"] = {"inputs_npz": req.inputs_npz, "outputs_npz": req.outputs_npz, "outputs": described}
        engine = EngineInfo(name=model.engine_name, version=model.engine_version, module=model.engine_module,
                            accelerator=model.accelerator)
        threads = model.threads
        fallback = _fallback(model, {**manifest.engine.options, **(req.options or {})})
        # the TensorRT adapter reports what it did with the engine plan (built / reused / rebuilt, and why)
        engine_record = getattr(getattr(model, "_adapter", None), "engine_record", None)
    finally:
        model.close()

    samples_ms = [_ms(s) for s in samples_ns]
    timed_s = sum(samples_ns) / 1e9
    profile = None
    if req.profile:  # after the timed model is closed: profiler overhead never reaches the samples

        profile = profile_for_agent(req, feeds, threads, summarize(samples_ms).get("p50"))
    if engine_record is not None:
        extra["engine_build"] = engine_record.to_dict()
        dynamic = {t.name: shapes[t.name] for t in manifest.inputs if any(not isinstance(d, int) for d in t.shape)}
        extra["trtexec"] = trtexec_breakdown(engine_record, req, dynamic)
    result = BenchResult(
        bundle_digest=manifest.bundle_digest, bundle_id=manifest_identity(manifest, req.options),
        agent_version=AGENT_VERSION, bundle=req.bundle, device_state=state, series=req.series,
        started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        target=manifest.target, precision=manifest.precision, engine=engine,
        protocol=Protocol(
            warmup=req.warmup, warmup_done=warmup_done, runs=req.runs, runs_done=runs_done,
            min_duration_s=req.min_duration_s, max_duration_s=req.max_duration_s, stopped_by=stopped_by,
            threads=threads, batch=batch, seed=req.seed, input_shapes=shapes,
            dynamic_axes=dynamic_axes(manifest.inputs, shapes) or None, verify=req.verify, timer=TIMER,
            timed="Model.run", gc_disabled=True, timed_phase_s=round(elapsed_ns / 1e9, 6)),
        verify_ms=verify_ms, import_ms=import_ms, load_ms=load_ms, first_inference_ms=first_ms,
        latency_ms=Latency(**summarize(samples_ms)),
        throughput_ips=round(runs_done * batch / timed_s, 6) if timed_s > 0 else None,
        samples_ms=tuple(samples_ms), peak_rss_mb=peak_rss_mb(), fingerprint=fp,
        temperatures_after_c=temperatures_c(), duration_s=round(time.time() - started, 3),
        fallback=fallback, profile=profile, extra=extra)
    return result.to_dict(samples=req.samples)


def trtexec_breakdown(record: Any, req: BenchRequest, shapes: dict[str, list[int]]) -> dict[str, Any]:
    """trtexec's own timing of the same engine plan (H2D, GPU compute, D2H, enqueue), when the device has
    trtexec: at least ``runs`` iterations and ``min_duration_s`` seconds after trtexec's 200 ms warm-up."""
    import subprocess

    exe = (record.meta.get("fingerprint") or {}).get("trtexec")
    if not exe:
        return {"available": False, "reason": "trtexec is not on this device (the Model.run timings above stand)"}
    cmd = bench_command(exe, record.plan, shapes=shapes or None, iterations=req.runs,
                        duration_s=req.min_duration_s, dla_core=record.meta.get("dla_core"))
    _log("trtexec breakdown: " + " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=req.max_duration_s + 60)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"available": True, "command": cmd, "error": f"{type(exc).__name__}: {exc}"}
    parsed = parse_output(proc.stdout + "\n" + proc.stderr)
    return {"available": True, "command": cmd, "exit_code": proc.returncode,
            "tensorrt_version": parsed["tensorrt_version"], "summary": parsed["summary"],
            "summary_missing": parsed["summary_missing"], "errors": parsed["errors"][-5:]}


# -- process entry -------------------------------------------------------------------------------------------

def _read_request(path: str | None) -> BenchRequest:
    try:
        if path is None or path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except OSError as exc:
        raise RequestError(f"cannot read the request {path}: {exc}") from exc
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise RequestError(f"the request is not valid JSON: {exc}") from exc
    try:
        return BenchRequest.from_dict(raw)
    except TypeError as exc:  # pragma: no cover - from_dict checks names first
        raise RequestError(str(exc)) from exc


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # usage errors become a JSON error, exit 2
        raise RequestError(f"{self.prog}: {message}")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m edgeify_runtime.bench",
                     description="edgeify benchmark agent: one JSON request in, one JSON result out.",
                     epilog=_request_doc.split("Request", 1)[1] if "Request" in _request_doc else None,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--request", metavar="FILE", help="JSON request file ('-' or absent: stdin)")
    parser.add_argument("--version", action="version", version=f"edgeify-runtime bench {AGENT_VERSION}")
    try:
        args = parser.parse_args(argv)  # --help / --version print on stdout and exit here
    except RequestError as err:
        print(json.dumps(error_payload(err.to_dict())), flush=True)
        return err.exit_code
    return respond(lambda: run_benchmark(_read_request(args.request)))


__all__ = ["AGENT_VERSION", "BenchRequest", "RequestError", "dynamic_axes", "input_shapes", "load_npz", "main",
           "random_feeds", "resolve_batch", "run_benchmark", "save_npz", "trtexec_breakdown"]


if __name__ == "__main__":
    sys.exit(main())

