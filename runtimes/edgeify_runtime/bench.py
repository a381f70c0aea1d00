"""The benchmark agent: ``python -m edgeify_runtime.bench [--request FILE]``.

Reads one JSON request from FILE (or stdin), writes ONE JSON object to stdout and nothing else there (engine
chatter on file descriptor 1 is redirected to stderr while the agent works). Progress goes to stderr.

Request (every field but ``bundle`` is optional; unknown fields are refused)::

    {"bundle": "path/to/bundle",     required
     "engine": null,                 null: the manifest's engine (another name is refused)
     "threads": null,                null: physical cores (bounded by the CPUs this process may use)
     "warmup": 10, "runs": 100,      warmup runs are discarded; at least ``runs`` timed runs ...
     "min_duration_s": 1.0,          ... and at least this long in the timed phase ...
     "max_duration_s": 120,          ... but never longer than this (each phase); ``stopped_by`` says why
     "batch": null,                  null: the fixed batch dimension, or 1 when it is dynamic
     "seed": 0,                      random inputs: float -> standard normal float32, int -> 0..9, bool
     "verify": true,                 sha256 of every bundle file before loading
     "input_shapes": null,           {input: [dims]}: the shape to feed, for dynamic non-batch dimensions
                                     (which default to 1)
     "options": null,                engine load options, merged over the manifest's engine.options
     "inputs_npz": null,             run these inputs once (np.load, allow_pickle=False) after the timed
     "outputs_npz": null,            runs and write the outputs here (host-vs-device parity)
     "profile": null}                true or a run count: the engine's per-op profile, in its own session
                                     after the timed runs (edgeify_runtime.profile)

Exit codes: 0 ok; 2 bad request; 5/11/12 the runtime's errors (InputSignatureError, EngineMissingError,
BundleError); 1 anything unexpected (``EDGEIFY_DEBUG=1`` prints the traceback on stderr); 130 interrupted.
On failure stdout holds ``{"ok": false, "error": {"type", "message", "hint", "exit_code"}, ...}``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import __version__
from .envelope import error_payload, respond
from .errors import EdgeifyRuntimeError, InputSignatureError
from .fingerprint import fingerprint, temperatures_c
from .manifest import Manifest, TensorSpec
from .session import Model, load
from .stats import summarize

AGENT_VERSION = __version__
TIMER = "perf_counter_ns"


class RequestError(EdgeifyRuntimeError):
    """The request is not valid JSON, lacks ``bundle``, or has an unknown field or one of the wrong type."""

    exit_code = 2  # "command-line usage error" in edgeify's exit code table
    hint = "see `python -m edgeify_runtime.bench --help` for the request fields"


@dataclass
class BenchRequest:
    bundle: str
    engine: str | None = None
    threads: int | None = None
    warmup: int = 10
    runs: int = 100
    min_duration_s: float = 1.0
    max_duration_s: float = 120.0
    batch: int | None = None
    seed: int = 0
    verify: bool = True
    input_shapes: dict[str, list[int]] | None = None
    options: dict[str, Any] | None = None
    inputs_npz: str | None = None
    outputs_npz: str | None = None
    profile: Any = None

    @classmethod
    def from_dict(cls, raw: Any) -> BenchRequest:
        if not isinstance(raw, dict):
            raise RequestError("the request must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise RequestError(f"unknown request field(s) {unknown}; known fields: {sorted(known)}")
        if not isinstance(raw.get("bundle"), str) or not raw["bundle"]:
            raise RequestError("the request needs `bundle`: the path of the bundle directory on this device")
        req = cls(**{k: v for k, v in raw.items() if v is not None or k not in _NON_NULL})
        req._check()
        return req

    def _check(self) -> None:
        _want(self, "engine", (str,), nullable=True)
        _want_int(self, "threads", 1, nullable=True)
        _want_int(self, "warmup", 0)
        _want_int(self, "runs", 1)
        _want(self, "min_duration_s", (int, float))
        _want(self, "max_duration_s", (int, float))
        if self.min_duration_s < 0 or self.max_duration_s <= 0:
            raise RequestError("min_duration_s must be >= 0 and max_duration_s > 0")
        _want_int(self, "batch", 1, nullable=True)
        _want_int(self, "seed", 0)
        _want(self, "verify", (bool,))
        _want(self, "options", (dict,), nullable=True)
        _want(self, "inputs_npz", (str,), nullable=True)
        _want(self, "outputs_npz", (str,), nullable=True)
        if not isinstance(self.profile, bool):  # true, false, null or a run count
            _want_int(self, "profile", 1, nullable=True)
        if self.inputs_npz and not self.outputs_npz:
            raise RequestError("inputs_npz needs outputs_npz: where to write the outputs")
        if self.input_shapes is not None:
            ok = isinstance(self.input_shapes, dict) and all(
                isinstance(v, list)
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in v)
                for v in self.input_shapes.values())
            if not ok:
                raise RequestError("input_shapes must map input names to lists of non-negative ints")


#: fields that fall back to their default when the request gives null
_NON_NULL = frozenset({"warmup", "runs", "min_duration_s", "max_duration_s", "seed", "verify"})


def _want(req: BenchRequest, name: str, types: tuple[type, ...], nullable: bool = False) -> None:
    value = getattr(req, name)
    if value is None and nullable:
        return
    kinds = "/".join(t.__name__ for t in types)
    if isinstance(value, bool) and bool not in types:
        raise RequestError(f"request field {name!r} must be {kinds}, not a bool")
    if not isinstance(value, types):
        raise RequestError(f"request field {name!r} must be {kinds}"
                           f"{' or null' if nullable else ''}, not {value!r}")


def _want_int(req: BenchRequest, name: str, minimum: int, nullable: bool = False) -> None:
    _want(req, name, (int,), nullable)
    value = getattr(req, name)
    if value is not None and value < minimum:
        raise RequestError(f"request field {name!r} must be >= {minimum}, not {value}")


# -- inputs ------------------------------------------------------------------------------------------------

def _batch_axis(spec: TensorSpec) -> int | None:
    if not spec.shape:
        return None
    if spec.layout and "N" in spec.layout.upper() and len(spec.layout) == len(spec.shape):
        return spec.layout.upper().index("N")
    return 0


def resolve_batch(inputs: tuple[TensorSpec, ...], batch: int | None) -> int:
    """The batch to run: the request's, else the bundle's fixed batch dimension, else 1."""
    fixed = {}
    for spec in inputs:
        axis = _batch_axis(spec)
        if axis is not None and isinstance(spec.shape[axis], int):
            fixed[spec.name] = spec.shape[axis]
    if batch is None:
        return next(iter(fixed.values()), 1)
    wrong = {n: b for n, b in fixed.items() if b != batch}
    if wrong:
        raise RequestError(f"batch {batch} requested, but the bundle's batch dimension is fixed: {wrong}",
                           hint="omit batch, or build the bundle with a dynamic batch dimension")
    return batch


def input_shapes(inputs: tuple[TensorSpec, ...], batch: int,
                 overrides: dict[str, list[int]] | None = None) -> dict[str, list[int]]:
    """The shape fed to each input: overrides win; the batch axis gets ``batch``; other dynamic dims get 1."""
    overrides = overrides or {}
    unknown = sorted(set(overrides) - {s.name for s in inputs})
    if unknown:
        raise RequestError(f"input_shapes names unknown input(s) {unknown}; the inputs are "
                           f"{[s.name for s in inputs]}")
    shapes = {}
    for spec in inputs:
        if spec.name in overrides:
            shapes[spec.name] = list(overrides[spec.name])
            continue
        axis = _batch_axis(spec)
        shapes[spec.name] = [d if isinstance(d, int) else (batch if i == axis else 1)
                             for i, d in enumerate(spec.shape)]
    return shapes


def random_feeds(inputs: tuple[TensorSpec, ...], shapes: dict[str, list[int]],
                 seed: int) -> dict[str, np.ndarray]:
    """Deterministic random inputs: float -> standard normal, int -> small non-negative ints, bool -> coin."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in inputs:
        dtype = np.dtype(spec.dtype)
        shape = tuple(shapes[spec.name])
        if dtype.kind == "f":
            arr = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        elif dtype.kind in "iu":
            arr = rng.integers(0, 10, size=shape).astype(dtype)
        elif dtype.kind == "b":
            arr = rng.integers(0, 2, size=shape).astype(bool)
        elif dtype.kind == "c":
            arr = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
        else:
            raise InputSignatureError(f"input {spec.name!r}: cannot generate random {dtype.name} data",
                                      hint="pass fixed inputs with inputs_npz")
        feeds[spec.name] = arr
    return feeds


