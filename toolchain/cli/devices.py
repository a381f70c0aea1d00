"""CLI for devices: ``edgeify devices add|list|show|remove|check|status``, ``edgeify deploy [--app serve]``,
``edgeify rollback``, ``edgeify apps status|stop``, and the fleet path of ``edgeify bench --devices``.
``register(app)`` adds them to the main typer app.

Heavy modules (paramiko, the deployer) are imported inside the commands so ``edgeify --help`` stays fast.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from .output import console, err_console, print_json

devices_app = typer.Typer(help="The devices edgeify deploys to (a TOML file in edgeify's config dir).",
                          no_args_is_help=True)


class Format(str, Enum):
    table = "table"
    json = "json"


FormatOpt = typer.Option(Format.table, "--format", help="table for people, json for machines")
TrustOpt = typer.Option(False, "--trust-new-host-key",
                        help="accept and remember the host key of a device not yet in known_hosts (check its "
                             "fingerprint first); a CHANGED key is never accepted")
AskPassOpt = typer.Option(False, "--ask-passphrase", help="prompt for the passphrase of an encrypted key "
                                                          "(never stored; ssh-agent is the better way)")
DeviceOpt = typer.Option(None, "--device", "-d", help="device name (`edgeify devices list`)")
DevicesOpt = typer.Option(None, "--devices", help="several devices in parallel: tag:TAG, NAME1,NAME2 or all")


def _passphrase(ask: bool) -> str | None:
    return typer.prompt("key passphrase", hide_input=True, err=True) if ask else None


def _selection(device: str | None, devices: str | None) -> tuple[str, bool]:
    from edgeify.errors import ConfigError

    if bool(device) == bool(devices):
        raise ConfigError("give exactly one of --device NAME or --devices SELECTOR",
                          hint="e.g. --device pi-01, or --devices tag:pi")
    return (device or devices or ""), bool(devices)


def _fail_fleet(outcomes: list[Any]) -> None:
    """Print each failure; exit with the first failing device's error (its class = its exit code)."""
    from edgeify.deploy.fleet import first_failure
    from edgeify.errors import EdgeifyError

    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        e = o.error_dict() or {}
        err_console.print(f"[red]✗[/] {o.device}: [{e.get('exit_code')}] {e.get('message')}")
    first = first_failure(outcomes)
    if first is None:
        return
    err = first.error
    summary = f"{len(failed)} of {len(outcomes)} devices failed; first: {first.device}"
    if isinstance(err, EdgeifyError):
        raise type(err)(f"{summary}: {err.message}", hint=err.hint or None)
    raise err  # type: ignore[misc]


# -- devices add / list / show / remove -------------------------------------------------------------------------
@devices_app.command("add")
def devices_add(
    name: str = typer.Argument(..., help="a name for the device (also tried as a Host alias in ~/.ssh/config)"),
    target: str = typer.Option(..., "--target", "-t", help="the device's target (`edgeify targets`)"),
    host: str = typer.Option(None, "--host", help="host name or IP [default: NAME resolved via ~/.ssh/config]"),
    port: int = typer.Option(None, "--port", min=1, max=65535, help="[default: ~/.ssh/config, else 22]"),
    user: str = typer.Option(None, "--user", help="[default: ~/.ssh/config, else your login name]"),
    key: Path = typer.Option(None, "--key", help="private key file [default: ~/.ssh/config, agent, ~/.ssh/id_*]"),
    python: str = typer.Option(None, "--python", help="Python 3 command on the device [default: python3]"),
    workdir: str = typer.Option(None, "--workdir", help="work directory on the device [default: ~/.edgeify]"),
    tag: list[str] = typer.Option([], "--tag", help="a tag for fleet runs (repeatable): --devices tag:TAG"),
    replace: bool = typer.Option(False, "--replace", help="overwrite an existing device of that name"),
) -> None:
    """Add a device to the devices file (nothing is contacted; `edgeify devices check NAME` connects)."""
    from edgeify.deploy.inventory import Inventory, make_device
    from edgeify.targets import load_registry

    load_registry().resolve(target)  # unknown target: TargetError with a "did you mean"
    keyfile = str(key.expanduser().resolve()) if key is not None else None
    dev = make_device(name, host=host, port=port, user=user, key=keyfile, python=python, workdir=workdir,
                      target=target, tags=tuple(tag))
    inv = Inventory()
    inv.add(dev, replace=replace)
    inv.save()
    err_console.print(f"[green]✓[/] {'replaced' if replace else 'added'} device [bold]{name}[/] in {inv.path}")
    err_console.print(f"  next: edgeify devices check {name}")


