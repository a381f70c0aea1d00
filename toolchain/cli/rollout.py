"""``edgeify rollout BUNDLE --devices SEL`` and ``edgeify rollout status|resume|abort [ID]``."""

from __future__ import annotations

from typing import Any

import typer
from edgeify import rollout as R
from edgeify.errors import EdgeifyError, UsageError

from .output import AskPassOpt, Format, FormatOpt, TrustOpt, console, err_console, examples, passphrase, print_json

VERBS = ("status", "resume", "abort")
_STATUS_STYLE = {"passed": "green", "failed": "red", "rolled-back": "yellow", "not-rolled-back": "red",
                 "unreachable": "magenta", "pending": "dim", "deploying": "cyan", "deployed": "cyan"}


def rollout_cmd(
    what: str = typer.Argument(..., metavar="BUNDLE | status | resume | abort",
                               help="a bundle directory to roll out, or a verb acting on a stored rollout"),
    rollout_id: str = typer.Argument(None, metavar="[ROLLOUT_ID]",
                                     help="with status / resume / abort: the rollout [default for status: latest]"),
    devices: str = typer.Option(None, "--devices", help="the fleet: tag:TAG, NAME1,NAME2 or all"),
    waves: str = typer.Option("1,10%,50%,100%", "--waves",
                              help="cumulative wave sizes, counts or percentages; the first wave is the canary "
                                   "(devices tagged `canary` go first)"),
    gate: str = typer.Option("p95<=1.05x", "--gate",
                             help="METRIC<=RATIOx: the new bundle against the one it replaces, on each device"),
    runs: int = typer.Option(3, "--runs", min=2, max=50,
                             help="interleaved benchmark runs per bundle per device (more when inconclusive)"),
    samples: int = typer.Option(None, "--samples", min=5, help="timed samples per run [default: the target's]"),
    rollback: str = typer.Option("wave", "--rollback", help="after a failed gate roll back: wave | all"),
    name: str = typer.Option(None, "--name", help="the bundle's name on the devices [default: the directory's]"),
    force: bool = typer.Option(False, "--force", help="deploy even if the bundle's target does not fit a device"),
    parallel: int = typer.Option(None, "--parallel", min=1, max=64, help="devices worked on at once [16]"),
    retries: int = typer.Option(2, "--retries", min=0, max=10, help="retries of an unreachable device per wave"),
    eval_data: str = typer.Option(None, "--eval", help="also gate accuracy on each device: .npz (input [, labels]); "
                                                       "the new bundle against the replaced one on these inputs"),
    max_accuracy_drop: float = typer.Option(None, "--max-accuracy-drop", min=0.0,
                                            help="points of top-1 accuracy (or agreement) the new bundle may lose "
                                                 "[default with --eval: 1.0]"),
    app: str = typer.Option(None, "--app", help="the app the devices run (serve, or an app file): restarted on the "
                                                "new bundle after the gate (its health is part of the verdict) and "
                                                "on the previous one at rollback"),
    soak: str = typer.Option(None, "--soak", help="after each wave's gate, watch its services on live traffic for "
                                                  "this long (30s, 5m): p95 over budget, 5xx, down fail the wave"),
    prometheus: str = typer.Option(None, "--prometheus", help="the Prometheus --soak queries (e.g. "
                                                              "http://127.0.0.1:9090); targets labelled device=NAME"),
    trust_new_host_key: bool = TrustOpt,
    ask_passphrase: bool = AskPassOpt,
    fmt: Format = FormatOpt,
) -> None:
    """Roll a bundle out to a fleet in waves: a canary first, then growing waves. Each wave is deployed
    atomically, benchmarked on every device against the bundle it replaced there (interleaved runs, run-level
    statistics), and rolled back automatically when it fails the gate (exit 17). The plan and every device's
    progress are kept in the results store: `status` shows them, `resume` continues after Ctrl-C (exit 130), a
    crash or unreachable devices (exit 20), `abort` puts every touched device back."""

    connect: dict[str, Any] = {"trust_new_host_key": trust_new_host_key, "passphrase": passphrase(ask_passphrase)}

    def progress(message: str) -> None:
        err_console.print(message, markup=False, highlight=False)

    if what in VERBS:
        if what != "status" and not rollout_id:
            raise UsageError(f"rollout {what} needs a ROLLOUT_ID", hint="edgeify rollout status  (shows the latest)")
        if what == "status":
            rec = R.status(rollout_id)
        elif what == "resume":
            rec = _finish(lambda: R.resume(rollout_id, progress=progress, parallel=parallel, connect=connect), fmt)
        else:
            rec = R.abort(rollout_id, progress=progress, parallel=parallel, connect=connect)
        _show(rec, fmt)
        return
    if rollout_id:
        raise UsageError(f"unexpected argument {rollout_id!r} after the bundle",
                         hint="edgeify rollout BUNDLE --devices tag:X")
    if not devices:
        raise UsageError("a rollout needs --devices", hint="e.g. --devices tag:cameras")
    rec = _finish(lambda: R.start(what, devices, waves=waves, gate=gate, runs=runs, rollback=rollback, name=name,
                                  force=force, samples=samples, retries=retries, progress=progress,
                                  eval_data=eval_data, max_accuracy_drop=max_accuracy_drop, app=app, soak=soak,
                                  prometheus=prometheus, parallel=parallel, connect=connect), fmt)
    _show(rec, fmt)


