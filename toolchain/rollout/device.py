"""What a rollout does on one device: read what it runs, measure the new bundle against the replaced one there,
and put the replaced one back. Each function opens its own connection and has a deadline (the agent's)."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..bench import outputs_on_device
from ..bench_agent import BenchSettings
from ..bench_agent import measure as _measure
from ..deploy.apps import CLIENT_GRACE_S, app_op, app_status
from ..deploy.connect import open_site
from ..deploy.deployer import rollback, status
from ..deploy.inventory import Device
from ..deploy.runtime_zip import install_runtime
from ..errors import DeviceError, TransportLostError, UnreachableError
from .judge import DeviceVerdict, judge
from .plan import Plan

#: errors that say "the device could not be reached", retried and never counted as passing
UNREACHABLE = (UnreachableError, TransportLostError)
#: at most this many rounds per device when the interval stays inconclusive
MAX_ROUNDS_FACTOR = 3


def is_unreachable(exc: BaseException) -> bool:
    return isinstance(exc, UNREACHABLE) or (isinstance(exc, DeviceError) and exc.exit_code in (20, 24, 27))


def installed(device: Device, name: str, **connect: Any) -> dict[str, Any]:
    """``{"current": digest | None, "previous": digest | None, "workdir": ..., "runtime": ...}`` for bundle
    ``name`` on the device."""
    with open_site(device, **connect) as site:
        st = status(site)
    entry = (st.get("bundles") or {}).get(name) or {}
    cur, prev = entry.get("current") or {}, entry.get("previous") or {}
    runtimes = st.get("runtimes") or []
    return {"current": cur.get("digest"), "previous": prev.get("digest"), "workdir": st.get("workdir"),
            "runtime": runtimes[-1] if runtimes else None}


def measure(device: Device, plan: Plan, settings: BenchSettings, *, rounds: int, start_round: int = 0,
            **connect: Any) -> tuple[list[Any], list[Any]]:
    """Interleaved runs of ``previous`` and ``current`` of the plan's bundle on the device (alternating which goes
    first each round); returns (previous results, new results), round by round."""
    old, new = [], []
    with open_site(device, **connect) as site:
        runtime = install_runtime(site)  # this host's runtime version (one call when the device has it)
        base = posixpath.join(runtime.workdir, "bundles", plan.name)
        runtime_path = site.runtime_path or runtime.path
        for k in range(start_round, start_round + rounds):
            order = (("previous", old), ("current", new)) if k % 2 == 0 else (("current", new), ("previous", old))
            for which, sink in order:
                s = replace(settings, series={"id": f"rollout-{plan.bundle_digest[:12]}", "index": k,
                                              "count": rounds})
                sink.append(_measure(site, posixpath.join(base, which), s, runtime_path=runtime_path))
    return old, new


def gate_device(device: Device, plan: Plan, settings: BenchSettings, *,
                progress: Callable[[str], None] | None = None, **connect: Any) -> DeviceVerdict:
    """Measure and judge; add rounds while the interval is inconclusive, up to ``MAX_ROUNDS_FACTOR`` x runs."""
    old, new = measure(device, plan, settings, rounds=plan.runs, **connect)
    verdict = judge(old, new, plan.gate)
    limit = plan.runs * MAX_ROUNDS_FACTOR
    while verdict.verdict == "inconclusive":
        more = min(plan.runs, limit - len(new))
        if more <= 0:
            return judge(old, new, plan.gate, final=True)
        if progress:
            progress(f"{device.name}: inconclusive ({verdict.ratio:.3f}, [{verdict.ci[0]:.3f}, "
                     f"{verdict.ci[1]:.3f}]): {more} more round(s)")
        o2, n2 = measure(device, plan, settings, rounds=more, start_round=len(new), **connect)
        old, new = old + o2, new + n2
        verdict = judge(old, new, plan.gate, final=len(new) >= limit)
    return verdict


def put_back(device: Device, name: str, *, expect_current: str, restore: str, **connect: Any) -> str:
    """Make ``restore`` current again on the device if it now runs ``expect_current``; returns the digest the
    device runs afterwards. A device already on ``restore`` is left alone (idempotent)."""
    with open_site(device, **connect) as site:
        entry = (status(site).get("bundles") or {}).get(name) or {}
        cur = (entry.get("current") or {}).get("digest")
        if cur == restore:
            return cur
        if cur != expect_current:
            raise DeviceError(f"{device.name} runs {str(cur)[:12]}, neither the rolled-out bundle "
                              f"{expect_current[:12]} nor the one to restore {restore[:12]}: left as it is",
                              hint=f"edgeify devices status {device.name}")
        out = rollback(site, name)
    return str((out.get("current") or {}).get("digest"))



#: what the rollout asks of a restarted app: /healthz with the new digest, then (the serve app) OIP readiness
READY_PATHS = {"serve": "/v2/health/ready"}
APP_HEALTH_TIMEOUT_S = 60.0


def app_on_device(device: Device, name: str, **connect: Any) -> dict[str, Any] | None:
    """The app named ``name`` on the device (``edgeify apps status``'s entry), or None."""
    with open_site(device, **connect) as site:
        apps = app_status(site).get("apps") or []
    return next((a for a in apps if a.get("name") == name), None)


def restart_app(device: Device, plan: Plan, digest: str, *, unless_running: bool = False,
                **connect: Any) -> dict[str, Any]:
    """Start the device's app ``plan.name`` again (its stored argv, environment and token) on what the bundle's
    ``current`` is now, which must be ``digest``, and wait until it answers healthy with that digest (and, for
    serve, ``/v2/health/ready``). ``unless_running``: leave an app that already runs ``digest`` alone."""
    with open_site(device, **connect) as site:
        out = app_op(site, install_runtime(site), "restart",
                     {"name": plan.name, "digest": digest, "unless_running": unless_running,
                      "ready_path": READY_PATHS.get(str(plan.app)), "deadline_s": APP_HEALTH_TIMEOUT_S},
                     timeout=APP_HEALTH_TIMEOUT_S + 20 + CLIENT_GRACE_S)
    out.pop("ok", None)
    return out


def accuracy_device(device: Device, plan: Plan, report: Any, inputs_npz: str, labels: Any, work: Any,
                    **connect: Any) -> dict[str, Any]:
    """Top-1 of the new and the replaced bundle on the device, on the same ``--eval`` inputs (one agent call each).
    With labels the drop is accuracy(previous) - accuracy(new), in points; without, 100 - the new bundle's
    top-1 agreement with the replaced one."""
    import numpy as np

    with open_site(device, **connect) as site:
        _, prev_npz = outputs_on_device(site, report, inputs_npz, work, which="previous")
        _, new_npz = outputs_on_device(site, report, inputs_npz, work, which="current")
    with np.load(prev_npz) as a, np.load(new_npz) as b:
        name = sorted(a.files)[0]
        ya, yb = np.asarray(a[name]), np.asarray(b[name])
    top_a = ya.reshape(ya.shape[0], -1).argmax(1)
    top_b = yb.reshape(yb.shape[0], -1).argmax(1)
    out: dict[str, Any] = {"samples": int(top_a.shape[0]), "output": name, "max_drop": plan.max_accuracy_drop}
    if labels is not None:
        lab = np.asarray(labels).reshape(-1)[: top_a.shape[0]]
        acc_a, acc_b = float((top_a == lab).mean() * 100), float((top_b == lab).mean() * 100)
        out.update(measure="labels", previous=round(acc_a, 3), new=round(acc_b, 3), drop=round(acc_a - acc_b, 3))
    else:
        agree = float((top_a == top_b).mean() * 100)
        out.update(measure="top-1 agreement with the replaced bundle", agreement=round(agree, 3),
                   drop=round(100.0 - agree, 3))
    out["passed"] = bool(out["drop"] <= float(plan.max_accuracy_drop or 0.0))
    return out


__all__ = ["MAX_ROUNDS_FACTOR", "accuracy_device", "app_on_device", "gate_device", "installed", "is_unreachable",
           "measure", "put_back", "restart_app"]
