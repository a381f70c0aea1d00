"""Device apps: ``edgeify deploy BUNDLE --device NAME --app serve --port 8080`` deploys the bundle, installs an
app that embeds the runtime next to it, starts it detached and checks its health endpoint.

An app takes ``--bundle DIR --host H --port P``, answers ``GET /healthz`` with 200 and the ``bundle_digest``
it serves, and stops cleanly on SIGTERM. ``--app serve`` is ``python -m edgeify_runtime.serve``, run from the
runtime zip (so it works for an edgeify installed from a wheel); ``--app path/to/app.py`` is any Python file
that follows the same contract. The service binds 127.0.0.1 unless ``host`` says otherwise (a warning in the
report when it is not a loopback address); ``token_file`` turns on its bearer token, handed to the app in its
environment through the start request's stdin (never on a command line, in app.json or in a log).
Steps, each timed in the report:

1. **probe**: the runtime zip (uploaded when the device lacks this version), then one device call imports what
   the app needs (numpy, ``edgeify_runtime`` from the runtime zip, the packages of ``requirements-<app>.txt``
   beside the app file). edgeify never pip-installs on a device: a missing package fails here with
   EngineMissingError (exit 11) and the ``pip install`` line to run there, before the bundle is installed, so
   the device keeps its ``current`` bundle;
2. **deploy**: the bundle, as ``edgeify deploy`` does (nothing sent when unchanged);
3. **upload**: an app file of one's own, cached on the device by content hash (``apps/_files/<app>-<sha16>.py``);
4. **start**: an app of the same name that is running is stopped first (SIGTERM, a bounded wait, then SIGKILL);
   the new one starts in its own session with ``PYTHONPATH`` = the runtime zip, its output in
   ``apps/<name>/app.log`` and its pid in ``apps/<name>/app.pid`` (``edgeify_runtime.device_apps`` has the
   layout);
5. **health**: one device call polls ``http://127.0.0.1:PORT/healthz`` on the device every 0.5 s until it
   answers 200 with the deployed bundle's digest, with a deadline (60 s). If the app exits first, the error
   has its exit code and the ``serve: error:`` / ``fix:`` lines of its log; a timeout stops the app and raises
   RemoteCommandError (exit 25).

The app's name on the device is the bundle's name there (``--name``), so one bundle has one app; redeploying
restarts it. ``edgeify apps status|stop --device NAME`` list and stop apps.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import posixpath
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeify_runtime.serve import REQUIREMENTS

from ..errors import (
    BundleError,
    ConfigError,
    EdgeifyError,
    EngineMissingError,
    InputSignatureError,
    RemoteCommandError,
)
from .deployer import PhaseCallback, deploy
from .device_calls import device_op
from .inventory import Device
from .runtime_zip import RuntimeOnDevice, install_runtime
from .site import DeviceSite

APPS_MODULE = "edgeify_runtime.device_apps"
#: apps known by name: the module the runtime zip runs (``python -m``)
KNOWN_APPS = {"serve": "edgeify_runtime.serve"}
#: the environment variable that hands the bearer token to ``edgeify_runtime.serve``
TOKEN_ENV = "EDGEIFY_SERVE_TOKEN"
#: modules every app needs on the device besides its requirements file
BASE_MODULES = ("numpy", "edgeify_runtime")
#: distribution name -> import name, where they differ (the requirements file names distributions)
IMPORT_NAMES = {"prometheus-client": "prometheus_client", "pillow": "PIL", "pyyaml": "yaml",
                "opencv-python": "cv2", "opencv-python-headless": "cv2", "scikit-learn": "sklearn"}
#: options edgeify sets itself
RESERVED_OPTIONS = {"bundle": "it is the deployed bundle", "port": "use --port", "token-file": "use --token-file"}
_OPTION_KEY = re.compile(r"^[a-z][a-z0-9-]*$")
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")

DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"
HEALTH_TIMEOUT_S = 60.0
HEALTH_INTERVAL_S = 0.5
#: SIGTERM -> SIGKILL wait; serve.py drains for --shutdown-timeout (10 s by default), plus 5 s
STOP_TIMEOUT_S = 15.0
#: the client waits this much longer than a device-side deadline, so the device reports its own timeout
CLIENT_GRACE_S = 15.0


# -- the app, on the host ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AppSpec:
    """An app to start: a module of the runtime zip (``serve``) or a file to install (content hash), and what
    it needs on the device."""

    kind: str
    path: Path | None
    sha256: str
    #: the import names the device must have (probed before anything is started)
    modules: tuple[str, ...]
    #: (requirement line, import name) from ``requirements-<app>.txt``: what to pip-install when it is missing
    requirements: tuple[tuple[str, str], ...]
    requirements_file: Path | None
    #: ``python -m`` this module (from the runtime zip) instead of a file
    module: str | None = None

    @property
    def remote_file(self) -> str:
        return f"{self.kind}-{self.sha256[:16]}.py"


def _requirements(path: Path) -> list[tuple[str, str]]:
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        m = _REQ_NAME.match(line)
        if not line or line.startswith("-") or not m:
            continue
        dist = m.group(1).lower()
        out.append((line, IMPORT_NAMES.get(dist, dist.replace("-", "_").replace(".", "_"))))
    return out


def resolve_app(app: str) -> AppSpec:
    """``serve`` (a module of the runtime) or a path to an app file; reads its requirements."""
    if app in KNOWN_APPS:
        reqs = [(line, IMPORT_NAMES.get(name, name.replace("-", "_"))) for line in REQUIREMENTS
                for name in [_REQ_NAME.match(line).group(1).lower()]]  # type: ignore[union-attr]
        module = KNOWN_APPS[app]
        return AppSpec(kind=app, path=None, sha256="", modules=tuple(dict.fromkeys([*BASE_MODULES, module,
                                                                                    *(m for _, m in reqs)])),
                       requirements=tuple(reqs), requirements_file=None, module=module)
    path = Path(app).expanduser()
    if path.suffix != ".py" or not path.is_file():
        known = ", ".join(sorted(KNOWN_APPS))
        raise ConfigError(f"unknown app {app!r}: not one of {known}, nor a Python file",
                          hint=f"--app {known}, or --app path/to/app.py (an app with --bundle/--host/--port "
                               "and GET /healthz, like edgeify_runtime.serve)")
    path = path.resolve()
    kind = re.sub(r"[^A-Za-z0-9_-]", "_", path.stem)[:40] or "app"
    req = path.with_name(f"requirements-{path.stem}.txt")
    reqs = _requirements(req) if req.is_file() else []
    return AppSpec(kind=kind, path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                   modules=tuple(dict.fromkeys([*BASE_MODULES, *(m for _, m in reqs)])), requirements=tuple(reqs),
                   requirements_file=req if req.is_file() else None)


def app_arguments(options: Sequence[str]) -> tuple[list[str], str | None]:
    """``--app-option KEY=VALUE`` / ``KEY`` -> the app's ``--KEY VALUE`` / ``--KEY``; also returns ``host``."""
    argv: list[str] = []
    host = None
    for text in options:
        key, sep, value = text.partition("=")
        key = key.strip().lstrip("-")
        if not _OPTION_KEY.match(key):
            raise ConfigError(f"invalid --app-option {text!r}", hint="KEY=VALUE or KEY, e.g. --app-option "
                                                                     "max-batch=16 or --app-option cpu-fallback")
        if key in RESERVED_OPTIONS:
            raise ConfigError(f"--app-option {key} is set by edgeify ({RESERVED_OPTIONS[key]})")
        if key == "host":
            if not value:
                raise ConfigError("--app-option host needs a value", hint="e.g. --app-option host=127.0.0.1")
            host = value
            continue
        argv += [f"--{key}", value] if sep else [f"--{key}"]
    return argv, host


