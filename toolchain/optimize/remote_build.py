"""``edgeify optimize --executor ray``: candidate builds as Ray tasks on a cluster; measurement stays where it was
(this machine, or ``--device`` over SSH), because latency must be measured on the device.

Each round's candidates (all artifacts of the search space) are submitted at once, one Ray task each, with the
resource requests and retry rules of ``build-matrix`` (``edgeify.matrix.executors``): 1 CPU and 2 GiB per build,
retried by Ray (``max_retries``) only when its worker process or node dies; a build that fails (parity,
conversion, data) is a candidate result, never a retry. The model and data travel through the object store once
per run. Each bundle comes back as a tar archive and is checked against its manifest (sha256 of every file) before
it is published in the run's work directory; the candidate records the Ray node that built it. The round is
waited for before screening starts, so no build of the run competes with a measurement on a local device.
Ctrl-C (or ``--max-time``) cancels the unfinished tasks (``ray.cancel``).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgeify.errors import EdgeifyError, UsageError
from edgeify.matrix.executors import RayOptions, cancel_refs, connect_ray, ray_nodes
from edgeify.matrix.publish import publish_bundle
from edgeify.matrix.worker import CellJob, collect_inputs, materialize, node_info, pack
from edgeify_runtime.errors import EdgeifyRuntimeError

from .candidates import Built, CandidateBuilder, Inputs, LocalBuilder, build_candidate
from .search import Search

if TYPE_CHECKING:
    from edgeify.matrix.executors import RayOptions
    from edgeify.matrix.worker import CellJob

    from .space import ArtifactPlan

Executor = Literal["local", "ray"]


def make_builder(executor: str, ray_address: str | None, say: Callable[[str], None]) -> CandidateBuilder:
    """``local``: each candidate built in this process (default); ``ray``: on the Ray cluster at ``ray_address``
    (None: a private local Ray instance). Raises ``ConfigError`` (exit 4) when Ray is missing or unreachable."""

    if executor == "local":
        if ray_address:
            raise UsageError("--ray-address needs --executor ray", hint="add --executor ray")
        return LocalBuilder()
    if executor == "ray":
        return RayBuilder(RayOptions(address=ray_address), say)
    raise UsageError(f"executor {executor!r}: expected local or ray", hint="--executor local or --executor ray")


def _inputs_job(inp: Inputs) -> CellJob:
    """The run's input files in the shape ``matrix.worker`` ships and materializes."""

    return CellJob(cell_id="optimize", model="optimize", target=inp.spec.name, precision="-", engine=None,
                   model_path=inp.model, calib=inp.calib, eval=inp.eval, preprocess=inp.preprocess)


def _failed(inp: Inputs, plan: ArtifactPlan, error: str, node: dict[str, Any] | None = None) -> Built:
    return Built(plan, None, inp.spec.engines[plan.engine].runtime, None, error=error, status="build-failed",
                 node=node)


def build_on_worker(inp: Inputs, plan: ArtifactPlan, index: int,
                    shipped: dict[str, dict[str, bytes]]) -> tuple[Built, str, bytes | None]:
    """The Ray task: build one candidate in a worker-side temporary directory; (the candidate without its local
    path, the bundle directory's name, the bundle as a tar archive or None)."""

    node = node_info()
    tmp = Path(tempfile.mkdtemp(prefix="edgeify-candidate-"))
    try:
        job = materialize(_inputs_job(inp), shipped, tmp)
        local = dataclasses.replace(inp, model=job.model_path, calib=job.calib, eval=job.eval,
                                    preprocess=job.preprocess, work=tmp)
        try:
            built = build_candidate(local, plan, index)
        except Exception as exc:  # a bug or an unexpected library error: still this candidate's result
            first = (f"{type(exc).__name__}: {exc}".splitlines() or [""])[0]
            return _failed(inp, plan, first, node), "", None
        if built.bundle is None:
            return dataclasses.replace(built, node=node), "", None
        return dataclasses.replace(built, bundle=None, node=node), built.bundle.name, pack(built.bundle)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _label(plan: ArtifactPlan) -> str:
    return f"{plan.engine} {plan.precision} ({plan.recipe.name})"


def _where(node: dict[str, Any] | None) -> str:
    node = node or {}
    return f"node {node.get('ip') or node.get('host')} ({str(node.get('id', ''))[:8]})"


