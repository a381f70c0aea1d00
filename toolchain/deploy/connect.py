"""From an inventory entry to a connected device: ``with open_site(device) as site: ...``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .inventory import Device
from .site import DeviceSite
from .ssh import SSHTransport
from .sshconfig import SSHEndpoint, resolve


def endpoint_for(device: Device) -> SSHEndpoint:
    """Resolve the device's connection like OpenSSH: its own fields first, then ~/.ssh/config."""
    return resolve(device.ssh_alias, port=device.port, user=device.user, key=device.key)


def transport_for(device: Device, *, trust_new_host_key: bool = False, passphrase: str | None = None,
                  connect_timeout: float | None = None) -> SSHTransport:
    kwargs = {} if connect_timeout is None else {"connect_timeout": connect_timeout}
    return SSHTransport.for_endpoint(endpoint_for(device), trust_new_host_key=trust_new_host_key,
                                     passphrase=passphrase, label=f"device {device.name}", **kwargs)


@contextmanager
def open_site(device: Device, *, trust_new_host_key: bool = False,
              passphrase: str | None = None) -> Iterator[DeviceSite]:
    """A DeviceSite over SSH for ``device`` (connects on first use, closes on exit)."""
    with transport_for(device, trust_new_host_key=trust_new_host_key, passphrase=passphrase) as t:
        yield DeviceSite.for_device(t, device)


__all__ = ["endpoint_for", "open_site", "transport_for"]