def _probe_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def device_address(site: DeviceSite) -> str:
    endpoint = getattr(site.transport, "endpoint", None)
    return getattr(endpoint, "hostname", None) or "127.0.0.1"


# -- device calls -----------------------------------------------------------------------------------------------
def app_op(site: DeviceSite, runtime: RuntimeOnDevice, op: str, args: dict[str, Any], *,
           timeout: float = 120.0) -> dict[str, Any]:
    """Run one ``edgeify_runtime.device_apps`` operation on the device; raise the typed error it reports
    (AppError, with what the device said, for the app's own failures)."""

    def error(err: dict[str, Any]) -> BaseException | None:
        if not err.get("kind") or err["kind"] in ("disk_full", "not_writable", "busy"):
            return None  # the general map
        return AppError(site.name, err)

    return device_op(site, runtime, APPS_MODULE, op, args, timeout=timeout, on_error=error)


class AppError(RemoteCommandError):
    """An app operation failed on the device (exit 25); ``info`` has what the device reported."""

    def __init__(self, device: str, info: dict[str, Any], hint: str | None = None) -> None:
        super().__init__(f"device {device}: {info.get('message', 'app operation failed')}", hint=hint)
        self.info = info


def read_token(token_file: str | os.PathLike[str] | None) -> str | None:
    """The bearer token from ``token_file`` (first line, stripped), or None. Never logged."""
    if token_file is None:
        return None
    try:
        token = Path(token_file).expanduser().read_text(encoding="utf-8").strip().splitlines()[0].strip()
    except (OSError, UnicodeError, IndexError) as exc:
        raise ConfigError(f"--token-file {token_file}: cannot read a token ({type(exc).__name__})",
                          hint="write the token on the file's first line (e.g. `openssl rand -hex 32 > FILE`)") \
            from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise ConfigError(f"--token-file {token_file}: the token must be at least 16 characters, no spaces",
                          hint="e.g. `openssl rand -hex 32 > FILE`")
    return token


