"""Drive a rollout wave by wave: deploy, gate on every device of the wave, roll back a failed wave, stop.

State goes to the results store before each action (:mod:`.state`), so :func:`resume` continues exactly where a
rollout stopped and :func:`abort` knows what every device ran before it was touched.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..bench import BenchSettings, settings_for
from ..data import load_dataset
from ..deploy.apps import resolve_app
from ..deploy.deployer import LocalBundle, bundle_name
from ..deploy.fleet import deploy, run_fleet
from ..deploy.inventory import Device, Inventory
from ..errors import (
    BundleError,
    ConfigError,
    EdgeifyError,
    InterruptedBuild,
    PrometheusError,
    RolloutGateError,
    UnreachableError,
    UsageError,
)
from ..store import open_store
from . import soak as soaking
from .device import accuracy_device, app_on_device, gate_device, installed, is_unreachable, put_back, restart_app
from .plan import Gate, Plan, order_devices, parse_waves, split_waves
from .state import RolloutRecord, RolloutStore

Progress = Callable[[str], None]
#: seconds between retries of an unreachable device (doubled each time)
RETRY_BACKOFF_S = 2.0
UNFINISHED = ("running", "paused", "interrupted")


def _quiet(_msg: str) -> None:
    pass


def plan_rollout(bundle: str, selector: str | Sequence[str], *, waves: str = "1,10%,50%,100%",
                 gate: str | Gate = "p95<=1.05x", runs: int = 3, rollback: str = "wave", name: str | None = None,
                 force: bool = False, samples: int | None = None, retries: int = 2,
                 eval_data: str | None = None, max_accuracy_drop: float | None = None, app: str | None = None,
                 soak: str | float | None = None, prometheus: str | None = None,
                 inventory: Inventory | None = None) -> tuple[Plan, dict[str, Device]]:
    """The plan (validated: bundle, devices, waves, gate) without touching any device."""
    if runs < 2:
        raise UsageError("--runs must be at least 2 (the gate compares runs, not samples)", hint="e.g. --runs 3")
    if rollback not in ("wave", "all"):
        raise UsageError(f"--rollback {rollback!r}: expected wave or all")
    local = LocalBundle.read(bundle)  # validates the manifest and every file's sha256 before anything is sent
    if max_accuracy_drop is not None and not eval_data:
        raise UsageError("--max-accuracy-drop needs --eval", hint="e.g. --eval eval.npz --max-accuracy-drop 0.3")
    if eval_data:
        _eval_set(eval_data, local)  # bad data fails here (exit 7), before any device is touched
        eval_data = str(Path(eval_data).resolve())
        max_accuracy_drop = 1.0 if max_accuracy_drop is None else max_accuracy_drop
    app_kind, soak_s = _app_and_soak(app, soak, prometheus)
    inv = inventory or Inventory()
    if isinstance(selector, str):
        devices = inv.select(selector) if ("," in selector or ":" in selector or selector == "all") \
            else [inv.get(selector)]
        sel_text = selector
    else:
        devices = [inv.get(n) for n in selector]
        sel_text = ",".join(selector)
    ordered = order_devices(devices, seed=local.digest)
    counts = parse_waves(waves, len(ordered))
    plan = Plan(bundle=str(local.path), bundle_digest=local.digest, name=bundle_name(local, name),
                selector=sel_text, waves=split_waves([d.name for d in ordered], counts),
                gate=gate if isinstance(gate, Gate) else Gate.parse(gate), runs=runs, rollback=rollback,
                force=force, samples=samples, retries=retries, eval_data=eval_data,
                max_accuracy_drop=max_accuracy_drop, app=app_kind, soak_s=soak_s,
                prometheus=prometheus.rstrip("/") if prometheus else None)
    return plan, {d.name: d for d in ordered}


def _app_and_soak(app: str | None, soak: str | float | None, prometheus: str | None) -> tuple[str | None,
                                                                                               float | None]:
    """``--app`` -> the app's kind; ``--soak`` -> seconds (it needs ``--prometheus`` and the app's service, and
    Prometheus must answer now: exit 18 before any device is touched)."""
    kind = resolve_app(app).kind if app else None
    if prometheus and soak is None:
        raise UsageError("--prometheus is what --soak watches", hint="add --soak DURATION, e.g. --soak 5m")
    if soak is None:
        return kind, None
    soak_s = float(soak) if isinstance(soak, (int, float)) else soaking.parse_duration(soak)
    if not prometheus:
        raise UsageError("--soak watches the wave through Prometheus: it needs --prometheus URL",
                         hint="e.g. --soak 5m --prometheus http://127.0.0.1:9090")
    if kind is None:
        raise UsageError("--soak watches the devices' service on live traffic: it needs --app (the service the "
                         "devices run, e.g. --app serve)", hint="e.g. --app serve --soak 5m --prometheus URL")
    soaking.check(prometheus)
    return kind, soak_s


#: at most this many --eval samples go to each device (one agent call per bundle)
EVAL_SAMPLES = 512


def _eval_set(path: str, local: LocalBundle) -> Any:
    return load_dataset(path, list(local.manifest.inputs), purpose="evaluation").head(EVAL_SAMPLES)


def start(bundle: str, selector: str | Sequence[str], *, store: Any = None, progress: Progress | None = None,
          parallel: int | None = None, connect: dict[str, Any] | None = None, **plan_options: Any) -> RolloutRecord:
    """Plan and run a rollout; an unfinished rollout of the same bundle to the same devices is resumed instead,
    and a finished one is reported as it is (re-running is idempotent)."""

    inventory = plan_options.pop("inventory", None)
    plan, devices = plan_rollout(bundle, selector, inventory=inventory, **plan_options)
    with (store or open_store()) as st:
        rs = RolloutStore(st)
        same = next((r for r in rs.list(50) if r.plan.bundle_digest == plan.bundle_digest
                     and sorted(r.plan.devices) == sorted(plan.devices) and r.plan.name == plan.name
                     and r.state in (*UNFINISHED, "done")), None)
        if same is not None and same.state == "done":
            (progress or _quiet)(f"rollout {same.id} already put this bundle on these devices: nothing to do")
            return same
        if same is not None:
            rid = same.id
            (progress or _quiet)(f"resuming unfinished rollout {rid} of this bundle")
        else:
            rid = rs.create(plan)
            _read_fleet(rs, rid, plan, devices, parallel, connect or {})
        return _drive(rs, rid, devices, progress=progress or _quiet, parallel=parallel, connect=connect or {})


def resume(rollout_id: str, *, store: Any = None, progress: Progress | None = None, parallel: int | None = None,
           connect: dict[str, Any] | None = None, inventory: Inventory | None = None) -> RolloutRecord:
    with (store or open_store()) as st:
        rs = RolloutStore(st)
        rec = rs.get(rollout_id)
        if rec.state == "done":
            return rec
        if rec.state not in UNFINISHED:
            raise UsageError(f"rollout {rec.id} is {rec.state}: there is nothing to resume",
                             hint=f"edgeify rollout status {rec.id}; start a new one with edgeify rollout BUNDLE")
        inv = inventory or Inventory()
        devices = {n: inv.get(n) for n in rec.plan.devices}
        return _drive(rs, rec.id, devices, progress=progress or _quiet, parallel=parallel, connect=connect or {})


def abort(rollout_id: str, *, store: Any = None, progress: Progress | None = None, parallel: int | None = None,
          connect: dict[str, Any] | None = None, inventory: Inventory | None = None) -> RolloutRecord:
    """Roll every device this rollout switched back to what it ran before; the rollout ends ``aborted``."""

    with (store or open_store()) as st:
        rs = RolloutStore(st)
        rec = rs.get(rollout_id)
        inv = inventory or Inventory()
        devices = {n: inv.get(n) for n in rec.plan.devices}
        _roll_back(rs, rec, list(rec.plan.devices), devices, progress or _quiet, parallel, connect or {})
        rs.set_state(rec.id, "aborted", ended_at=time.time())
        return rs.get(rec.id)


def status(rollout_id: str | None = None, *, store: Any = None) -> RolloutRecord:
    with (store or open_store()) as st:
        return RolloutStore(st).get(rollout_id)


# -- the driver ------------------------------------------------------------------------------------------------
def _drive(rs: RolloutStore, rid: str, devices: dict[str, Device], *, progress: Progress, parallel: int | None,
           connect: dict[str, Any]) -> RolloutRecord:
    rec = rs.get(rid)
    plan = rec.plan
    local = LocalBundle.read(plan.bundle)
    if local.digest != plan.bundle_digest:
        raise BundleError(f"{plan.bundle} changed since rollout {rid} started ({plan.bundle_digest[:12]} → "
                          f"{local.digest[:12]})", hint=f"edgeify rollout abort {rid}, then start a new rollout")
    # --samples: exactly that many timed samples per run (no minimum duration); else the target's protocol
    settings = settings_for(plan.bundle, runs=plan.samples, min_duration_s=0.0 if plan.samples else None)
    rs.set_state(rid, "running")
    work = Path(tempfile.mkdtemp(prefix="edgeify-rollout-"))
    evalset = None
    if plan.eval_data:
        import numpy as np

        data = _eval_set(plan.eval_data, local)
        np.savez(work / "eval-inputs.npz", **data.inputs)
        evalset = (str(work / "eval-inputs.npz"), data.labels, work)
    try:
        for w, names in enumerate(plan.waves):
            rec = rs.get(rid)
            todo = [n for n in names if rec.device(n).status != "passed"]
            if todo:
                progress(f"wave {w + 1}/{len(plan.waves)}: {len(names)} device(s) "
                         f"({'canary' if w == 0 else f'{len(names)} more'}), gate {plan.gate.describe()}")
                run_fleet([devices[n] for n in todo],
                          lambda d: _one_device(rs, rid, plan, d, local, settings, progress, connect, evalset),
                          max_workers=parallel)
            rec = rs.get(rid)
            unreachable = [n for n in names if rec.device(n).status == "unreachable"]
            failed = [n for n in names if rec.device(n).status not in ("passed", "unreachable")]
            if not failed and not unreachable and plan.soak_s and w not in rec.detail.get("soaked", []):
                failed = _soak_wave(rs, rid, w, names, progress)
            if failed:
                _fail_wave(rs, rid, w, failed, devices, progress, parallel, connect)
            if unreachable:
                rs.set_state(rid, "paused", paused_wave=w, unreachable=unreachable)
                raise UnreachableError(
                    f"rollout {rid} paused at wave {w + 1}: {len(unreachable)} device(s) unreachable after "
                    f"{plan.retries + 1} attempts ({', '.join(unreachable[:5])}); they are not counted as passing",
                    hint=f"bring them back, then edgeify rollout resume {rid} (or edgeify rollout abort {rid})")
        rs.set_state(rid, "done", ended_at=time.time())
        return rs.get(rid)
    except KeyboardInterrupt:
        rs.set_state(rid, "interrupted")
        raise InterruptedBuild(f"rollout {rid} interrupted; its progress is stored",
                               hint=f"edgeify rollout status {rid}; edgeify rollout resume {rid}") from None
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def _soak_wave(rs: RolloutStore, rid: str, w: int, names: Sequence[str], progress: Progress) -> list[str]:
    """Watch the wave's services on live traffic through Prometheus; returns the devices that failed (stored as
    ``failed`` with their soak verdict). A Prometheus that stops answering pauses the rollout (exit 18)."""
    plan = rs.get(rid).plan
    assert plan.soak_s and plan.prometheus
    progress(f"wave {w + 1}: soaking {len(names)} device(s) for {plan.soak_s:g} s on live traffic "
             f"({plan.prometheus})")
    try:
        verdicts = soaking.soak(plan.prometheus, list(names), plan.soak_s, progress=progress)
    except PrometheusError as exc:
        rs.set_state(rid, "paused", paused_wave=w, soak_error=exc.message)
        raise PrometheusError(f"rollout {rid} paused at wave {w + 1}: {exc.message}",
                              hint=f"bring Prometheus back, then edgeify rollout resume {rid} (the wave soaks "
                                   f"again), or edgeify rollout abort {rid}") from None
    rec = rs.get(rid)
    failed = []
    for n in names:
        v = verdicts[n]
        detail = {**rec.device(n).detail, "soak": v}
        if v["verdict"] == "pass":
            rs.set_device(rid, n, "passed", detail=detail)
            progress(f"  {n}: soak passed" + (f" (p95 {v['p95_ms']:.1f} ms, budget {v['budget_ms']:.1f} ms)"
                                              if "p95_ms" in v and "budget_ms" in v else f" ({v.get('note', '')})"))
        else:
            rs.set_device(rid, n, "failed", detail=detail)
            if v["verdict"] == "fail":
                failed.append(n)
            progress(f"  {n}: soak {'FAILED' if v['verdict'] == 'fail' else 'stopped'}: {v.get('reason')}")
    if not failed:
        rs.set_state(rid, "running", soaked=[*rec.detail.get("soaked", []), w])
    return failed


def _fail_wave(rs: RolloutStore, rid: str, w: int, failed: Sequence[str], devices: dict[str, Device],
               progress: Progress, parallel: int | None, connect: dict[str, Any]) -> None:
    """Roll back the failed wave (or every wave so far), then stop with exit 17."""
    rec = rs.get(rid)
    plan = rec.plan
    names = plan.waves[w]
    scope = [n for ws in plan.waves[:w + 1] for n in ws] if plan.rollback == "all" else list(names)
    progress(f"wave {w + 1} failed on {', '.join(failed)}: rolling back {len(scope)} device(s)")
    t0 = time.monotonic()
    _roll_back(rs, rec, scope, devices, progress, parallel, connect)
    rs.set_state(rid, "failed", failed_wave=w, failed_devices=list(failed),
                 rollback_seconds=round(time.monotonic() - t0, 3))
    raise RolloutGateError(
        f"rollout {rid}: wave {w + 1} of {len(plan.waves)} failed its gate on "
        f"{len(failed)} device(s) ({', '.join(failed[:5])}{'...' if len(failed) > 5 else ''}); "
        f"{'every wave' if plan.rollback == 'all' else 'that wave'} was rolled back",
        hint=f"edgeify rollout status {rid}  (each device's verdict and what it runs now)")


def _read_fleet(rs: RolloutStore, rid: str, plan: Plan, devices: dict[str, Device], parallel: int | None,
                connect: dict[str, Any]) -> None:
    """What every device runs before the rollout starts (``status`` shows it for devices still pending); a device
    that cannot be reached now is read again when its wave comes."""
    def one(dev: Device) -> None:
        try:
            current = installed(dev, plan.name, **connect)["current"]
        except EdgeifyError:
            return
        rs.set_device(rid, dev.name, "pending", running_digest=current)

    run_fleet([devices[n] for n in plan.devices], one, max_workers=parallel)


def _one_device(rs: RolloutStore, rid: str, plan: Plan, dev: Device, local: LocalBundle, settings: BenchSettings,
                progress: Progress, connect: dict[str, Any], evalset: tuple[str, Any, Path] | None = None) -> None:
    rec = rs.get(rid).device(dev.name)
    detail: dict[str, Any] = dict(rec.detail)
    delay = RETRY_BACKOFF_S
    for attempt in range(plan.retries + 1):
        try:
            if not detail.get("baseline_read"):
                inst = installed(dev, plan.name, **connect)
                if plan.app:
                    running = app_on_device(dev, plan.name, **connect)
                    if running is None or running.get("app") != plan.app:
                        raise ConfigError(
                            f"{dev.name} runs no {plan.app} app named {plan.name!r}: a rollout with --app "
                            "restarts the app a device runs", hint=f"edgeify deploy BUNDLE --device {dev.name} "
                                                                   f"--app {plan.app} --port PORT, first")
                detail.update(baseline_read=True)
                rs.set_device(rid, dev.name, "deploying", previous_digest=inst["current"],
                              running_digest=inst["current"], detail=detail)
                prev = inst["current"]
            else:
                prev = rs.get(rid).device(dev.name).previous_digest
                rs.set_device(rid, dev.name, "deploying", detail=detail)
            # edgeify.deploy: uploaded, verified, installed atomically (the replaced version kept as `previous`)
            report = deploy(plan.bundle, dev, name=plan.name, force=plan.force, **connect)[0].unwrap()
            detail["deploy"] = {"status": report.status, "uploaded_bytes": report.uploaded_bytes}
            rs.set_device(rid, dev.name, "deployed", running_digest=report.digest, detail=detail)
            if prev is None or prev == plan.bundle_digest:
                detail["gate"] = {"verdict": "pass", "note": "no previous version on the device: nothing to "
                                  "compare against" if prev is None else "the device already ran this bundle"}
                ok = _restart(dev, plan, detail, progress, connect)
                rs.set_device(rid, dev.name, "passed" if ok else "failed", detail=detail)
                progress(f"  {dev.name}: {'passed' if ok else 'FAILED'} ({detail['gate']['note']})")
                return
            verdict = gate_device(dev, plan, settings, progress=progress, **connect)
            detail["gate"] = verdict.to_dict()
            ok = verdict.passed
            if ok and evalset is not None:
                acc = accuracy_device(dev, plan, report, evalset[0], evalset[1], evalset[2], **connect)
                detail["accuracy"] = acc
                ok = acc["passed"]
            if ok:
                ok = _restart(dev, plan, detail, progress, connect)
            rs.set_device(rid, dev.name, "passed" if ok else "failed", detail=detail)
            acc_text = (f", accuracy drop {detail['accuracy']['drop']:.2f} pt ({detail['accuracy']['measure']})"
                        if "accuracy" in detail else "")
            progress(f"  {dev.name}: {'passed' if ok else 'FAILED'} {plan.gate.metric} x"
                     f"{verdict.ratio:.3f} [{verdict.ci[0]:.3f}, {verdict.ci[1]:.3f}] over {verdict.runs} runs"
                     + acc_text)
            return
        except EdgeifyError as exc:
            detail["error"] = {"type": type(exc).__name__, "exit_code": exc.exit_code, "message": exc.message}
            if is_unreachable(exc):
                rs.set_device(rid, dev.name, "unreachable", detail=detail)
                progress(f"  {dev.name}: unreachable (attempt {attempt + 1}/{plan.retries + 1}): {exc.message}")
                if attempt < plan.retries:
                    time.sleep(delay)
                    delay *= 2
                continue
            rs.set_device(rid, dev.name, "failed", detail=detail)
            progress(f"  {dev.name}: FAILED [{exc.exit_code}] {exc.message}")
            return
        except Exception as exc:  # anything else on one device fails that device, never passes it
            detail["error"] = {"type": type(exc).__name__, "exit_code": 1, "message": str(exc)}
            rs.set_device(rid, dev.name, "failed", detail=detail)
            progress(f"  {dev.name}: FAILED {type(exc).__name__}: {exc}")
            return


def _restart(dev: Device, plan: Plan, detail: dict[str, Any], progress: Progress, connect: dict[str, Any]) -> bool:
    """With ``--app``: the device's app restarted on the new bundle and healthy, else the device fails (the app's
    error and log tail in ``detail["app"]``). An unreachable device raises (retried)."""
    if not plan.app:
        return True
    try:
        detail["app"] = restart_app(dev, plan, plan.bundle_digest, unless_running=True, **connect)
    except EdgeifyError as exc:
        if is_unreachable(exc):
            raise
        detail["app"] = {"error": exc.message, "log_tail": (getattr(exc, "info", None) or {}).get("log_tail")}
        progress(f"  {dev.name}: the {plan.app} app is not healthy on the new bundle: {exc.message}")
        return False
    return True


def _roll_back(rs: RolloutStore, rec: RolloutRecord, names: Sequence[str], devices: dict[str, Device],
               progress: Progress, parallel: int | None, connect: dict[str, Any]) -> None:
    new = rec.plan.bundle_digest

    def one(dev: Device) -> None:
        r = rs.get(rec.id).device(dev.name)
        if r.running_digest != new:
            return  # never switched (failed before install, or pending): it runs what it ran
        detail = dict(r.detail)
        if not r.previous_digest or r.previous_digest == new:
            detail["rollback"] = "no previous version on the device to return to"
            rs.set_device(rec.id, dev.name, "not-rolled-back", detail=detail)
            return
        last: EdgeifyError | None = None
        for _ in range(rec.plan.retries + 1):
            try:
                now = put_back(dev, rec.plan.name, expect_current=new, restore=r.previous_digest, **connect)
                detail["rollback"] = {"restored": now}
                if rec.plan.app:  # the service back on the restored bundle (left alone if it never left it)
                    try:
                        detail["rollback"]["app"] = restart_app(dev, rec.plan, now, unless_running=True, **connect)
                    except EdgeifyError as exc:
                        detail["rollback"]["app_error"] = exc.message
                        progress(f"  {dev.name}: the {rec.plan.app} app did not come back healthy: {exc.message}")
                rs.set_device(rec.id, dev.name, "rolled-back", running_digest=now, detail=detail)
                progress(f"  {dev.name}: rolled back to {now[:12]}")
                return
            except EdgeifyError as exc:
                last = exc
                if not is_unreachable(exc):
                    break
                time.sleep(RETRY_BACKOFF_S)
        detail["rollback"] = {"error": last.message if last else "?"}
        rs.set_device(rec.id, dev.name, "not-rolled-back", detail=detail)
        progress(f"  {dev.name}: NOT rolled back: {last.message if last else '?'}")

    run_fleet([devices[n] for n in names], one, max_workers=parallel)


__all__ = ["abort", "plan_rollout", "resume", "start", "status"]
