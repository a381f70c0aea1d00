"""``edgeify.optimize(...)``: the fastest bundle that meets the accuracy and latency budgets, measured on the
device. Returns an :class:`~edgeify.optimize.records.OptimizeResult`; raises ``AccuracyGateError`` (exit 10) or
``LatencyBudgetError`` (exit 13) with the result attached (``err.result``) when no candidate meets the budgets,
``InterruptedBuild`` (exit 130, the best so far written to ``out`` and attached) after Ctrl-C / SIGTERM."""

from __future__ import annotations

import datetime as dt
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

from edgeify.bundle import check_output
from edgeify.deploy.inventory import Inventory
from edgeify.errors import AccuracyGateError, EdgeifyError, InterruptedBuild, LatencyBudgetError, TargetError
from edgeify.targets import load_registry

from . import compress_rungs
from .autotarget import choose_target, device_facts
from .candidates import Inputs
from .choose import accuracy_ok, closest_text, meets, pareto, why
from .confirm import DEFAULT_ROUNDS, confirm, why_text
from .measure import full_protocol
from .publish import write_chosen
from .records import AccuracyMeasure, Budgets, Chosen, Objective, OptimizeResult
from .remote_build import make_builder
from .search import Search
from .space import DeviceFacts
from .stored import record as record_in_store


def _stderr(msg: str) -> None:
    print(f"optimize: {msg}", file=sys.stderr, flush=True)


def accuracy_measure_for(eval: str | Path | None) -> AccuracyMeasure:
    """``labels`` when the eval data has labels, else ``agreement`` with the source model."""
    if eval is None:
        return "agreement"
    p = Path(eval)
    if p.is_dir():
        return "labels" if any(x.is_dir() for x in p.iterdir()) else "agreement"
    if p.suffix == ".npz":
        import numpy as np

        with np.load(p, allow_pickle=False) as z:
            return "labels" if "labels" in z.files else "agreement"
    return "agreement"


def _check_declared_target(reg, device: str, spec, reason: str) -> None:
    """``--target auto --device D`` picks the board from D's own fingerprint; every candidate is then deployed to D,
    whose devices-file entry names a target, and the deployer refuses a bundle built for another one. Say so before
    building anything (instead of every candidate failing its benchmark)."""

    declared = Inventory().get(device).target
    try:
        declared_name = reg.resolve(declared)[0].name
    except EdgeifyError:
        declared_name = declared
    if declared_name != spec.name:
        raise TargetError(
            f"--target auto: device {device}'s CPU fits {spec.name} ({reason}), but the devices file declares it "
            f"{declared_name!r}, so the deployer would refuse every candidate",
            hint=f"fix the device's entry (edgeify devices add {device} ... --target {spec.name}), or pass "
                 f"--target {declared_name} if the entry is right")


def resolve_target(target: str, device: str, target_files: tuple[str, ...]) -> tuple[object, DeviceFacts, str]:
    reg = load_registry(target_files)
    if target == "auto":
        facts = DeviceFacts.local() if device == "local" else device_facts(device)
        spec, reason = choose_target(reg, facts)
        if device != "local":
            _check_declared_target(reg, device, spec, reason)
        return spec, facts, f"{reason} (--target auto, {'this machine' if device == 'local' else device})"
    spec, family = reg.resolve(target)
    if device == "local":
        facts = DeviceFacts.local()
    else:  # from the spec until the first measurement brings the device's own fingerprint
        facts = DeviceFacts(arch=spec.arch, cpu_model=spec.cpu.model, flags=spec.cpu.features,
                            physical_cores=spec.cpu.cores or 1)
    return spec, facts, (f"{spec.name}: the default board of family {family}" if family else f"{spec.name}: --target")