@devices_app.command("list")
def devices_list(tag: str = typer.Option(None, "--tag", help="only devices with this tag"),
                 fmt: Format = FormatOpt) -> None:
    """List the devices (as stored: unset fields resolve from ~/.ssh/config when connecting)."""
    from edgeify.deploy.inventory import Inventory

    inv = Inventory()
    devs = [d for d in inv if tag is None or tag in d.tags]
    if fmt == Format.json:
        print_json({"file": str(inv.path), "devices": [{"name": d.name, **d.fields()} for d in devs]})
        return
    if not devs:
        console.print(f"no devices in {inv.path}; add one: edgeify devices add NAME --host HOST --target TARGET")
        return
    from rich.table import Table

    t = Table(title=f"devices ({inv.path})")
    for col in ("name", "host", "port", "user", "target", "tags", "python", "workdir"):
        t.add_column(col)
    for d in devs:
        t.add_row(d.name, d.host or f"[dim]{d.name} (ssh config)[/]", str(d.port or "-"), d.user or "-", d.target,
                  ", ".join(d.tags), d.python or "-", d.workdir or "-")
    console.print(t)


@devices_app.command("show")
def devices_show(name: str = typer.Argument(...), fmt: Format = FormatOpt) -> None:
    """Show a device and how its connection resolves (HostName, Port, User, keys, known_hosts); no network."""
    from edgeify.deploy.connect import endpoint_for
    from edgeify.deploy.inventory import Inventory

    dev = Inventory().get(name)
    ep = endpoint_for(dev)
    data = {"name": dev.name, "stored": dev.fields(), "resolved": ep.describe(),
            "python": dev.python_argv, "workdir": dev.remote_workdir}
    if fmt == Format.json:
        print_json(data)
        return
    console.print(f"[bold]{dev.name}[/]  target {dev.target}  tags {', '.join(dev.tags) or '-'}")
    console.print(f"  connects to {ep.user}@{ep.hostname}:{ep.port}"
                  + (f"  (via {ep.config_file})" if ep.config_file else ""))
    console.print(f"  keys: {', '.join(ep.key_files)} + ssh-agent")
    console.print(f"  known_hosts: {', '.join(ep.known_hosts_files)}")
    console.print(f"  python: {' '.join(dev.python_argv)}   workdir: {dev.remote_workdir}")


@devices_app.command("remove")
def devices_remove(name: str = typer.Argument(...)) -> None:
    """Remove a device from the devices file (nothing on the device is touched)."""
    from edgeify.deploy.inventory import Inventory

    inv = Inventory()
    inv.remove(name)
    inv.save()
    err_console.print(f"[green]✓[/] removed device [bold]{name}[/] from {inv.path}")


