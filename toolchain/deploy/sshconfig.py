"""Resolve a host the way OpenSSH does: ``~/.ssh/config`` (or ``$EDGEIFY_SSH_CONFIG``) through paramiko.

Values given explicitly (the devices file, the command line) win over the config file, as on ``ssh``'s
command line; the config file's first match wins for everything else. Resolved: ``HostName``, ``Port``,
``User``, ``IdentityFile`` and ``UserKnownHostsFile`` (default ``~/.ssh/known_hosts``; the first file listed
is the one trust-on-first-use writes to). ``GlobalKnownHostsFile`` (default ``/etc/ssh/ssh_known_hosts``) is
read, never written. ``ProxyJump``/``ProxyCommand`` are refused with a clear error rather than bypassed.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

DEFAULT_PORT = 22
#: the key files OpenSSH tries when neither the devices file nor the config names one
DEFAULT_KEY_NAMES = ("id_ed25519", "id_ecdsa", "id_rsa")
GLOBAL_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"


@dataclass(frozen=True)
class SSHEndpoint:
    """Where and as whom to connect, and which keys and known_hosts files to use."""

    alias: str
    hostname: str
    port: int
    user: str
    key_files: tuple[str, ...]
    explicit_keys: bool
    known_hosts_files: tuple[str, ...]
    global_known_hosts_files: tuple[str, ...]
    config_file: str | None

    @property
    def known_hosts_name(self) -> str:
        """The name a known_hosts line uses: ``host`` on port 22, ``[host]:port`` otherwise."""
        return self.hostname if self.port == DEFAULT_PORT else f"[{self.hostname}]:{self.port}"

    @property
    def label(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    def describe(self) -> dict[str, object]:
        return {"alias": self.alias, "hostname": self.hostname, "port": self.port, "user": self.user,
                "key_files": list(self.key_files), "known_hosts_files": list(self.known_hosts_files),
                "ssh_config": self.config_file}


def ssh_dir() -> Path:
    return Path.home() / ".ssh"


def ssh_config_path() -> Path:
    """``$EDGEIFY_SSH_CONFIG`` if set, else ``$HOME/.ssh/config``."""
    override = os.environ.get("EDGEIFY_SSH_CONFIG")
    return Path(override).expanduser() if override else ssh_dir() / "config"


def _lookup(alias: str, path: Path) -> dict[str, object]:
    if not path.is_file():
        if os.environ.get("EDGEIFY_SSH_CONFIG"):
            raise ConfigError(f"EDGEIFY_SSH_CONFIG names {path}, which does not exist")
        return {}
    import paramiko

    try:
        cfg = paramiko.SSHConfig.from_path(str(path))
        return dict(cfg.lookup(alias))
    except Exception as exc:  # a parse error in the user's file: name the file
        raise ConfigError(f"cannot read the SSH config {path}: {exc}") from exc


def _expand(value: str, *, hostname: str, port: int, user: str) -> str:
    home = str(Path.home())
    local_user = _local_user()
    out, i = [], 0
    tokens = {"d": home, "h": hostname, "p": str(port), "r": user, "u": local_user, "%": "%"}
    while i < len(value):
        ch = value[i]
        if ch == "%" and i + 1 < len(value) and value[i + 1] in tokens:
            out.append(tokens[value[i + 1]])
            i += 2
            continue
        out.append(ch)
        i += 1
    text = "".join(out)
    return os.path.expanduser(text) if text.startswith("~") else text


def _local_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers)
        return os.environ.get("USER") or "root"


def resolve(alias: str, *, hostname: str | None = None, port: int | None = None, user: str | None = None,
            key: str | None = None) -> SSHEndpoint:
    """Resolve ``alias`` (a device's ``host``, or its name when no host is set) like ``ssh alias`` would.

    ``hostname``/``port``/``user``/``key`` given here win over the config file.
    """
    path = ssh_config_path()
    cfg = _lookup(alias, path)
    for unsupported in ("proxyjump", "proxycommand"):
        value = cfg.get(unsupported)
        if value and str(value).lower() != "none":
            raise ConfigError(
                f"{path}: host {alias!r} uses {unsupported} ({value}), which edgeify does not support yet",
                hint="reach the device directly (a VPN or port forward), or use a Host entry without it")
    host = hostname or str(cfg.get("hostname") or alias)
    try:
        port_v = int(port if port is not None else cfg.get("port") or DEFAULT_PORT)
    except ValueError:
        raise ConfigError(f"{path}: host {alias!r} has an invalid Port {cfg.get('port')!r}") from None
    user_v = user or str(cfg.get("user") or _local_user())
    if key:
        keys: tuple[str, ...] = (os.path.expanduser(key),)
        explicit = True
    elif cfg.get("identityfile"):
        keys = tuple(_expand(str(k), hostname=host, port=port_v, user=user_v)
                     for k in cfg["identityfile"])  # type: ignore[union-attr]
        explicit = False
    else:
        keys = tuple(str(ssh_dir() / n) for n in DEFAULT_KEY_NAMES)
        explicit = False
    kh = str(cfg.get("userknownhostsfile") or "").split()
    known = tuple(_expand(k, hostname=host, port=port_v, user=user_v) for k in kh if k.lower() != "none") \
        or (str(ssh_dir() / "known_hosts"),)
    gkh = str(cfg.get("globalknownhostsfile") or GLOBAL_KNOWN_HOSTS).split()
    global_known = tuple(_expand(k, hostname=host, port=port_v, user=user_v) for k in gkh)
    return SSHEndpoint(alias=alias, hostname=host, port=port_v, user=user_v, key_files=keys,
                       explicit_keys=explicit, known_hosts_files=known, global_known_hosts_files=global_known,
                       config_file=str(path) if path.is_file() else None)


__all__ = ["DEFAULT_PORT", "SSHEndpoint", "resolve", "ssh_config_path"]
