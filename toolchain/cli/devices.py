"""``edgeify devices add|list|show|remove|check|status``: the devices file and what is on each device."""

from __future__ import annotations

from pathlib import Path

import typer
from edgeify.deploy.check import check_device
from edgeify.deploy.connect import endpoint_for
from edgeify.deploy.deployer import status
from edgeify.deploy.fleet import on_sites, run_fleet, select
from edgeify.deploy.inventory import Inventory, make_device
from edgeify.targets import load_registry

from .output import (
    AskPassOpt,
    Format,
    FormatOpt,
    TrustOpt,
    console,
    err_console,
    examples,
    fail_fleet,
    passphrase,
    print_check,
    print_json,
    print_status,
)

devices_app = typer.Typer(help="The devices edgeify deploys to (a TOML file in edgeify's config dir).",
                          no_args_is_help=True,
                          epilog=examples("edgeify devices add pi-01 --host 192.168.1.50 --user pi --target rpi5",
                                          "edgeify devices check pi-01", "edgeify devices list --tag lab"))


@devices_app.command("add", epilog=examples(
    "edgeify devices add pi-01 --host 192.168.1.50 --user pi --target rpi5 --tag lab",
    "edgeify devices add jetson-1 --target jetson --workdir /data/edgeify  # resolved via ~/.ssh/config"))
def devices_add(
    name: str = typer.Argument(..., help="a name for the device (also tried as a Host alias in ~/.ssh/config)"),
    target: str = typer.Option(..., "--target", "-t", help="the device's target (`edgeify targets`); a family "
                                                           "alias is stored as its default board"),
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

    spec, family = load_registry().resolve(target)  # unknown target: TargetError with a "did you mean"
    if family:
        err_console.print(f"target [bold]{family}[/] → board [bold]{spec.name}[/] (stored as {spec.name})")
    keyfile = str(key.expanduser().resolve()) if key is not None else None
    dev = make_device(name, host=host, port=port, user=user, key=keyfile, python=python, workdir=workdir,
                      target=spec.name, tags=tuple(tag))
    inv = Inventory()
    inv.add(dev, replace=replace)
    inv.save()
    err_console.print(f"[green]✓[/] {'replaced' if replace else 'added'} device [bold]{name}[/] in {inv.path}")
    err_console.print(f"  next: edgeify devices check {name}")


@devices_app.command("list", epilog=examples("edgeify devices list", "edgeify devices list --tag lab --format json"))
def devices_list(tag: str = typer.Option(None, "--tag", help="only devices with this tag"),
                 fmt: Format = FormatOpt) -> None:
    """List the devices (as stored: unset fields resolve from ~/.ssh/config when connecting)."""

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


@devices_app.command("show", epilog=examples("edgeify devices show pi-01", "edgeify devices show pi-01 --format json"))
def devices_show(name: str = typer.Argument(...), fmt: Format = FormatOpt) -> None:
    """Show a device and how its connection resolves (HostName, Port, User, keys, known_hosts); no network."""

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


@devices_app.command("remove", epilog=examples("edgeify devices remove pi-01"))
def devices_remove(name: str = typer.Argument(...)) -> None:
    """Remove a device from the devices file (nothing on the device is touched)."""

    inv = Inventory()
    inv.remove(name)
    inv.save()
    err_console.print(f"[green]✓[/] removed device [bold]{name}[/] from {inv.path}")


@devices_app.command("check", epilog=examples("edgeify devices check pi-01",
                                              "edgeify devices check tag:lab --format json",
                                              "edgeify devices check pi-02 --trust-new-host-key"))
def devices_check(
    selector: str = typer.Argument(..., help="device name, NAME1,NAME2, tag:TAG or all"),
    trust_new_host_key: bool = TrustOpt,
    ask_passphrase: bool = AskPassOpt,
    fmt: Format = FormatOpt,
) -> None:
    """Connect to devices and fingerprint them: arch, OS, Python, engines and versions, CPU, memory."""

    devs = select(selector)
    pw = passphrase(ask_passphrase)
    outcomes = run_fleet(devs, lambda d: check_device(d, trust_new_host_key=trust_new_host_key, passphrase=pw))
    if fmt == Format.json:
        print_json({"devices": [o.to_dict() for o in outcomes]})
    else:
        for o in outcomes:
            if o.ok:
                print_check(o.result)
    fail_fleet(outcomes)


@devices_app.command("status", epilog=examples("edgeify devices status pi-01",
                                               "edgeify devices status pi-01 --format json"))
def devices_status(name: str = typer.Argument(...), trust_new_host_key: bool = TrustOpt,
                   fmt: Format = FormatOpt) -> None:
    """What is deployed on a device: each bundle's current and previous version."""

    dev = Inventory().get(name)
    data = on_sites(dev, lambda site, _dev: status(site), trust_new_host_key=trust_new_host_key)[0].unwrap()
    data.pop("ok", None)
    if fmt == Format.json:
        print_json({"device": name, **data})
        return
    print_status(name, data)


def register(app: typer.Typer) -> None:
    app.add_typer(devices_app, name="devices")


__all__ = ["devices_app", "register"]