# -- devices check / status ------------------------------------------------------------------------------------
def check_device(dev: Any, *, trust_new_host_key: bool = False, passphrase: str | None = None) -> dict[str, Any]:
    """Connect, make sure the runtime is cached there, take the fingerprint, compare it with the target."""
    import json
    import time

    from edgeify.deploy.connect import open_site
    from edgeify.deploy.deployer import ensure_runtime
    from edgeify.errors import RemoteCommandError

    t0 = time.perf_counter()
    with open_site(dev, trust_new_host_key=trust_new_host_key, passphrase=passphrase) as site:
        site.transport.connect()
        connect_s = time.perf_counter() - t0
        rt, prep = ensure_runtime(site)
        rc, out, err = site.transport.run([*site.python, "-m", "edgeify_runtime.fingerprint", "--compact"],
                                          env={"PYTHONPATH": f"{prep['workdir']}/runtime/{rt.file}"}, timeout=60)
        if rc != 0:
            raise RemoteCommandError(f"device {dev.name}: the fingerprint failed (exit {rc}): "
                                     f"{' | '.join(err.strip().splitlines()[-3:])}")
        fp = json.loads(out)
        host_key = getattr(site.transport, "host_key_fingerprint", None)
        trusted = getattr(site.transport, "trusted_new_key", False)
    return {"device": dev.name, "target": dev.target, "connect_s": round(connect_s, 3), "host_key": host_key,
            "host_key_trusted_now": trusted, "workdir": prep["workdir"], "free_mb": round(prep["free_bytes"] / 1e6, 1),
            "fingerprint": fp, "fit": _target_fit(dev.target, fp)}


def _target_fit(target: str, fp: dict[str, Any]) -> dict[str, Any]:
    from edgeify.errors import EdgeifyError
    from edgeify.targets import load_registry

    try:
        spec, _ = load_registry().resolve(target)
    except EdgeifyError:
        return {"target_known": False}
    engines = fp.get("engines") or {}
    missing = {name: e.install_hint or f"pip install {e.runtime}" for name, e in spec.engines.items()
               if e.runtime not in engines}
    features = [f for f in spec.cpu.features if f not in ((fp.get("cpu") or {}).get("isa") or [])]
    return {"target_known": True, "arch_ok": fp.get("arch") == spec.arch, "target_arch": spec.arch,
            "engines_present": {n: engines[e.runtime] for n, e in spec.engines.items() if e.runtime in engines},
            "engines_missing": missing, "cpu_features_missing": features}


@devices_app.command("check")
def devices_check(
    selector: str = typer.Argument(..., help="device name, NAME1,NAME2, tag:TAG or all"),
    trust_new_host_key: bool = TrustOpt,
    ask_passphrase: bool = AskPassOpt,
    fmt: Format = FormatOpt,
) -> None:
    """Connect to devices and fingerprint them: arch, OS, Python, engines and versions, CPU, memory."""
    from edgeify.deploy.fleet import run_fleet
    from edgeify.deploy.inventory import Inventory

    devs = Inventory().select(selector)
    pw = _passphrase(ask_passphrase)
    outcomes = run_fleet(devs, lambda d: check_device(d, trust_new_host_key=trust_new_host_key, passphrase=pw))
    if fmt == Format.json:
        print_json({"devices": [o.to_dict() for o in outcomes]})
    else:
        for o in outcomes:
            if o.ok:
                _print_check(o.result)
    _fail_fleet(outcomes)


def _print_check(r: dict[str, Any]) -> None:
    fp = r["fingerprint"]
    cpu = fp.get("cpu") or {}
    osi = fp.get("os") or {}
    fit = r["fit"]
    console.print(f"[green]✓[/] [bold]{r['device']}[/] reachable in {r['connect_s']:.2f} s  host key {r['host_key']}"
                  + ("  [yellow](newly trusted)[/]" if r["host_key_trusted_now"] else ""))
    console.print(f"  arch {fp.get('arch')} · {osi.get('distro') or osi.get('system')} · kernel {osi.get('kernel')} · "
                  f"Python {(fp.get('python') or {}).get('version')} · numpy {fp.get('numpy')}")
    console.print(f"  CPU {cpu.get('model')} · {cpu.get('physical_cores')} cores ({cpu.get('usable_cores')} usable) · "
                  f"ISA {', '.join(cpu.get('isa') or []) or '-'} · memory {fp.get('memory_total_mb')} MB · "
                  f"governor {fp.get('governor') or '-'}")
    engines = fp.get("engines") or {}
    console.print(f"  engines: {', '.join(f'{k} {v}' for k, v in engines.items()) or 'none'} · "
                  f"work dir {r['workdir']} ({r['free_mb']} MB free)")
    if fit.get("target_known"):
        if not fit["arch_ok"]:
            console.print(f"  [red]arch {fp.get('arch')} does not match target {r['target']} "
                          f"({fit['target_arch']})[/]")
        for eng, hint in fit["engines_missing"].items():
            console.print(f"  [yellow]engine {eng} of target {r['target']} is missing: {hint}[/]")
        if fit["cpu_features_missing"]:
            console.print(f"  [yellow]CPU lacks {', '.join(fit['cpu_features_missing'])} that target "
                          f"{r['target']} assumes[/]")


