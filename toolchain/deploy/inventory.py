"""The devices file: ``devices.toml`` in edgeify's config dir (``edgeify.paths.config_dir()``).

::

    # written by `edgeify devices add`; hand edits are fine (the file is validated when read)
    [devices.pi-01]
    host = "192.168.1.50"     # optional: the device name is then looked up in ~/.ssh/config as a Host alias
    user = "pi"               # optional: ~/.ssh/config's User, else your login name
    target = "rpi5"
    tags = ["pi", "lab"]

Fields: ``host``, ``port``, ``user``, ``key`` (a private key file), ``python`` (the command that runs Python 3
on the device, default ``python3``), ``workdir`` (default ``~/.edgeify`` on the device), ``target`` (required),
``tags``. A field that is not set stays unset in the file and is resolved from ``~/.ssh/config`` when
connecting, as OpenSSH would. Writes are atomic (temporary file, fsync, rename) and keep the file's comments
and layout (tomlkit). ``save`` takes an exclusive lock (``devices.toml.lock``, flock), re-reads the file under
it and applies this Inventory's ``add``/``remove`` calls to what is there: ten ``edgeify devices add`` at once
keep all ten devices.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import ConfigError
from ..paths import config_dir

DEFAULT_PYTHON = "python3"
DEFAULT_WORKDIR = "~/.edgeify"
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
FILE_NAME = "devices.toml"


class Device(BaseModel):
    """One device. Unset connection fields are ``None`` (resolved from ~/.ssh/config at connect time)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_RE)
    host: str | None = Field(default=None, min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = Field(default=None, min_length=1, pattern=r"^[^\s@:]+$")
    key: str | None = Field(default=None, min_length=1)
    python: str | None = Field(default=None, min_length=1)
    workdir: str | None = Field(default=None, min_length=1)
    target: str = Field(min_length=1)
    tags: tuple[str, ...] = ()

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is not None and (any(c.isspace() for c in v) or v.startswith("-") or "@" in v or "/" in v):
            raise ValueError("host must be a host name, an IP address or a Host alias (no user@, no spaces)")
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for t in v:
            if not _TAG_RE.match(t):
                raise ValueError(f"invalid tag {t!r} (letters, digits, '.', '_', '-')")
        return tuple(dict.fromkeys(v))

    @field_validator("python")
    @classmethod
    def _python(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                if not shlex.split(v):
                    raise ValueError("python is empty")
            except ValueError as exc:
                raise ValueError(f"python must be a command line: {exc}") from None
        return v

    @property
    def python_argv(self) -> list[str]:
        return shlex.split(self.python or DEFAULT_PYTHON)

    @property
    def remote_workdir(self) -> str:
        return self.workdir or DEFAULT_WORKDIR

    @property
    def ssh_alias(self) -> str:
        """What ~/.ssh/config is consulted with: the host when set, else the device's name."""
        return self.host or self.name

    def fields(self) -> dict[str, Any]:
        """The set fields, in file order (what ``devices.toml`` stores)."""
        data = self.model_dump(exclude={"name"}, exclude_none=True)
        if not data.get("tags"):
            data.pop("tags", None)
        return data


def devices_file() -> Path:
    return _config_dir() / FILE_NAME


def _config_dir() -> Path:
    return config_dir()


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        out = ['"']
        for ch in v:
            if ch in ('"', "\\"):
                out.append("\\" + ch)
            elif ord(ch) < 0x20 or ch == "\x7f":
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        return "".join(out) + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dumps(devices: Iterable[Device]) -> str:
    lines = ["# edgeify devices: `edgeify devices add|remove|list` edit this file; hand edits are fine.",
             "# Unset fields (host, port, user, key) are resolved from ~/.ssh/config when connecting.", ""]
    for d in sorted(devices, key=lambda d: d.name):
        name = d.name if re.match(r"^[A-Za-z0-9_-]+$", d.name) else _toml_value(d.name)
        lines.append(f"[devices.{name}]")
        for k, v in d.fields().items():
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    return "\n".join(lines)


def _toml_loads(text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads(text)


class Inventory:
    """The devices in ``path`` (default: ``devices.toml`` in the config dir). Read once; ``save`` is atomic."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else devices_file()
        self._devices: dict[str, Device] = self._read()
        #: the add/remove calls since the file was read, replayed on the file's state under the lock by save()
        self._edits: list[tuple[str, Any, bool]] = []

    def _read(self, text: str | None = None) -> dict[str, Device]:
        if text is None:
            if not self.path.exists():
                return {}
            text = _read_text(self.path)
        try:
            raw = _toml_loads(text)
        except ValueError as exc:
            raise ConfigError(f"cannot read the devices file {self.path}: {exc}",
                              hint="fix the file by hand, or remove it and add the devices again") from exc
        unknown = sorted(set(raw) - {"devices"})
        if unknown:
            raise ConfigError(f"{self.path}: unknown top-level key(s) {unknown}; expected [devices.NAME] tables")
        table = raw.get("devices", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{self.path}: `devices` must be a table of [devices.NAME] tables")
        out: dict[str, Device] = {}
        for name, fields in table.items():
            if not isinstance(fields, dict):
                raise ConfigError(f"{self.path}: [devices.{name}] must be a table")
            out[name] = _validated(name, fields, where=str(self.path))
        return out

    def __iter__(self) -> Iterator[Device]:
        return iter(sorted(self._devices.values(), key=lambda d: d.name))

    def __len__(self) -> int:
        return len(self._devices)

    def __contains__(self, name: object) -> bool:
        return name in self._devices

    def get(self, name: str) -> Device:
        try:
            return self._devices[name]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(name, list(self._devices), n=2, cutoff=0.5)
            known = ", ".join(sorted(self._devices)) or "none yet"
            raise ConfigError(f"unknown device {name!r} (known: {known})",
                              hint=(f"did you mean {' or '.join(map(repr, close))}? " if close else "")
                              + f"add it with `edgeify devices add {name} --host HOST --target TARGET`") from None

    def select(self, selector: str) -> list[Device]:
        """``NAME``, ``NAME1,NAME2``, ``tag:TAG`` (several: ``tag:a,tag:b`` = union) or ``all``."""
        picked: dict[str, Device] = {}
        for part in [p.strip() for p in selector.split(",") if p.strip()]:
            if part == "all":
                picked.update(self._devices)
            elif part.startswith("tag:"):
                tag = part[4:]
                hits = [d for d in self._devices.values() if tag in d.tags]
                if not hits:
                    tags = sorted({t for d in self._devices.values() for t in d.tags})
                    raise ConfigError(f"no device has the tag {tag!r} (tags in use: {', '.join(tags) or 'none'})")
                picked.update({d.name: d for d in hits})
            else:
                d = self.get(part)
                picked[d.name] = d
        if not picked:
            raise ConfigError(f"the device selector {selector!r} selects no device")
        return sorted(picked.values(), key=lambda d: d.name)

    def add(self, device: Device, *, replace: bool = False) -> None:
        self._add(device, replace)
        self._edits.append(("add", device, replace))

    def _add(self, device: Device, replace: bool) -> None:
        if device.name in self._devices and not replace:
            raise ConfigError(f"device {device.name!r} already exists in {self.path}",
                              hint="pass --replace to overwrite it, or `edgeify devices remove` it first")
        self._devices[device.name] = device

    def remove(self, name: str) -> Device:
        device = self.get(name)
        del self._devices[name]
        self._edits.append(("remove", name, False))
        return device

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file is closed (or the process dies)
            yield

    def save(self) -> None:
        """Apply this Inventory's edits to the file as it is now (re-read under an exclusive lock), keeping its
        comments; write it atomically: a reader sees the old file or the new one, never a partial one."""
        with self._locked():
            text = _read_text(self.path) if self.path.exists() else None
            self._devices = self._read(text)  # what other processes saved meanwhile
            for kind, what, replace in self._edits:
                if kind == "add":
                    self._add(what, replace)
                elif what in self._devices:
                    del self._devices[what]
            self._write(_edited(text, self._devices.values()))
            self._edits = []

    def _write(self, text: str) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".devices-", suffix=".toml", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            if self.path.exists():
                os.chmod(tmp, self.path.stat().st_mode & 0o777)
            os.replace(tmp, self.path)
        except BaseException:
            with_suppress_unlink(tmp)
            raise


def _read_text(path: Path) -> str:
    """The devices file's text; ConfigError naming the file when it cannot be read or is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the devices file {path} is not UTF-8 text (byte {exc.start}: "
                          f"{exc.object[exc.start:exc.start + 1]!r})",
                          hint="save it as UTF-8 (iconv -f latin1 -t utf-8), or remove it and add the devices "
                               "again") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the devices file {path}: {exc}",
                          hint="fix the file by hand, or remove it and add the devices again") from exc


def _edited(text: str | None, devices: Iterable[Device]) -> str:
    """``text`` (the devices file, or None) with its [devices.*] tables set to ``devices``; comments, order and
    formatting of everything else kept."""
    import tomlkit

    if text is None:
        return dumps(devices)
    doc = tomlkit.parse(text)
    if "devices" not in doc:
        doc["devices"] = tomlkit.table(is_super_table=True)
    table: Any = doc["devices"]
    wanted = {d.name: d for d in devices}
    for name in [k for k in table if k not in wanted]:
        del table[name]
    for name, device in sorted(wanted.items()):
        fields = device.fields()
        fields["tags"] = list(fields["tags"]) if "tags" in fields else None
        if name in table:
            entry = table[name]
            for key in [k for k in entry if fields.get(k) is None]:
                del entry[key]
            for key, value in fields.items():
                if value is not None and entry.get(key) != value:
                    entry[key] = value
        else:
            entry = tomlkit.table()
            for key, value in fields.items():
                if value is not None:
                    entry[key] = value
            table[name] = entry
    return tomlkit.dumps(doc)


def with_suppress_unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _validated(name: str, fields: dict[str, Any], *, where: str) -> Device:
    try:
        return Device(name=name, **fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'device'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{where}: device {name!r} is invalid: {problems}") from None
    except TypeError as exc:
        raise ConfigError(f"{where}: device {name!r} is invalid: {exc}") from None


def make_device(name: str, **fields: Any) -> Device:
    """A validated Device from CLI values (None = unset)."""
    return _validated(name, {k: v for k, v in fields.items() if v is not None and v != ()}, where="devices add")


__all__ = ["DEFAULT_PYTHON", "DEFAULT_WORKDIR", "Device", "Inventory", "devices_file", "dumps", "make_device"]
