"""``edgeify apps status|stop``: the apps ``edgeify deploy BUNDLE --app serve`` started on devices."""

from __future__ import annotations

import typer

from .output import Format, FormatOpt, TrustOpt, console, examples, print_json

apps_app = typer.Typer(help="Apps started on devices by `edgeify deploy BUNDLE --app serve`.", no_args_is_help=True)


@apps_app.command("status", epilog=examples("edgeify apps status --device pi-01",
                                             "edgeify apps status -d pi-01 --format json"))
def apps_status(
    device: str = typer.Option(..., "--device", "-d", help="device name (`edgeify devices list`)"),
    trust_new_host_key: bool = TrustOpt,
    fmt: Format = FormatOpt,
) -> None:
    """The apps on a device: name, app, port, pid, running or its exit code and last log lines."""
    from edgeify.deploy.apps import app_status
    from edgeify.deploy.connect import open_site
    from edgeify.deploy.inventory import Inventory

    from .output import print_app_status

    dev = Inventory().get(device)
    with open_site(dev, trust_new_host_key=trust_new_host_key) as site:
        data = app_status(site)
    if fmt == Format.json:
        print_json({"device": device, **data})
        return
    print_app_status(device, data)


@apps_app.command("stop", epilog=examples("edgeify apps stop digits-rpi5 --device pi-01",
                                           "edgeify apps stop digits-rpi5 -d pi-01 --timeout 30"))
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


def register(app: typer.Typer) -> None:
    app.add_typer(apps_app, name="apps")