@devices_app.command("status")
def devices_status(name: str = typer.Argument(...), trust_new_host_key: bool = TrustOpt,
                   fmt: Format = FormatOpt) -> None:
    """What is deployed on a device: each bundle's current and previous version."""
    from edgeify.deploy.connect import open_site
    from edgeify.deploy.deployer import status
    from edgeify.deploy.inventory import Inventory

    dev = Inventory().get(name)
    with open_site(dev, trust_new_host_key=trust_new_host_key) as site:
        data = status(site)
    data.pop("ok", None)
    if fmt == Format.json:
        print_json({"device": name, **data})
        return
    console.print(f"[bold]{name}[/] work dir {data['workdir']} ({data.get('free_bytes', 0) / 1e6:.1f} MB free)")
    for bname, entry in data["bundles"].items():
        cur, prev = entry.get("current") or {}, entry.get("previous") or {}
        console.print(f"  {bname}: current {str(cur.get('digest'))[:12]}  previous {str(prev.get('digest'))[:12]}")


# -- deploy / rollback -------------------------------------------------------------------------------------------
def deploy_cmd(
    bundle: Path = typer.Argument(..., help="bundle directory written by `edgeify build`"),
    device: str = DeviceOpt,
    devices: str = DevicesOpt,
    name: str = typer.Option(None, "--name", help="name of the bundle on the device [default: the directory's]"),
    force: bool = typer.Option(False, "--force", help="deploy even if the bundle's target/engine does not fit "
                                                      "the device's target"),
    app: str = typer.Option(None, "--app", help="also install this app beside the bundle, start it and check its "
                                                "health: serve (examples/apps/serve.py) or path/to/app.py"),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="TCP port the app listens on (with --app)"),
    app_option: list[str] = typer.Option([], "--app-option", metavar="KEY=VALUE",
                                         help="passed to the app as --KEY VALUE (KEY alone: --KEY), e.g. "
                                              "max-batch=16, host=127.0.0.1; repeatable"),
    health_timeout: float = typer.Option(60.0, "--health-timeout", min=1.0,
                                         help="seconds the app has to answer /healthz (with --app)"),
    trust_new_host_key: bool = TrustOpt,
    ask_passphrase: bool = AskPassOpt,
    fmt: Format = FormatOpt,
) -> None:
    """Upload a bundle and the runtime agent, verify sha256 on the device, install atomically (keeps the
    previous version for `edgeify rollback`). Unchanged files are not sent again.

    With --app serve: also install the HTTP service app next to the bundle, (re)start it detached on --port and
    wait until its /healthz answers with the bundle's digest. The app's packages must already be on the device;
    stop it with `edgeify apps stop NAME --device DEV`."""
    from edgeify.deploy.connect import open_site
    from edgeify.deploy.deployer import deploy
    from edgeify.deploy.fleet import run_fleet
    from edgeify.deploy.inventory import Inventory

    selector, many = _selection(device, devices)
    devs = Inventory().select(selector) if many else [Inventory().get(selector)]
    pw = _passphrase(ask_passphrase)
    show_progress = fmt == Format.table and not many and sys.stderr.isatty()
    if app is not None:
        _deploy_app(bundle, devs, many, app=app, port=port, options=app_option, name=name, force=force,
                    health_timeout=health_timeout, trust_new_host_key=trust_new_host_key, passphrase=pw, fmt=fmt)
        return
    if app_option:
        from edgeify.errors import ConfigError

        raise ConfigError("--app-option needs --app", hint="e.g. --app serve --app-option max-batch=16")

    def one(dev: Any) -> Any:
        with open_site(dev, trust_new_host_key=trust_new_host_key, passphrase=pw) as site:
            if not show_progress:
                return deploy(site, bundle, device=dev, name=name, force=force)
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

            with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                          TransferSpeedColumn(), console=err_console, transient=True) as prog:
                task = prog.add_task(f"upload to {dev.name}", total=None)
                return deploy(site, bundle, device=dev, name=name, force=force,
                              on_progress=lambda done, total: prog.update(task, completed=done, total=total))

    if not many:
        report = one(devs[0])
        _print_deploys([report.to_dict()], fmt)
        return
    outcomes = run_fleet(devs, one)
    if fmt == Format.json:
        print_json({"devices": [o.to_dict() for o in outcomes]})
    else:
        _print_deploys([o.result.to_dict() for o in outcomes if o.ok], fmt)
    _fail_fleet(outcomes)


