"""Fleet operations: the same function on many devices in parallel, one outcome per device (``deploy.outcome``);
and :func:`deploy`, the one way a bundle (with or without an app) goes to devices (``edgeify.deploy``; the ``deploy``,
``devices`` and ``apps`` commands and rollouts build on it).

Never all-or-nothing: a device that fails (unreachable, auth, disk full...) gives an error outcome and the
others carry on. ``run_fleet`` returns outcomes in the order of the devices given.

::

    from edgeify import deploy
    outcomes = deploy("build/digits-rpi5", "tag:pi")              # every device tagged pi, in parallel
    report = deploy("build/digits-rpi5", "pi-01")[0].unwrap()     # DeployReport, or raises that device's error
    deploy(bundle, ["pi-01", "pi-02"], app="serve")               # AppReport per device: deployed, started, healthy
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigError
from .apps import app_arguments, deploy_app, resolve_app
from .connect import open_site
from .deployer import LocalBundle
from .deployer import deploy as deploy_files
from .inventory import Device, Inventory
from .outcome import MAX_WORKERS, Outcome, attempt, first_failure, run_fleet
from .site import DeviceSite

if TYPE_CHECKING:
    from .apps import AppReport, AppSpec
    from .deployer import DeployReport

T = TypeVar("T")


# -- deploy to devices -------------------------------------------------------------------------------------------
#: where to deploy: a device name, ``NAME1,NAME2``, ``tag:TAG`` or ``all`` (the devices file), an inventory
#: ``Device``, a ``DeviceSite`` (a transport the caller holds open, e.g. ``DeviceSite.local(...)``), or a list
Where = str | Device | DeviceSite | Sequence[str | Device | DeviceSite]
#: ``progress(device, event, info)``: "start"; the deployer's phases ("connected", "transferred", "installed",
#: "device_steps"; with an app "probed", "started"); "upload" with {"done", "total"} bytes; "done" or "failed"
Progress = Callable[[str, str, dict[str, Any]], None]


@dataclass(frozen=True)
class AppSettings:
    """The app ``deploy(..., app=...)`` installs beside the bundle, starts and checks (``--app`` and its options)."""

    app: str | AppSpec = "serve"
    port: int = 8080
    host: str | None = None
    #: passed to the app as ``--KEY VALUE`` (``KEY=VALUE``; ``KEY`` alone: ``--KEY``)
    options: tuple[str, ...] = ()
    #: the bearer token file the service then asks for on every request (never logged)
    token_file: str | os.PathLike[str] | None = None
    systemd: bool = False
    health_timeout: float = 60.0


def select(where: Where, inventory: Inventory | str | os.PathLike[str] | None = None) -> list[Device | DeviceSite]:
    """The devices ``where`` names (see :data:`Where`), each once, in the order given (a selector: by name).
    Unknown names, tags that select nothing and an empty list raise ConfigError (exit 4)."""
    items = [where] if isinstance(where, (str, Device, DeviceSite)) else list(where)
    if not items:
        raise ConfigError("no device given", hint="a device name, NAME1,NAME2, tag:TAG or all")
    inv: Inventory | None = inventory if isinstance(inventory, Inventory) else None
    out: dict[str, Device | DeviceSite] = {}
    for item in items:
        if isinstance(item, str):
            if inv is None:
                inv = Inventory(inventory)  # type: ignore[arg-type]  (a path or None: the default file)
            out.update({d.name: d for d in inv.select(item)})
        elif isinstance(item, (Device, DeviceSite)):
            out[item.name] = item
        else:
            raise ConfigError(f"{item!r} is not a device name, selector, Device or DeviceSite")
    return list(out.values())


def on_sites(where: Where, fn: Callable[[DeviceSite, Device | None], T], *,
             inventory: Inventory | str | os.PathLike[str] | None = None, parallelism: int | None = None,
             trust_new_host_key: bool = False, passphrase: str | None = None) -> list[Outcome[T]]:
    """``fn(site, device)`` on every device ``where`` names, each over its own connection (opened and closed
    here; a ``DeviceSite`` given is the caller's and stays open), in parallel: one :class:`Outcome` each.
    ``device`` is the inventory entry (``None`` for a site given as such)."""

    def one(target: Device | DeviceSite) -> T:
        if isinstance(target, DeviceSite):
            return fn(target, None)

        with open_site(target, trust_new_host_key=trust_new_host_key, passphrase=passphrase) as site:
            return fn(site, target)

    return run_fleet(select(where, inventory), one, max_workers=parallelism)


def deploy(bundle: str | os.PathLike[str], where: Where, *, name: str | None = None,
           app: str | AppSettings | None = None, force: bool = False,
           inventory: Inventory | str | os.PathLike[str] | None = None, parallelism: int | None = None,
           progress: Progress | None = None, trust_new_host_key: bool = False,
           passphrase: str | None = None) -> list[Outcome[DeployReport | AppReport]]:
    """Deploy ``bundle`` ``where`` (see :data:`Where`), in parallel (at most ``parallelism`` devices at once).

    Each device gets the bundle (and the runtime zip) uploaded, verified and installed atomically (the previous
    version kept for rollback); with ``app`` (``"serve"``, a path to an app file, or :class:`AppSettings`) the
    app is also installed, (re)started and checked healthy. Returns one :class:`Outcome` per device, in the
    order given (selectors: by name): its :class:`~edgeify.deploy.deployer.DeployReport` (with ``app``: its
    :class:`~edgeify.deploy.apps.AppReport`), or its error. A bad bundle, app or device name raises before
    any device is contacted. ``inventory``: an :class:`Inventory` or a devices file [default: edgeify's]."""
    # the deployer, the apps and SSH are imported on first use: `import edgeify` stays light

    LocalBundle.read(bundle)  # the manifest, every file's size, symlinks: refused once, before any connection
    settings = AppSettings(app) if isinstance(app, str) else app
    spec = None
    if settings is not None:
        spec = resolve_app(settings.app) if isinstance(settings.app, str) else settings.app
        app_arguments(settings.options)
    say: Progress = progress or (lambda _d, _e, _i: None)

    def one(site: DeviceSite, dev: Device | None) -> Any:
        say(site.name, "start", {})
        on_phase = lambda event, info: say(site.name, event, info)  # noqa: E731
        try:
            if settings is None:
                out = deploy_files(site, bundle, device=dev, name=name, force=force, on_phase=on_phase,
                                   on_progress=lambda done, total: say(site.name, "upload",
                                                                       {"done": done, "total": total}))
            else:
                out = deploy_app(site, bundle, app=spec, port=settings.port, options=settings.options, device=dev,
                                 name=name, force=force, health_timeout=settings.health_timeout,
                                 host=settings.host, token_file=settings.token_file, systemd=settings.systemd,
                                 on_phase=on_phase)
        except BaseException as exc:
            say(site.name, "failed", {"error": exc})
            raise
        say(site.name, "done", {"result": out})
        return out

    return on_sites(where, one, inventory=inventory, parallelism=parallelism,  # type: ignore[return-value]
                    trust_new_host_key=trust_new_host_key, passphrase=passphrase)


__all__ = ["MAX_WORKERS", "AppSettings", "Outcome", "Progress", "Where", "attempt", "deploy", "first_failure",
           "on_sites", "run_fleet", "select"]