def host_warning(host: str) -> str | None:
    """A warning when ``host`` is not a loopback address (the service is then reachable from the network)."""
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return None
    return (f"the service listens on {host}: anyone who can reach the device on that address can use it"
            + "; protect it with --token-file, a firewall or a reverse proxy")


def _missing_error(site: DeviceSite, spec: AppSpec, missing: dict[str, str]) -> EngineMissingError:
    py = " ".join(site.python)
    wanted = [line for line, module in spec.requirements if module in missing]
    names = ", ".join(f"{m} ({why.splitlines()[0][:120]})" for m, why in missing.items())
    if wanted:
        reqs = " ".join(f"'{r}'" for r in wanted)
        src = f" (from {spec.requirements_file.name})" if spec.requirements_file else ""
        hint = f"on the device, install them into {py}: {py} -m pip install {reqs}{src}"
        if spec.requirements_file is not None:
            hint += f"; or copy the file there and run: pip install -r {spec.requirements_file.name}"
        elif spec.module is not None:
            hint += f" (the runtime's [{spec.kind}] extra)"
    elif "edgeify_runtime" in missing or spec.module in missing:
        hint = "the runtime zip on the device is unusable: redeploy (edgeify deploy BUNDLE --device ...)"
    else:
        hint = f"on the device: {py} -m pip install numpy"
    return EngineMissingError(f"device {site.name}: app {spec.kind!r} cannot run with {py}: missing {names}; "
                              "edgeify does not install packages on devices", hint=hint)


def _died_error(site: DeviceSite, spec: AppSpec, info: dict[str, Any]) -> EdgeifyError:
    code = info.get("exit_code")
    tail = [line for line in info.get("log_tail") or [] if line.strip()]
    errors = [line for line in tail if ": error:" in line]
    fixes = [line[len("fix:"):].strip() for line in tail if line.startswith("fix:")]
    reason = errors[-1] if errors else (tail[-1] if tail else "no output")
    msg = (f"device {site.name}: app {spec.kind!r} exited with code {code} before it was healthy: {reason}\n"
           "  log tail:\n" + "\n".join(f"    {line}" for line in tail[-10:]))
    if fixes:
        hint = fixes[-1]
    elif code == 2:
        hint = "the app rejected its arguments: check the --app-option values (the app's error is above)"
    else:
        hint = f"see the app's log on the device: edgeify apps status --device {site.name}"
    classes: dict[Any, type[EdgeifyError]] = {5: InputSignatureError, 11: EngineMissingError, 12: BundleError}
    return classes.get(code, RemoteCommandError)(msg, hint=hint)