def _print_deploys(reports: list[dict[str, Any]], fmt: Format) -> None:
    if fmt == Format.json:
        print_json(reports[0] if len(reports) == 1 else {"devices": reports})
        return
    for r in reports:
        tm = r["timings_s"]
        parts = " · ".join(f"{k} {v:.3f}" for k, v in tm.items() if k != "total")
        console.print(f"[green]✓[/] {r['device']}: {r['name']} {r['digest'][:12]} [bold]{r['status']}[/] "
                      f"({r['uploaded_bytes'] / 1e6:.2f} MB sent, {r['reused_files']} files reused"
                      f"{', runtime sent' if r['runtime_uploaded'] else ''}) in {tm['total']:.2f} s ({parts} s)")
        for w in r.get("warnings") or []:
            err_console.print(f"  [yellow]forced:[/] {w}")
        for step in r.get("device_steps") or []:  # e.g. the TensorRT engine, built on the device
            console.print(f"  {step['uses']} on the device: [bold]{step['decision']}[/] ({step['reason']}) "
                          f"{step['plan']}")


def _deploy_app(bundle: Path, devs: list[Any], many: bool, *, app: str, port: int, options: list[str],
                name: str | None, force: bool, health_timeout: float, trust_new_host_key: bool,
                passphrase: str | None, fmt: Format) -> None:
    """``edgeify deploy BUNDLE --app serve``: deploy, start the app, check its health, on one device or many."""
    from edgeify.deploy.apps import app_arguments, deploy_app, resolve_app
    from edgeify.deploy.connect import open_site
    from edgeify.deploy.fleet import run_fleet

    spec = resolve_app(app)  # a bad --app or --app-option fails here, before any connection
    app_arguments(options)

    def one(dev: Any) -> Any:
        with open_site(dev, trust_new_host_key=trust_new_host_key, passphrase=passphrase) as site:
            return deploy_app(site, bundle, app=spec, port=port, options=options, device=dev, name=name,
                              force=force, health_timeout=health_timeout)

    if not many:
        with err_console.status(f"deploying {bundle.name} + {spec.kind} to {devs[0].name}",
                                spinner="dots") if fmt == Format.table and sys.stderr.isatty() else _nullctx():
            report = one(devs[0])
        _print_apps([report.to_dict()], fmt)
        return
    outcomes = run_fleet(devs, one)
    if fmt == Format.json:
        print_json({"devices": [o.to_dict() for o in outcomes]})
    else:
        _print_apps([o.result.to_dict() for o in outcomes if o.ok], fmt)
    _fail_fleet(outcomes)


def _nullctx() -> Any:
    import contextlib

    return contextlib.nullcontext()