def _finish(fn: Any, fmt: Format) -> Any:
    """Run the rollout; when it stops with an error, still print its record (JSON: one document) first."""

    try:
        return fn()
    except EdgeifyError as exc:
        import re

        m = re.search(r"\brollout (r-[0-9a-f]+)", exc.message)
        if m:
            rec = R.status(m.group(1))
            if fmt == Format.json:
                print_json({**rec.to_dict(), "ok": False, "error": exc.to_dict()})
            else:
                _show(rec, fmt)
        raise


def _show(rec: Any, fmt: Format) -> None:
    d = rec.to_dict()
    if fmt == Format.json:
        print_json({**d, "ok": d["state"] == "done" or d["state"] == "running"})
        return
    from rich.table import Table

    t = Table(title=f"rollout {d['rollout_id']}: {d['state']} — {d['name']} {d['bundle_digest'][:12]}, "
                    f"gate {d['gate']}", title_justify="left")
    for col in ("wave", "device", "status", "runs now", "verdict"):
        t.add_column(col)
    for dev in d["devices"]:
        g = (dev["detail"] or {}).get("gate") or {}
        err = (dev["detail"] or {}).get("error") or {}
        verdict = (f"x{g['ratio']:.3f} [{g['ci'][0]:.3f}, {g['ci'][1]:.3f}]" if "ratio" in g
                   else g.get("note") or err.get("message") or "")
        soak = (dev["detail"] or {}).get("soak") or {}
        app = (dev["detail"] or {}).get("app") or {}
        if soak.get("verdict") == "fail":
            verdict = f"soak: {soak.get('reason')}"
        elif app.get("error"):
            verdict = f"app: {app['error']}"
        runs_now = (dev["bundle_digest"] or "none")[:12]
        style = _STATUS_STYLE.get(dev["status"], "")
        t.add_row(str(dev["wave"] + 1), dev["name"], f"[{style}]{dev['status']}[/]" if style else dev["status"],
                  runs_now, verdict[:60])
    console.print(t)


def register(app: typer.Typer) -> None:
    app.command("rollout", epilog=examples(
        'edgeify rollout build/m --devices tag:cameras --waves 1,10%,50%,100% --gate "p95<=1.05x"',
        "edgeify rollout build/m --devices tag:cameras --app serve --soak 5m --prometheus http://127.0.0.1:9090",
        "edgeify rollout status --format json",
        "edgeify rollout resume r-0123456789",
        "edgeify rollout abort r-0123456789",
    ))(rollout_cmd)
