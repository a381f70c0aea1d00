"""Where cells run: a local process pool (default) or a Ray cluster. Both take ``CellJob``s and give back
``CellOutcome``s; the driver (``runner``) decides what to submit when and publishes the bundles.

Ray: each cell is one task asking for ``cpus_per_cell`` CPUs (default 1, so cells schedule on 1-CPU nodes) and
``memory_per_cell`` bytes, retried by Ray (``max_retries``) only when its worker process or node dies
(``retry_exceptions=False``: a build that fails is a result, not a retry). Inputs (model, data, target files)
travel through the object store, once per model; the bundle comes back the same way.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import ConfigError
from .worker import CellJob, CellOutcome, collect_inputs, run_cell

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


class Executor(Protocol):
    name: str
    capacity: int | None  # how many cells to keep in flight (None: all that are ready; the cluster queues)

    def submit(self, job: CellJob) -> None: ...
    def wait(self, timeout: float) -> list[CellOutcome]: ...
    def cancel(self) -> list[str]: ...
    def close(self) -> None: ...


def _infra_failure(job: CellJob, what: str, exc: BaseException) -> CellOutcome:
    """Ray's exception texts run to dozens of lines: keep the first one."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return CellOutcome(job.cell_id, "failed", {"id": None}, 0.0, error={
        "type": type(exc).__name__, "message": f"{what}: {first}" if first else what, "exit_code": 1,
        "infrastructure": True, "hint": "the cell's worker died; rerun the matrix (finished cells are kept)"})


# -- local process pool ------------------------------------------------------------------------------------
def _init_worker(threads: int) -> None:
    """Pool workers leave Ctrl-C to the driver (which stops them with SIGTERM, so builds clean up) and split
    the machine's cores between them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for var in THREAD_VARS:
        os.environ.setdefault(var, str(threads))


class LocalPool:
    """``jobs`` worker processes (spawned: converters do not survive fork). A crashed worker (segfault, OOM
    kill) breaks the pool: its cells are resubmitted to a fresh pool up to ``retries`` times."""

    name = "local"

    def __init__(self, jobs: int, retries: int = 2) -> None:
        self.jobs = max(1, jobs)
        self.capacity = self.jobs
        self.retries = retries
        self._threads = max(1, (os.cpu_count() or 1) // self.jobs)
        self._pool = self._new_pool()
        self._futures: dict[cf.Future, CellJob] = {}
        self._attempts: dict[str, int] = {}

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_init_worker, initargs=(self._threads,))

    def submit(self, job: CellJob) -> None:
        self._attempts[job.cell_id] = self._attempts.get(job.cell_id, 0) + 1
        self._futures[self._pool.submit(run_cell, job)] = job

    def wait(self, timeout: float) -> list[CellOutcome]:
        if not self._futures:
            time.sleep(min(timeout, 0.05))
            return []
        done, _ = cf.wait(list(self._futures), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        out: list[CellOutcome] = []
        broken: list[CellJob] = []
        for fut in done:
            job = self._futures.pop(fut)
            try:
                out.append(fut.result())
            except cf.process.BrokenProcessPool as exc:
                if self._attempts[job.cell_id] <= self.retries:
                    broken.append(job)
                else:
                    out.append(_infra_failure(job, "the worker process died", exc))
        if broken:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            for job in broken:
                self.submit(job)
        return out

    def cancel(self) -> list[str]:
        """Stop every worker (SIGTERM: a running build removes its staging directory and exits)."""
        ids = [job.cell_id for job in self._futures.values()]
        procs = list(getattr(self._pool, "_processes", {}).values())  # the executor has no public terminate
        self._pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        self._futures.clear()
        return ids

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# -- Ray ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RayOptions:
    address: str | None = None        # None: start a private local Ray instance
    cpus_per_cell: float = 1.0
    memory_per_cell: int = 2 * 1024**3
    max_retries: int = 3
    cancel_grace_s: float = 10.0


def _import_ray(private: bool):
    if private and "ray" not in sys.modules:
        # a private single-node instance: Ray then listens on 127.0.0.1 only (its single-machine mode), not on
        # every interface, and takes a per-run token held in memory (Ray would otherwise write ~/.ray/auth_token,
        # which switches on token auth for every later `ray start` of the user)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
            import secrets

            os.environ.setdefault("RAY_AUTH_MODE", "token")
            os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray, which is not installed in this environment",
                          hint="pip install 'edgeify[ray]' (or pip install ray), then rerun; "
                               "or use the local pool: omit --executor") from None
    return ray


def _worker_env() -> dict[str, str]:
    """Where workers keep the step cache: the driver's EDGEIFY_HOME / XDG_CACHE_HOME when set (on a cluster,
    point them at storage every node mounts at the same path, so conversions are shared between nodes)."""
    return {k: os.environ[k] for k in ("EDGEIFY_HOME", "XDG_CACHE_HOME") if os.environ.get(k)}


def connect_ray(options: RayOptions, unit: str = "cell"):
    """``ray.init`` the cluster at ``options.address`` (None: a private local instance) and check that some node
    can hold one ``unit`` (``cpus_per_cell`` CPUs, ``memory_per_cell`` bytes); returns the ``ray`` module."""
    ray = _import_ray(private=not options.address)
    if options.address:
        _probe(options.address)
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": _worker_env()}, "log_to_driver": False,
                              "logging_level": "WARNING", "configure_logging": True}
    if options.address:
        kwargs["address"] = options.address
    else:
        kwargs.update(include_dashboard=False)
    try:
        ray.init(**kwargs)
    except Exception as exc:
        raise ConfigError(f"cannot connect to the Ray cluster at {options.address or '(local)'}: "
                          f"{type(exc).__name__}: {exc}",
                          hint="start it (`ray start --head --port 6379`, then `ray start --address "
                               "HEAD:6379` on each worker) and check `ray status --address HEAD:6379`") from None
    _check_fits(ray, options, unit)
    return ray


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when nothing answers at HOST:PORT: ``ray.init`` would retry connecting to a missing GCS for ever
    (a log line every few seconds, no deadline)."""
    import socket

    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # ``auto``, ``ray://...``: Ray resolves those itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"cannot connect to the Ray cluster at {address}: nothing answers there "
                          f"({type(exc).__name__}: {exc})",
                          hint="start it (`ray start --head --port 6379`, then `ray start --address "
                               "HEAD:6379` on each worker) and check `ray status --address HEAD:6379`") from None