def _print_apps(reports: list[dict[str, Any]], fmt: Format) -> None:
    if fmt == Format.json:
        print_json(reports[0] if len(reports) == 1 else {"devices": reports})
        return
    for r in reports:
        _print_deploys([r["deploy"]], fmt)
        tm = r["timings_s"]
        before = r.get("restarted")
        was = f"; restarted, was pid {before['pid']}" if before else ""
        console.print(f"[green]✓[/] {r['device']}: {r['app']} [bold]healthy[/] at [bold]{r['url']}[/] "
                      f"(pid {r['pid']}, bundle {r['bundle_digest'][:12]}{was}) in {r['seconds']:.2f} s "
                      f"(deploy {tm.get('deploy', 0):.2f} · start {tm.get('start', 0):.2f} · "
                      f"health {tm.get('health', 0):.2f} s)")
        console.print(f"  log {r['log']} · stop: edgeify apps stop {r['name']} --device {r['device']}")


apps_app = typer.Typer(help="Apps started on devices by `edgeify deploy BUNDLE --app serve`.", no_args_is_help=True)


@apps_app.command("status")
def apps_status(
    device: str = typer.Option(..., "--device", "-d", help="device name (`edgeify devices list`)"),
    trust_new_host_key: bool = TrustOpt,
    fmt: Format = FormatOpt,
) -> None:
    """The apps on a device: name, app, port, pid, running or its exit code and last log lines."""
    from edgeify.deploy.apps import app_status
    from edgeify.deploy.connect import open_site
    from edgeify.deploy.inventory import Inventory

    dev = Inventory().get(device)
    with open_site(dev, trust_new_host_key=trust_new_host_key) as site:
        data = app_status(site)
    if fmt == Format.json:
        print_json({"device": device, **data})
        return
    if not data["apps"]:
        console.print(f"no apps on {device} (edgeify deploy BUNDLE --device {device} --app serve)")
    for a in data["apps"]:
        state = "[green]running[/]" if a["running"] else f"[red]stopped[/] (exit {a.get('exit_code')})"
        console.print(f"{a['name']}: {a['app']} {state} pid {a['pid']} port {a['port']} "
                      f"bundle {str(a['digest'])[:12]} since {a['started_at']}  log {a['log']}")
        for line in a.get("log_tail") or []:
            console.print(f"  | {line}", markup=False)


@apps_app.command("stop")
def apps_stop(
    name: str = typer.Argument(..., help="the app's name on the device (the bundle's name; `edgeify apps status`)"),
    device: str = typer.Option(..., "--device", "-d", help="device name (`edgeify devices list`)"),
    timeout: float = typer.Option(15.0, "--timeout", min=0.0, help="seconds after SIGTERM before SIGKILL"),
    trust_new_host_key: bool = TrustOpt,
    fmt: Format = FormatOpt,
) -> None:
    """Stop an app: SIGTERM (it finishes the requests in flight), then SIGKILL after --timeout."""
    from edgeify.deploy.apps import stop_app
    from edgeify.deploy.connect import open_site
    from edgeify.deploy.inventory import Inventory

    dev = Inventory().get(device)
    with open_site(dev, trust_new_host_key=trust_new_host_key) as site:
        out = stop_app(site, name, timeout=timeout)
    if fmt == Format.json:
        print_json({"device": device, **out})
    elif out.get("was_running"):
        console.print(f"[green]✓[/] {device}: stopped {name} (pid {out['pid']}, SIG{out['signal']}, "
                      f"exit {out.get('exit_code')}, {out['seconds']:.2f} s)")
    else:
        console.print(f"{device}: {name} was not running")