# -- npz I/O -------------------------------------------------------------------------------------------------

def load_npz(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise RequestError(f"inputs_npz {path}: cannot be read: {exc}",
                           hint="pass an .npz written by numpy.savez with plain (non-object) arrays") from exc


def save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an .npz exactly at ``path``, atomically; any key works, unlike np.savez(**kw)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".outputs-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, arr in arrays.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
    from .engines import ENGINES

    name = engine or manifest.engine.name
    info = ENGINES.get(name)
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


def run_benchmark(req: BenchRequest) -> dict[str, Any]:
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
    try:
        _log(f"loaded {req.bundle} on {model.engine_name} {model.engine_version}, {model.threads} threads, "
             f"in {load_ms:.1f} ms")
        batch = resolve_batch(model.inputs, req.batch)
        shapes = input_shapes(model.inputs, batch, req.input_shapes)
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
        try:
            runs_done, stopped_by, elapsed_ns = _timed_loop(model, feeds, req.runs, req.min_duration_s,
                                                            req.max_duration_s, samples_ns)
        finally:
            if gc_was_enabled:
                gc.enable()
        if stopped_by == "max_duration":
            _log(f"stopped by max_duration_s={req.max_duration_s} after {runs_done} of {req.runs} runs")

        parity = None
        if req.inputs_npz:
            outputs = model.run(load_npz(req.inputs_npz))
            assert req.outputs_npz is not None  # checked in BenchRequest._check
            save_npz(req.outputs_npz, outputs)
            described = {k: {"shape": list(v.shape), "dtype": v.dtype.name} for k, v in outputs.items()}
            parity = {"inputs_npz": req.inputs_npz, "outputs_npz": req.outputs_npz, "outputs": described}
        engine = {"name": model.engine_name, "version": model.engine_version, "module": model.engine_module,
                  "accelerator": model.accelerator}
        threads = model.threads
        # the TensorRT adapter reports what it did with the engine plan (built / reused / rebuilt, and why)
        engine_record = getattr(getattr(model, "_adapter", None), "engine_record", None)
    finally:
        model.close()

    samples_ms = [_ms(s) for s in samples_ns]
    timed_s = sum(samples_ns) / 1e9
    result: dict[str, Any] = {
        "ok": True,
        "agent_version": AGENT_VERSION,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "bundle": req.bundle,
        "bundle_digest": manifest.bundle_digest,
        "target": manifest.target,
        "precision": manifest.precision,
        "engine": engine,
        "protocol": {
            "warmup": req.warmup, "warmup_done": warmup_done, "runs": req.runs, "runs_done": runs_done,
            "min_duration_s": req.min_duration_s, "max_duration_s": req.max_duration_s,
            "stopped_by": stopped_by, "threads": threads, "batch": batch, "seed": req.seed,
            "input_shapes": shapes, "verify": req.verify, "timer": TIMER, "timed": "Model.run",
            "gc_disabled": True, "timed_phase_s": round(elapsed_ns / 1e9, 6),
        },
        "verify_ms": verify_ms,
        "import_ms": import_ms,
        "load_ms": load_ms,
        "first_inference_ms": first_ms,
        "latency_ms": summarize(samples_ms),
        "throughput_ips": round(runs_done * batch / timed_s, 6) if timed_s > 0 else None,
        "samples_ms": samples_ms,
        "peak_rss_mb": peak_rss_mb(),
        "fingerprint": fp,
        "temperatures_after_c": temperatures_c(),
        "duration_s": round(time.time() - started, 3),
    }
    if req.profile:  # after the timed model is closed: profiler overhead never reaches the samples
        from .profile.agent import profile_for_agent
        result["profile"] = profile_for_agent(req, feeds, threads, result["latency_ms"].get("p50"))
    if parity is not None:
        result["parity"] = parity
    if engine_record is not None:
        result["engine_build"] = engine_record.to_dict()
        dynamic = {t.name: shapes[t.name] for t in manifest.inputs if any(not isinstance(d, int) for d in t.shape)}
        result["trtexec"] = trtexec_breakdown(engine_record, req, dynamic)
    return result


def trtexec_breakdown(record: Any, req: BenchRequest, shapes: dict[str, list[int]]) -> dict[str, Any]:
    """trtexec's own timing of the same engine plan (H2D, GPU compute, D2H, enqueue), when the device has
    trtexec: at least ``runs`` iterations and ``min_duration_s`` seconds after trtexec's 200 ms warm-up."""
    import subprocess

    from .trtexec import bench_command, parse_output

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
                     epilog=__doc__.split("Request", 1)[1].split("Exit codes", 1)[0] if __doc__ else None,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--request", metavar="FILE", help="JSON request file ('-' or absent: stdin)")
    parser.add_argument("--version", action="version", version=f"edgeify-runtime bench {AGENT_VERSION}")
    try:
        args = parser.parse_args(argv)  # --help / --version print on stdout and exit here
    except RequestError as err:
        print(json.dumps(error_payload(err.to_dict())), flush=True)
        return err.exit_code
    return respond(lambda: run_benchmark(_read_request(args.request)))


if __name__ == "__main__":
    sys.exit(main())