# -- deploy + start + health --------------------------------------------------------------------------------------
@dataclass
class AppReport:
    device: str
    app: str
    name: str
    pid: int
    port: int
    host: str
    url: str
    health: dict[str, Any]
    seconds: float
    bundle_digest: str
    log: str
    #: the app of that name that was running before and stopped by this deploy (pid, signal, exit code)
    restarted: dict[str, Any] | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    deploy: dict[str, Any] = field(default_factory=dict)
    #: whether the service asks for a bearer token (the token itself is never in a report)
    token: bool = False
    warnings: list[str] = field(default_factory=list)
    #: the systemd unit file (with --systemd)
    unit: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def deploy_app(site: DeviceSite, bundle: str | os.PathLike[str], *, app: str | AppSpec = "serve",
               port: int = DEFAULT_PORT, options: Sequence[str] = (), device: Device | None = None,
               name: str | None = None, force: bool = False, health_timeout: float = HEALTH_TIMEOUT_S,
               health_interval: float = HEALTH_INTERVAL_S, stop_timeout: float = STOP_TIMEOUT_S,
               host: str | None = None, token_file: str | os.PathLike[str] | None = None,
               systemd: bool = False, unit_dir: str | None = None,
               on_phase: PhaseCallback | None = None) -> AppReport:
    """Deploy ``bundle``, install ``app`` beside it, (re)start it on ``host:port`` (127.0.0.1 unless told) and
    wait until it is healthy. ``token_file``: the service then asks every request for that bearer token.
    ``systemd``: install it as a systemd unit (a user unit when the login user is not root) that restarts on
    failure and at boot, instead of a detached process (``unit_dir``: another unit directory on the device)."""
    spec = app if isinstance(app, AppSpec) else resolve_app(app)
    extra, option_host = app_arguments(options)
    host = host or option_host or DEFAULT_HOST
    token = read_token(token_file)
    if not 1 <= int(port) <= 65535:
        raise ConfigError(f"--port {port}: not a TCP port (1-65535)")
    warning = host_warning(host)
    phase = on_phase or (lambda _n, _i: None)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    # probe first (from the runtime zip), deploy after: a device that cannot run the app keeps its `current`
    runtime = install_runtime(site)
    workdir = runtime.workdir
    probe_args: dict[str, Any] = {"modules": list(spec.modules)}
    if spec.module is None:
        probe_args.update(file=spec.remote_file, sha256=spec.sha256)
    probe = app_op(site, runtime, "probe", probe_args, timeout=120)
    if probe.get("missing"):
        raise _missing_error(site, spec, probe["missing"])
    timings["probe"] = time.perf_counter() - t0
    phase("probed", {"python": probe.get("python")})

    t = time.perf_counter()
    report = deploy(site, bundle, device=device, name=name, force=force)
    timings["deploy"] = time.perf_counter() - t

    t = time.perf_counter()
    upload = None
    if spec.module is None and not probe.get("present"):
        assert spec.path is not None
        upload = posixpath.join(probe["files_dir"], f".upload-{uuid.uuid4().hex[:12]}.py")
        site.transport.put(str(spec.path), upload)
    timings["upload"] = time.perf_counter() - t

    t = time.perf_counter()
    remote_bundle = posixpath.join(workdir, "bundles", report.name, "current")
    program = ["-m", spec.module] if spec.module else [posixpath.join(probe["files_dir"], spec.remote_file)]
    argv = [*site.python, *program, "--bundle", remote_bundle, "--host", host, "--port", str(int(port)), *extra]
    start: dict[str, Any] = {"name": report.name, "app": spec.kind, "upload": upload, "argv": argv,
                             "env": runtime.env(), "bundle": report.name, "digest": report.digest, "host": host,
                             "port": int(port), "stop_timeout": stop_timeout, "marker": remote_bundle,
                             "secret_env": {TOKEN_ENV: token} if token else {}}
    if spec.module is None:
        start.update(file=spec.remote_file, sha256=spec.sha256)
    if systemd:
        started = _install_unit(site, runtime, {**start, "unit_dir": unit_dir},
                                timeout=stop_timeout + 5 + 60 + CLIENT_GRACE_S)
    else:
        started = _start(site, runtime, start, timeout=stop_timeout + 5 + 10 + CLIENT_GRACE_S)
    pid = int(started["pid"])
    timings["start"] = time.perf_counter() - t
    phase("started", {"pid": pid, "stopped": started.get("stopped")})

    t = time.perf_counter()
    url = f"http://{_probe_host(host)}:{int(port)}/healthz"
    try:
        health = app_op(site, runtime, "health", {"name": report.name, "pid": pid, "url": url,
                                                  "digest": report.digest, "deadline_s": health_timeout,
                                                  "interval": health_interval, "token": token},
                        timeout=health_timeout + 2 + CLIENT_GRACE_S)
    except AppError as exc:
        if exc.info.get("kind") == "exited":
            raise _died_error(site, spec, exc.info) from None
        stop = _stop_quietly(site, report.name, stop_timeout)
        tail = "\n".join(f"    {line}" for line in exc.info.get("log_tail") or [])
        raise RemoteCommandError(f"{exc.message}; {stop}" + (f"\n  log tail:\n{tail}" if tail else ""),
                                 hint="raise --health-timeout for a slow start; check the log and --host/--port") \
            from None
    timings["health"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    stopped = started.get("stopped") or {}
    address = device_address(site) if host in ("0.0.0.0", "::", "") else host
    return AppReport(device=site.name, app=spec.kind, name=report.name, pid=pid, port=int(port), host=host,
                     url=f"http://{_probe_host(address)}:{int(port)}", health=health.get("health") or {},
                     seconds=round(timings["total"], 3), bundle_digest=report.digest, log=started.get("log", ""),
                     restarted=stopped if stopped.get("was_running") else None,
                     timings_s={k: round(v, 4) for k, v in timings.items()}, deploy=report.to_dict(),
                     token=token is not None, warnings=[warning] if warning else [],
                     unit=started.get("unit"))


def _install_unit(site: DeviceSite, runtime: RuntimeOnDevice, args: dict[str, Any], *,
                  timeout: float) -> dict[str, Any]:
    try:
        return app_op(site, runtime, "install_unit", args, timeout=timeout)
    except AppError as exc:
        if exc.info.get("kind") == "no_systemd":
            raise AppError(site.name, exc.info, hint="deploy without --systemd (a detached process), or on a device "
                                                     "that runs systemd") from None
        raise


def _start(site: DeviceSite, runtime: RuntimeOnDevice, args: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    try:
        return app_op(site, runtime, "start", args, timeout=timeout)
    except AppError as exc:
        if exc.info.get("kind") == "port_taken":
            raise AppError(site.name, exc.info, hint=f"stop it first (edgeify apps stop {exc.info.get('other')} "
                                                     f"--device {site.name}) or pick another --port") from None
        raise


def _stop_quietly(site: DeviceSite, name: str, timeout: float) -> str:
    try:
        out = stop_app(site, name, timeout=timeout)
    except EdgeifyError as exc:
        return f"stopping it failed too: {exc.message}"
    return f"the app was stopped (pid {out.get('pid')}, SIG{out.get('signal')})" if out.get("was_running") \
        else "the app is not running"


def stop_app(site: DeviceSite, name: str, *, timeout: float = STOP_TIMEOUT_S) -> dict[str, Any]:
    """Stop the app ``name`` (SIGTERM, up to ``timeout`` s, then SIGKILL); returns pid, signal, exit code."""
    try:
        out = app_op(site, install_runtime(site), "stop", {"name": name, "timeout": timeout},
                     timeout=timeout + 5 + CLIENT_GRACE_S)
    except AppError as exc:
        if exc.info.get("kind") == "missing":
            known = ", ".join(exc.info.get("known") or []) or "none"
            raise ConfigError(exc.message + f" (apps there: {known})",
                              hint=f"edgeify apps status --device {site.name}") from None
        raise
    out.pop("ok", None)
    return out


def app_status(site: DeviceSite) -> dict[str, Any]:
    """Every app on the device: name, app, bundle digest, port, pid, running, and exit code + log tail if not."""
    out = app_op(site, install_runtime(site), "status", {}, timeout=60)
    out.pop("ok", None)
    return out


__all__ = ["AppError", "AppReport", "AppSpec", "app_arguments", "app_status", "deploy_app", "host_warning",
           "read_token", "resolve_app", "stop_app"]