def rollback_cmd(
    bundle: str = typer.Argument(..., help="the bundle's name on the device (or its local directory)"),
    device: str = DeviceOpt,
    devices: str = DevicesOpt,
    trust_new_host_key: bool = TrustOpt,
    fmt: Format = FormatOpt,
) -> None:
    """Make the previous deployed version of a bundle current again (the current one becomes previous)."""
    from edgeify.deploy.connect import open_site
    from edgeify.deploy.deployer import rollback
    from edgeify.deploy.fleet import run_fleet
    from edgeify.deploy.inventory import Inventory

    selector, many = _selection(device, devices)
    devs = Inventory().select(selector) if many else [Inventory().get(selector)]
    bname = Path(bundle).name if ("/" in bundle or Path(bundle).is_dir()) else bundle

    def one(dev: Any) -> dict[str, Any]:
        with open_site(dev, trust_new_host_key=trust_new_host_key) as site:
            out = rollback(site, bname)
        out.pop("ok", None)
        return {"device": dev.name, "name": bname, **out}

    outcomes = run_fleet(devs, one)
    if fmt == Format.json:
        print_json({"devices": [o.to_dict() for o in outcomes]})
    else:
        for o in outcomes:
            if o.ok:
                r = o.result
                console.print(f"[green]✓[/] {r['device']}: {bname} now {str(r['current']['digest'])[:12]} "
                              f"(was {str(r['previous']['digest'])[:12]})")
    if not many and not outcomes[0].ok:
        raise outcomes[0].error  # type: ignore[misc]
    _fail_fleet(outcomes)


# -- bench --devices ----------------------------------------------------------------------------------------------
def bench_fleet(bundle: Path, selector: str, *, threads: int | None = None, warmup: int | None = None,
                runs: int | None = None, min_duration_s: float | None = None, store: bool = True,
                fmt: str = "table", max_latency_ms: float | None = None, percentile: str = "p95",
                force: bool = False, trust_new_host_key: bool = False) -> list[Any]:
    """``edgeify bench BUNDLE --devices SELECTOR``: benchmark on many devices in parallel, print, then fail with
    the first failing device's exit code (or 13 when a result is over ``--max-latency-ms``)."""
    from edgeify.benchmark import check_budget, protocol_for
    from edgeify.deploy.remote_bench import benchmark_fleet

    bundle = Path(bundle).resolve()
    proto = protocol_for(bundle, threads=threads, warmup=warmup, runs=runs, min_duration_s=min_duration_s)
    outcomes = benchmark_fleet(bundle, selector, proto, store=store, force=force,
                               trust_new_host_key=trust_new_host_key)
    if str(getattr(fmt, "value", fmt)) == "json":
        print_json({"devices": [o.to_dict() for o in outcomes]})
    else:
        from rich.table import Table

        t = Table(title=f"bench {bundle.name} on {selector}")
        for col in ("device", "p50 ms", "p95 ms", "p99 ms", "ips", "engine", "threads", "stored", "s"):
            t.add_column(col)
        for o in outcomes:
            if o.ok:
                r = o.result
                lat, eng = r["latency_ms"], r.get("engine") or {}
                t.add_row(o.device, f"{lat['p50']:.3f}", f"{lat['p95']:.3f}", f"{lat['p99']:.3f}",
                          f"{r.get('throughput_ips') or 0:.1f}", f"{eng.get('name')} {eng.get('version')}",
                          str((r.get('protocol') or {}).get('threads')), f"#{r.get('result_id', '-')}",
                          f"{o.seconds:.1f}")
            else:
                e = o.error_dict() or {}
                t.add_row(o.device, f"[red]error {e.get('exit_code')}[/]", "", "", "", e.get("type", ""), "", "",
                          f"{o.seconds:.1f}")
        console.print(t)
    _fail_fleet(outcomes)
    for o in outcomes:
        check_budget(o.result, max_latency_ms, percentile)
    return outcomes


def register(app: typer.Typer) -> None:
    """Add ``devices``, ``deploy``, ``rollback`` and ``apps`` to the main app."""
    app.add_typer(devices_app, name="devices")
    app.command("deploy")(deploy_cmd)
    app.command("rollback")(rollback_cmd)
    app.add_typer(apps_app, name="apps")


__all__ = ["apps_app", "bench_fleet", "check_device", "devices_app", "register"]