class RayBuilder:
    """A ``CandidateBuilder`` on a Ray cluster (see the module docstring)."""

    def __init__(self, options: RayOptions, say: Callable[[str], None]) -> None:
        self.ray = connect_ray(options, unit="candidate build")
        self.options = options
        self.say = say
        self._remote = self.ray.remote(build_on_worker)
        self._shipped: Any = None
        self._pending: dict[str, tuple[Any, Inputs, ArtifactPlan, float]] = {}  # plan key -> (ref, ...)
        self._done: dict[str, Built] = {}
        alive = [n for n in ray_nodes(self.ray) if n["alive"]]
        say(f"Ray cluster {options.address or '(a private local instance)'}: {len(alive)} node(s), "
            f"{sum(n['cpus'] or 0 for n in alive):g} CPU(s); candidates are built there and measured on the device")

    @staticmethod
    def _key(plan: ArtifactPlan) -> str:
        return Search._key(plan)

    def _submit(self, inp: Inputs, plan: ArtifactPlan, index: int) -> None:
        key = self._key(plan)
        if key in self._pending or key in self._done:
            return
        if self._shipped is None:  # once per run: every build reads the same object

            self._shipped = self.ray.put(collect_inputs(_inputs_job(inp)))
        o = self.options
        ref = self._remote.options(
            name=f"edgeify-candidate:c{index:03d}-{plan.engine}-{plan.precision}-{plan.recipe.name}",
            num_cpus=o.cpus_per_cell, memory=o.memory_per_cell, max_retries=o.max_retries, retry_exceptions=False,
        ).remote(inp, plan, index, self._shipped)
        self._pending[key] = (ref, inp, plan, time.monotonic())

    def _collect(self, timeout: float) -> None:
        """Take in whichever builds finished within ``timeout`` seconds."""
        by_ref = {v[0]: k for k, v in self._pending.items()}
        ready, _ = self.ray.wait(list(by_ref), num_returns=1, timeout=timeout)
        for ref in ready:
            key = by_ref[ref]
            _, inp, plan, t0 = self._pending.pop(key)
            self._done[key] = self._receive(ref, inp, plan, time.monotonic() - t0)

    def _receive(self, ref: Any, inp: Inputs, plan: ArtifactPlan, seconds: float) -> Built:
        exc_types = self.ray.exceptions
        try:
            built, name, archive = self.ray.get(ref)
        except exc_types.TaskCancelledError:
            return _failed(inp, plan, "cancelled on the Ray cluster")
        except exc_types.RayTaskError as exc:
            return _failed(inp, plan, f"the build task failed: {(str(exc).strip().splitlines() or [''])[0]}")
        except exc_types.RayError as exc:  # its worker or node died more than max_retries times
            first = (str(exc).strip().splitlines() or [""])[0]
            return _failed(inp, plan, f"{type(exc).__name__}: lost after {self.options.max_retries} retries: {first}")
        if archive is not None:
            dest = inp.work / name
            try:
                publish_bundle(archive, dest)
            except (EdgeifyError, EdgeifyRuntimeError, OSError, ValueError) as exc:  # incl. tarfile.TarError
                return _failed(inp, plan, f"the bundle from {_where(built.node)} failed its check: {exc}", built.node)
            built = dataclasses.replace(built, bundle=dest)
        self.say(f"Ray: {_label(plan)} {built.status} on {_where(built.node)}, {seconds:.1f} s after submission")
        return built

    # -- CandidateBuilder ------------------------------------------------------------------------------------
    def prefetch(self, inp: Inputs, plans: Sequence[tuple[ArtifactPlan, int]], deadline: float) -> None:
        """Submit the round's builds at once and wait for them (until ``deadline``, ``time.monotonic()``)."""
        for plan, index in plans:
            self._submit(inp, plan, index)
        if self._pending:
            self.say(f"Ray: building {len(self._pending)} candidate(s) at once")
        while self._pending and time.monotonic() < deadline:
            self._collect(timeout=max(0.0, min(1.0, deadline - time.monotonic())))

    def build(self, inp: Inputs, plan: ArtifactPlan, index: int) -> Built:
        key = self._key(plan)
        self._submit(inp, plan, index)
        while key not in self._done:
            self._collect(timeout=1.0)
        return self._done.pop(key)

    def close(self) -> None:
        refs = [v[0] for v in self._pending.values()]
        if refs:
            self.say(f"Ray: cancelling {len(refs)} unfinished candidate build(s)")
            cancel_refs(self.ray, refs, self.options.cancel_grace_s)
        self._pending.clear()
        self.ray.shutdown()


__all__ = ["Executor", "RayBuilder", "build_on_worker", "make_builder"]
