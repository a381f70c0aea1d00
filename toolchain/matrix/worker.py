"""What runs on a worker (a local pool process or a Ray task): one ordinary ``edgeify.build`` per cell.

The bundle is built in a worker-side temporary directory and comes back to the driver as a tar archive (through
the pool's pipe or Ray's object store); the driver publishes it atomically in OUT. A build error (parity,
conversion, data...) is a *result*: it comes back as a failed outcome, never as an exception, so Ray retries
only what is an infrastructure failure (the worker process or node died).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import tarfile
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from ..build import build
from ..errors import EdgeifyError, InterruptedBuild


@dataclass(frozen=True)
class CellJob:
    """Everything a worker needs to build one cell (paths as the driver sees them)."""

    cell_id: str
    model: str
    target: str
    precision: str
    engine: str | None
    model_path: str
    calib: str | None = None
    eval: str | None = None
    preprocess: str | None = None
    input_shapes: tuple[str, ...] | None = None
    target_files: tuple[str, ...] = ()
    max_accuracy_drop: float | None = None
    use_cache: bool = True
    measure_latency: bool = True


@dataclass(frozen=True)
class CellOutcome:
    cell_id: str
    status: Literal["built", "failed", "cancelled"]
    node: dict[str, Any]
    seconds: float
    steps: tuple[dict[str, Any], ...] = ()
    error: dict[str, Any] | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    bundle_tar: bytes | None = None


class _Recorder:
    """A BuildObserver that keeps the step log (also for builds that fail half-way)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.messages: list[str] = []
        self._started: dict[str, str] = {}

    def step_started(self, step_id: str, kind: str) -> None:
        self._started[step_id] = kind

    def step_finished(self, step_id: str, seconds: float, cached: bool) -> None:
        self.steps.append({"id": step_id, "uses": self._started.get(step_id), "seconds": round(seconds, 3),
                           "cached": cached})

    def message(self, text: str) -> None:
        self.messages.append(text)

    def unfinished(self) -> str | None:
        done = {s["id"] for s in self.steps}
        return next((s for s in self._started if s not in done), None)


def node_info() -> dict[str, Any]:
    """Which machine and process built a cell: the Ray node id inside a Ray task, else ``local``."""
    info: dict[str, Any] = {"id": "local", "host": socket.gethostname(), "pid": os.getpid()}
    try:
        import ray  # only present (and initialised) inside a Ray worker

        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            info["id"] = ctx.get_node_id()
            info["ip"] = ray.util.get_node_ip_address()
    except ImportError:
        pass
    return info


def collect_inputs(job: CellJob) -> dict[str, dict[str, bytes]]:
    """The job's input files as bytes, for workers that do not share the driver's filesystem."""
    def files_of(p: str | None) -> dict[str, bytes]:
        if p is None:
            return {}
        path = Path(p)
        if path.is_dir():  # an image folder
            return {str(f.relative_to(path.parent)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}
        out = {path.name: path.read_bytes()}
        sidecar = path.with_name(path.name + ".data")  # ONNX external weights
        if sidecar.is_file():
            out[sidecar.name] = sidecar.read_bytes()
        if path.suffix == ".py":  # a factory may import its sibling modules
            out.update({f.name: f.read_bytes() for f in path.parent.glob("*.py")})
        return out

    model_file = job.model_path.rsplit(":", 1)[0] if _factory(job.model_path) else job.model_path
    shipped = {"model": files_of(model_file), "calib": files_of(job.calib), "eval": files_of(job.eval),
               "preprocess": files_of(job.preprocess)}
    for i, tf in enumerate(job.target_files):
        shipped[f"target_files.{i}"] = files_of(tf)
    return shipped


def _factory(path: str) -> bool:
    head, sep, tail = path.rpartition(":")
    return bool(sep) and head.endswith(".py") and bool(tail)


def materialize(job: CellJob, shipped: dict[str, dict[str, bytes]], root: Path) -> CellJob:
    def write(key: str, original: str | None) -> str | None:
        if original is None:
            return None
        d = root / "inputs" / key
        for rel, data in shipped.get(key, {}).items():
            dest = (d / rel).resolve()
            if not dest.is_relative_to(d.resolve()):
                raise ValueError(f"unsafe input path {rel!r}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        return str(d / Path(original).name)

    model_file, _, factory = job.model_path.rpartition(":") if _factory(job.model_path) else (job.model_path, "", "")
    model = write("model", model_file)
    return replace(job, model_path=f"{model}:{factory}" if factory else model,
                   calib=write("calib", job.calib), eval=write("eval", job.eval),
                   preprocess=write("preprocess", job.preprocess),
                   target_files=tuple(write(f"target_files.{i}", tf) for i, tf in enumerate(job.target_files)))


def pack(bundle: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in sorted(bundle.rglob("*")):
            tar.add(f, arcname=str(f.relative_to(bundle)), recursive=False)
    return buf.getvalue()


def _summary(result: Any) -> dict[str, Any]:
    m, v = result.manifest, result.validation
    return {"engine": result.engine, "bundle_digest": m.bundle_digest,
            "size_bytes": sum(f["size"] for f in m.files.values()), "parity": [r.to_dict() for r in v.outputs],
            "accuracy": None if v.accuracy is None else v.accuracy.to_dict(), "latency": result.latency,
            "build_seconds": round(result.seconds, 3)}


def run_cell(job: CellJob, shipped: dict[str, dict[str, bytes]] | None = None) -> CellOutcome:
    """Build one cell. Build errors come back in the outcome; only infrastructure failures escape."""

    t0 = time.perf_counter()
    node = node_info()
    rec = _Recorder()
    tmp = Path(tempfile.mkdtemp(prefix="edgeify-cell-"))
    try:
        local = materialize(job, shipped, tmp) if shipped is not None else job
        out = tmp / "bundle"
        result = build(local.model_path, target=local.target, out=out, precision=local.precision,
                       engine=local.engine, calib=local.calib, eval=local.eval, preprocess=local.preprocess,
                       input_shapes=list(local.input_shapes) if local.input_shapes else None,
                       target_files=list(local.target_files), max_accuracy_drop=local.max_accuracy_drop,
                       use_cache=local.use_cache, measure_latency=local.measure_latency, observer=rec)
        steps = tuple({k: s.get(k) for k in ("id", "uses", "cached", "seconds", "cache_key")} for s in result.steps)
        return CellOutcome(job.cell_id, "built", node, time.perf_counter() - t0, steps=steps,
                           summary=_summary(result), bundle_tar=pack(out))
    except InterruptedBuild as exc:
        return CellOutcome(job.cell_id, "cancelled", node, time.perf_counter() - t0, steps=tuple(rec.steps),
                           error=exc.to_dict())
    except EdgeifyError as exc:
        err = {**exc.to_dict(), "step": rec.unfinished()}
        return CellOutcome(job.cell_id, "failed", node, time.perf_counter() - t0, steps=tuple(rec.steps),
                           error=err)
    except Exception as exc:  # a bug or an unexpected library error in this build: still a result of this cell
        err = {"type": type(exc).__name__, "message": str(exc), "hint": "rerun this cell alone with "
               "`edgeify build` and EDGEIFY_DEBUG=1 for the traceback", "exit_code": 1,
               "step": rec.unfinished(), "traceback": traceback.format_exc(limit=8)}
        return CellOutcome(job.cell_id, "failed", node, time.perf_counter() - t0, steps=tuple(rec.steps),
                           error=err)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
