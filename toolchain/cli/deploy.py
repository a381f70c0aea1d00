"""``edgeify deploy BUNDLE [--app serve]`` and ``edgeify rollback NAME``, on one device or many."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import typer

from .output import (
    AskPassOpt,
    DeviceOpt,
    DevicesOpt,
    Format,
    FormatOpt,
    TrustOpt,
    console,
    err_console,
    examples,
    fail_fleet,
    passphrase,
    print_apps,
    print_deploys,
    print_json,
    selection,
)


def deploy_cmd(
    bundle: Path = typer.Argument(..., help="bundle directory written by `edgeify build`"),
    device: str = DeviceOpt,
    devices: str = DevicesOpt,
    name: str = typer.Option(None, "--name", help="name of the bundle on the device [default: the directory's]"),
    force: bool = typer.Option(False, "--force", help="deploy even if the bundle's target/engine does not fit "
                                                      "the device's target"),
    app: str = typer.Option(None, "--app", help="also install this app beside the bundle, start it and check its "
                                                "health: serve (python -m edgeify_runtime.serve) or path/to/app.py"),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="TCP port the app listens on (with --app)"),
    host: str = typer.Option(None, "--host", help="address the app listens on, on the device [default: 127.0.0.1; "
                                                  "a non-loopback address is reachable from the network: warned]"),
    systemd: bool = typer.Option(False, "--systemd", help="install the app as a systemd unit (a user unit when the "
                                                          "device login is not root): restarts on failure and at "
                                                          "boot (with --app)"),
    token_file: Path = typer.Option(None, "--token-file", help="require this bearer token (the file's first line) "
                                                               "on every request to the app; never logged"),
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

    selector, many = selection(device, devices)
    devs = Inventory().select(selector) if many else [Inventory().get(selector)]
    pw = passphrase(ask_passphrase)
    show_progress = fmt == Format.table and not many and sys.stderr.isatty()
    if app is not None:
        _deploy_app(bundle, devs, many, app=app, port=port, options=app_option, name=name, force=force,
                    health_timeout=health_timeout, trust_new_host_key=trust_new_host_key, passphrase=pw, fmt=fmt,
                    host=host, token_file=token_file, systemd=systemd)
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
        print_deploys([report.to_dict()], fmt)
        return
    outcomes = run_fleet(devs, one)
    if fmt == Format.json:
        print_json({"devices": [o.to_dict() for o in outcomes]})
    else:
        print_deploys([o.result.to_dict() for o in outcomes if o.ok], fmt)
    fail_fleet(outcomes)


def _deploy_app(bundle: Path, devs: list[Any], many: bool, *, app: str, port: int, options: list[str],
                name: str | None, force: bool, health_timeout: float, trust_new_host_key: bool,
                host: str | None = None, token_file: Path | None = None, systemd: bool = False,
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
                              force=force, health_timeout=health_timeout, host=host, token_file=token_file,
                              systemd=systemd)

    if not many:
        with err_console.status(f"deploying {bundle.name} + {spec.kind} to {devs[0].name}",
                                spinner="dots") if fmt == Format.table and sys.stderr.isatty() \
                else contextlib.nullcontext():
            report = one(devs[0])
        print_apps([report.to_dict()], fmt)
        return
    outcomes = run_fleet(devs, one)
    if fmt == Format.json:
        print_json({"devices": [o.to_dict() for o in outcomes]})
    else:
        print_apps([o.result.to_dict() for o in outcomes if o.ok], fmt)
    fail_fleet(outcomes)


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

    selector, many = selection(device, devices)
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
    fail_fleet(outcomes)


def register(app: typer.Typer) -> None:
    app.command("deploy", epilog=examples(
        "edgeify deploy build/digits-rpi5 --device pi-01",
        "edgeify deploy build/digits-rpi5 --devices tag:pi --format json",
        "edgeify deploy build/digits-rpi5 --device pi-01 --app serve --port 8080",
    ))(deploy_cmd)
    app.command("rollback", epilog=examples("edgeify rollback digits-rpi5 --device pi-01",
                                            "edgeify rollback build/digits-rpi5 --devices tag:pi"))(rollback_cmd)