def _check_fits(ray: Any, o: RayOptions, unit: str) -> None:
    """A task no node can hold would wait forever: refuse the run up front instead."""
    fits = [n for n in ray.nodes() if n.get("Alive")
            and n.get("Resources", {}).get("CPU", 0) >= o.cpus_per_cell
            and n.get("Resources", {}).get("memory", 0) >= o.memory_per_cell]
    if not fits:
        ray.shutdown()
        raise ConfigError(f"no node of the Ray cluster has {o.cpus_per_cell:g} CPUs and "
                          f"{o.memory_per_cell / 1024**3:.1f} GiB free for a {unit}",
                          hint=("lower --cpus-per-cell / --memory-per-cell, or " if unit == "cell" else "")
                          + "add bigger nodes (`ray status` lists their resources)")


def ray_nodes(ray: Any) -> list[dict[str, Any]]:
    return [{"id": n["NodeID"], "ip": n.get("NodeManagerAddress"), "alive": n.get("Alive"),
             "cpus": n.get("Resources", {}).get("CPU")} for n in ray.nodes()]


def cancel_refs(ray: Any, refs: list[Any], grace_s: float) -> None:
    """``ray.cancel`` every unfinished task (KeyboardInterrupt in the task: the build cleans up); after the
    grace period, force-kill the ones still running."""
    for ref in refs:
        ray.cancel(ref, force=False)
    if not refs:
        return
    _, pending = ray.wait(refs, num_returns=len(refs), timeout=grace_s)
    for ref in pending:
        ray.cancel(ref, force=True)


class RayCluster:
    name = "ray"
    capacity = None

    def __init__(self, options: RayOptions) -> None:
        self.ray = connect_ray(options)
        self.options = options
        self._remote = self.ray.remote(run_cell)
        self._refs: dict[Any, CellJob] = {}
        self._inputs: dict[tuple, Any] = {}

    def nodes(self) -> list[dict[str, Any]]:
        return ray_nodes(self.ray)

    def _shipped(self, job: CellJob) -> Any:
        key = (job.model_path, job.calib, job.eval, job.preprocess, job.target_files)
        if key not in self._inputs:  # once per model: every cell of it reads the same object
            self._inputs[key] = self.ray.put(collect_inputs(job))
        return self._inputs[key]

    def submit(self, job: CellJob) -> None:
        o = self.options
        ref = self._remote.options(
            name=f"edgeify-cell:{job.cell_id}", num_cpus=o.cpus_per_cell, memory=o.memory_per_cell,
            max_retries=o.max_retries, retry_exceptions=False,
        ).remote(job, self._shipped(job))
        self._refs[ref] = job

    def wait(self, timeout: float) -> list[CellOutcome]:
        if not self._refs:
            time.sleep(min(timeout, 0.05))
            return []
        ready, _ = self.ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            job = self._refs.pop(ref)
            try:
                out.append(self.ray.get(ref))
            except self.ray.exceptions.TaskCancelledError as exc:
                out.append(CellOutcome(job.cell_id, "cancelled", {"id": None}, 0.0, error={
                    "type": type(exc).__name__, "message": "cancelled", "exit_code": 130}))
            except self.ray.exceptions.RayError as exc:  # worker/node died more than max_retries times
                out.append(_infra_failure(job, f"lost after {self.options.max_retries} retries", exc))
        return out

    def cancel(self) -> list[str]:
        """Cancel every unfinished cell (``cancel_refs``)."""
        ids = [job.cell_id for job in self._refs.values()]
        cancel_refs(self.ray, list(self._refs), self.options.cancel_grace_s)
        self._refs.clear()
        return ids

    def close(self) -> None:
        self.ray.shutdown()

