"""``edgeify deploy BUNDLE [--app serve]`` and ``edgeify rollback NAME``, on one device or many."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from edgeify.deploy.deployer import rollback
from edgeify.deploy.fleet import AppSettings, deploy, on_sites
from edgeify.deploy.inventory import Inventory
from edgeify.errors import ConfigError

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

    selector, many = selection(device, devices)
    where = selector if many else Inventory().get(selector)  # --device: exactly one name (did-you-mean)
    if app_option and app is None:
        raise ConfigError("--app-option needs --app", hint="e.g. --app serve --app-option max-batch=16")
    settings = None if app is None else AppSettings(app, port=port, host=host, options=tuple(app_option),
                                                    token_file=token_file, systemd=systemd,
                                                    health_timeout=health_timeout)
    interactive = fmt == Format.table and not many and sys.stderr.isatty()
    with _progress(bundle, settings, selector) if interactive else contextlib.nullcontext() as progress:
        outcomes = deploy(bundle, where, name=name, app=settings, force=force, progress=progress,
                          trust_new_host_key=trust_new_host_key, passphrase=passphrase(ask_passphrase))
    show = print_deploys if settings is None else print_apps
    if not many:
        show([outcomes[0].unwrap().to_dict()], fmt)  # one device: its own error, as it is
        return
    if fmt == Format.json:
        print_json({"devices": [o.to_dict() for o in outcomes]})
    else:
        show([o.result.to_dict() for o in outcomes if o.ok], fmt)
    fail_fleet(outcomes)


@contextlib.contextmanager
def _progress(bundle: Path, settings: Any, device: str) -> Iterator[Any]:
    """One device, a terminal: an upload bar (a spinner while an app starts and is checked)."""
    if settings is not None:
        kind = settings.app if isinstance(settings.app, str) else settings.app.kind
        with err_console.status(f"deploying {bundle.name} + {kind} to {device}", spinner="dots"):
            yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=err_console, transient=True) as prog:
        task = prog.add_task(f"upload to {device}", total=None)

        def on_event(_device: str, event: str, info: dict[str, Any]) -> None:
            if event == "upload":
                prog.update(task, completed=info["done"], total=info["total"])

        yield on_event


def rollback_cmd(
    bundle: str = typer.Argument(..., help="the bundle's name on the device (or its local directory)"),
    device: str = DeviceOpt,
    devices: str = DevicesOpt,
    trust_new_host_key: bool = TrustOpt,
    fmt: Format = FormatOpt,
) -> None:
    """Make the previous deployed version of a bundle current again (the current one becomes previous)."""

    selector, many = selection(device, devices)
    where = selector if many else Inventory().get(selector)
    bname = Path(bundle).name if ("/" in bundle or Path(bundle).is_dir()) else bundle

    def one(site: Any, dev: Any) -> dict[str, Any]:
        out = rollback(site, bname)
        out.pop("ok", None)
        return {"device": site.name, "name": bname, **out}

    outcomes = on_sites(where, one, trust_new_host_key=trust_new_host_key)
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