def run_optimize(model: str | Path, *, target: str = "auto", out: str | Path, device: str = "local",
             calib: str | Path | None = None, eval: str | Path | None = None, preprocess: str | Path | None = None,
             input_shapes: list[str] | None = None, max_accuracy_drop: float | None = None,
             max_latency_ms: float | None = None, percentile: str = "p50", objective: Objective = "latency",
             max_time_s: float = 1800.0, engines: list[str] | None = None, precisions: list[str] | None = None,
             target_files: list[str] | tuple[str, ...] = (), use_cache: bool = True,
             trust_source: bool = False, executor: str = "local", ray_address: str | None = None,
             progress: Callable[[str], None] | None = None, compress: str | None = None,
             train: str | Path | None = None, train_time: str | None = None,
             epochs: int | None = None, train_lr: float | None = None,
             confirm_rounds: int | None = None) -> OptimizeResult:
    """Search engines x precisions x recipes x run-time settings of ``target`` for ``model`` on ``device``;
    with ``compress`` (``"prune,distill,qat"``) also compressed candidates trained on ``train``
    (``compress_rungs``)."""

    say = progress or _stderr
    t0 = time.perf_counter()
    compress_req = compress_rungs.parse_compress(compress, None if train is None else str(train), train_time, epochs,
                                                 lr=train_lr)
    check_output(out)  # refused before anything is built: -o must be new, empty or an earlier bundle
    run_id = f"opt-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    spec, facts, target_reason = resolve_target(target, device, tuple(target_files))
    say(f"run {run_id}: target {target_reason}")
    measure = accuracy_measure_for(eval)
    if eval is not None and measure == "agreement":
        say(f"{eval} has no labels: accuracy is agreement with the source model on the calibration inputs")
    budgets = Budgets(max_accuracy_drop=max_accuracy_drop, max_latency_ms=max_latency_ms, percentile=percentile,
                      max_time_s=max_time_s)
    builder = make_builder(executor, ray_address, say)  # Ray: connected (or refused) before anything is built
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".edgeify-optimize-{run_id}"
    work.mkdir()
    inp = Inputs(model=str(model), spec=spec, work=work, calib=None if calib is None else str(calib),
                 eval=None if eval is None else str(eval), preprocess=None if preprocess is None else str(preprocess),
                 input_shapes=tuple(input_shapes or ()), accuracy_measure=measure, use_cache=use_cache,
                 trust_source=trust_source)
    try:
        if compress_req is not None:  # the source kind, labelled --eval, --train: before any build
            compress_rungs.check(compress_req, inp)
        search = (Search if compress_req is None else partial(compress_rungs.CompressSearch, compress_req))(
                        inp, spec, facts, budgets, objective, device, run_id, full_protocol(spec.bench), say,
                        engines=tuple(engines) if engines else None,
                        precisions=tuple(precisions) if precisions else None, builder=builder)
        search.run()
        cands = [c.model_copy(update={"meets_budget": _meets(c, budgets)}) for c in search.cands]
        cands = compress_rungs.mark_front(cands, percentile) if compress_req is not None else cands
        idx = compress_rungs.choose_kept(cands, budgets, objective)
        confirmed = None  # the finalists re-measured in interleaved rounds: ties within run-level noise
        if idx is not None and objective == "latency" and compress_req is None and not search.interrupted:
            confirmed = confirm(cands, budgets, rounds=DEFAULT_ROUNDS if confirm_rounds is None else confirm_rounds,
                                runtime_of=lambda e: spec.engines[e].runtime,
                                proto=full_protocol(spec.bench), device=device, run_id=run_id,
                                deadline=search.deadline, say=say, pick=idx)
            idx = idx if confirmed is None or confirmed.get("chosen") is None else confirmed["chosen"]
        ladder = tuple(r for rungs in search.ladders.values() for r in rungs)
        chosen = None
        failure = None
        if idx is not None:
            c = cands[idx]
            rungs = tuple(search.ladders.get(c.engine, ()))
            chosen = Chosen(bundle=str(out), engine=c.engine, precision=c.precision, recipe=c.recipe,
                            settings=c.row()["settings"], latency_ms=dict(c.latency_ms or c.screen_latency_ms or {}),
                            accuracy_drop=c.accuracy_drop, size_bytes=c.size_bytes, quantized_ops=c.quantized_ops,
                            total_ops=c.total_ops, ladder=rungs, index=idx,
                            why="; ".join(x for x in (why(c, cands, budgets, objective, confirmed=why_text(
                                confirmed)), why_text(confirmed, skipped=True)) if x),
                            compression=c.compression)
        else:
            failure = "accuracy" if not any(accuracy_ok(c, budgets) for c in cands) else "latency"
        result = OptimizeResult(run_id=run_id, objective=objective, budgets=budgets, target=spec.name,
                                target_reason=target_reason, device=device, accuracy_measure=measure,
                                chosen=chosen, candidates=tuple(cands), pareto=tuple(pareto(cands, percentile)),
                                ladder=ladder, stopped="; ".join(x for x in (search.stopped, *search.failures) if x),
                                wall_s=round(time.perf_counter() - t0, 2),
                                failure=failure, confirm=confirmed)
        record_in_store(result, say)  # each stored benchmark: its candidate, accuracy, protocol, chosen or not
        if chosen is not None:
            write_chosen(cands[idx], spec.engines[chosen.engine].runtime, out, result, chosen.ladder)
            comp = f"{compress_rungs.label(cands[idx])}, " if chosen.compression else ""
            say(f"chose {chosen.engine} {chosen.precision} ({comp}{chosen.recipe.name}): {chosen.why}; wrote {out}")
            if not search.interrupted:
                return result
    finally:
        builder.close()
        shutil.rmtree(work, ignore_errors=True)
    if search.interrupted:  # exit 130, with the best so far (complete, published atomically) and the table
        stored = sum(len(c.result_ids) for c in cands)
        err0 = InterruptedBuild(
            f"optimize interrupted after {len(cands)} candidate(s) ({stored} benchmark(s) stored under run "
            f"{run_id}); " + (f"the best so far is at {out}" if chosen is not None else
                              f"none met the budgets yet: nothing was written to {out}"),
            hint="rerun the same command to search the rest (the step cache keeps every artifact already built)")
        err0.result = result  # type: ignore[attr-defined]
        raise err0
    near = closest_text(cands, budgets)
    if failure == "accuracy":
        err: Exception = AccuracyGateError(
            f"no candidate meets --max-accuracy-drop {max_accuracy_drop} (or its parity gate); closest: {near or '-'}",
            hint="allow a larger --max-accuracy-drop, give more representative --calib data, or more --max-time")
    else:
        err = LatencyBudgetError(
            f"no candidate meets --max-latency-ms {max_latency_ms} ({percentile}); closest: {near or '-'}",
            hint="allow a larger --max-latency-ms or --max-accuracy-drop, or use a faster device")
    err.result = result  # type: ignore[attr-defined]
    raise err


def _meets(c, budgets: Budgets) -> bool:
    return meets(c, budgets)
