"""Device-side operations for device apps (``edgeify deploy --app``): ``python -m edgeify_runtime.device_apps
OP`` with a JSON request on stdin (``probe``, ``start``, ``health``, ``restart``, ``stop``, ``status``); one
JSON reply. ``restart`` starts an app again from what app.json and secret.env keep (its argv, environment and
token), on whatever its bundle's ``current`` now is, and waits until it is healthy (a rollout's step).

Layout in the device's work directory::

    WORKDIR/apps/_files/<app>-<sha16>.py     an app file of the user's, cached by content hash
    WORKDIR/apps/<name>/app.json             what runs: app, bundle, digest, host, port, argv, start time
    WORKDIR/apps/<name>/secret.env           its secret environment (the bearer token), mode 0600
    WORKDIR/apps/<name>/app.pid              the app's pid (written by its monitor shell)
    WORKDIR/apps/<name>/app.log              its stdout + stderr (the previous run's log is app.log.1)
    WORKDIR/apps/<name>/app.exit             its exit status, once it has exited
    WORKDIR/apps/<name>/.lock                flock: one start/stop of this app at a time

``--app serve`` is ``python -m edgeify_runtime.serve`` from the runtime zip (nothing to upload). An app runs
detached in its own session (``setsid``): ``sh -c`` starts it in the background, writes its pid, waits for it
and writes its exit status, so a start that fails can be reported with the app's exit code and log even though
no edgeify process waits for it. The shell is the app's parent and reaps it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
import time
from typing import Any

from .app_procs import (
    LOG_TAIL_BYTES,
    alive,
    exit_code,
    instance,
    log_tail,
    read_int,
    read_secret,
    safe_name,
    stop_app,
    write_secret,
)
from .device_io import Args, OpError, file_lock, read_json, read_text, run_ops, workdir
from .manifest import sha256_file

#: $1.. = the app's argv; runs it in the background, records its pid, then its exit status
MONITOR = ('"$@" & pid=$!; echo "$pid" > app.pid.tmp && mv app.pid.tmp app.pid; '
           'wait "$pid"; echo $? > app.exit.tmp && mv app.exit.tmp app.exit')
#: the app files' directory in WORKDIR/apps (an app's name is a bundle name: it never starts with "_")
FILES = "_files"


def _describe(work: str, name: str) -> Args | None:
    inst = os.path.join(work, "apps", name)
    meta = read_json(os.path.join(inst, "app.json"))
    if not isinstance(meta, dict):
        return None
    pid = read_int(os.path.join(inst, "app.pid"))
    running = alive(pid, meta.get("marker"))
    out = {k: meta.get(k) for k in ("app", "bundle", "digest", "host", "port", "started_at")}
    out.update({"name": name, "pid": pid, "running": running, "log": os.path.join(inst, "app.log")})
    if not running:
        out["exit_code"] = exit_code(inst)
        out["log_tail"] = log_tail(os.path.join(inst, "app.log"), 5)
    return out


def _instances(work: str) -> list[Args]:
    base = os.path.join(work, "apps")
    names = sorted(os.listdir(base)) if os.path.isdir(base) else []
    found = [_describe(work, name) for name in names if name[0] not in "._"]
    return [d for d in found if d is not None]


def op_probe(args: Args) -> Args:
    """Which of ``args["modules"]`` does not import here (PYTHONPATH is the runtime zip)? Whether the app
    file (``file`` + ``sha256``, for an app of one's own) is cached already."""
    missing = {}
    for mod in args.get("modules") or []:
        try:
            importlib.import_module(str(mod))
        except Exception as exc:  # an ImportError, or a broken install that fails while importing
            missing[mod] = f"{type(exc).__name__}: {exc}"
    work = workdir(args)
    files = os.path.join(work, "apps", FILES)
    os.makedirs(files, exist_ok=True)
    out: Args = {"missing": missing, "workdir": work, "python": sys.version.split()[0], "files_dir": files}
    if args.get("file"):
        path = os.path.join(files, safe_name(args["file"]))
        out["present"] = os.path.isfile(path) and sha256_file(path) == args["sha256"]
    return out


def _install_file(work: str, args: Args) -> str:
    files = os.path.join(work, "apps", FILES)
    app_path = os.path.join(files, safe_name(args["file"]))
    upload = args.get("upload")
    if upload:
        if os.path.dirname(os.path.abspath(upload)) != files or os.path.islink(upload):
            raise OpError("unsafe", f"upload outside {files}: {upload}")
        got = sha256_file(upload)
        if got != args["sha256"]:
            with contextlib.suppress(OSError):
                os.unlink(upload)
            raise OpError("hash_mismatch", "the uploaded app file has sha256 {}, expected {}".format(
                got[:12], args["sha256"][:12]))
        os.replace(upload, app_path)
    if not os.path.isfile(app_path) or sha256_file(app_path) != args["sha256"]:
        raise OpError("missing", f"app file {app_path} is missing or changed on the device")
    return app_path


def op_start(args: Args) -> Args:
    """(Install the uploaded app file,) stop a running app of the same name, start the new one."""
    work = workdir(args)
    name = args["name"]
    inst = instance(work, name)
    marker = _install_file(work, args) if args.get("file") else str(args.get("marker") or "")
    port = args.get("port")
    for other in _instances(work):
        if other["name"] != name and other["running"] and port and other.get("port") == port:
            raise OpError("port_taken", "port {} is used by app {!r} (pid {}) on this device".format(
                port, other["name"], other["pid"]), other=other["name"])
    os.makedirs(inst, exist_ok=True)
    with file_lock(os.path.join(inst, ".lock"), what=f"app {name!r}"):
        return _start_locked(args, inst, marker, port)


def _start_locked(args: Args, inst: str, marker: str, port: Any) -> Args:
    stopped = stop_app(inst, float(args.get("stop_timeout") or 15.0))
    for f in ("app.pid", "app.exit", "app.pid.tmp", "app.exit.tmp"):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(inst, f))
    log_path = os.path.join(inst, "app.log")
    if os.path.exists(log_path):
        os.replace(log_path, log_path + ".1")
    argv = [str(a) for a in args["argv"]]
    meta = {"app": args.get("app"), "name": args["name"], "bundle": args.get("bundle"),
            "digest": args.get("digest"), "host": args.get("host"), "port": port, "argv": argv, "marker": marker,
            "env": {str(k): str(v) for k, v in (args.get("env") or {}).items()},
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = os.path.join(inst, "app.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, os.path.join(inst, "app.json"))
    env = dict(os.environ)
    env.pop("EDGEIFY_DEADLINE_S", None)  # the operation's deadline, not the app's
    env.update(meta["env"])
    secret = {str(k): str(v) for k, v in (args.get("secret_env") or {}).items()}  # never written to app.json
    if "secret_env" in args:  # kept, owner-only, so that `restart` starts it with the same token
        write_secret(inst, secret)
    env.update(secret)
    env["PYTHONUNBUFFERED"] = "1"
    with open(log_path, "ab") as log, open(os.devnull, "rb") as null:
        monitor = subprocess.Popen(["sh", "-c", MONITOR, "sh", *argv], cwd=inst, stdin=null, stdout=log,
                                   stderr=log, env=env, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + 10.0
    pid = None
    while pid is None and time.monotonic() < deadline:
        pid = read_int(os.path.join(inst, "app.pid"))
        if pid is None:
            if monitor.poll() is not None:
                break
            time.sleep(0.01)
    if pid is None:
        raise OpError("start_failed", f"the app did not start (monitor exit {monitor.poll()})",
                      log_tail=log_tail(log_path))
    return {"pid": pid, "stopped": stopped, "log": log_path, "instance": inst}


def _unit_quote(arg: str) -> str:
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def unit_text(args: Args, inst: str, system: bool) -> str:
    """A systemd unit that runs the app (restarts on failure and at boot; no restart for usage/bundle errors)."""
    env = {str(k): str(v) for k, v in (args.get("env") or {}).items()}
    env["PYTHONUNBUFFERED"] = "1"
    lines = ["[Unit]", f"Description=edgeify {args.get('app')} {args['name']} (bundle {str(args.get('digest'))[:12]})",
             "After=network-online.target", "Wants=network-online.target", "", "[Service]", "Type=simple",
             f"WorkingDirectory={inst}"]
    lines += [f"Environment={_unit_quote(f'{k}={v}')}" for k, v in sorted(env.items())]
    lines += [f"EnvironmentFile=-{os.path.join(inst, 'secret.env')}",
              "ExecStart=" + " ".join(_unit_quote(str(a)) for a in args["argv"]),
              "KillSignal=SIGTERM", f"TimeoutStopSec={int(float(args.get('stop_timeout') or 15))}",
              "Restart=on-failure", "RestartSec=2", "RestartPreventExitStatus=2 5 11 12",
              f"StandardOutput=append:{os.path.join(inst, 'app.log')}",
              f"StandardError=append:{os.path.join(inst, 'app.log')}", "", "[Install]",
              f"WantedBy={'multi-user.target' if system else 'default.target'}", ""]
    return "\n".join(lines)


def op_install_unit(args: Args) -> Args:
    """``--systemd``: write the app's unit (a system unit as root, else a user unit), then enable and (re)start
    it. Where systemd is not running, the unit is written and the error says so."""
    work = workdir(args)
    name = args["name"]
    inst = instance(work, name)
    os.makedirs(inst, exist_ok=True)
    system = os.geteuid() == 0
    unit_dir = str(args.get("unit_dir") or ("/etc/systemd/system" if system else
                                            os.path.expanduser("~/.config/systemd/user")))
    unit_name = f"edgeify-{name}.service"
    os.makedirs(unit_dir, exist_ok=True)
    write_secret(inst, {str(k): str(v) for k, v in (args.get("secret_env") or {}).items()})
    path = os.path.join(unit_dir, unit_name)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(unit_text(args, inst, system))
    os.replace(path + ".tmp", path)
    meta = {"app": args.get("app"), "name": name, "bundle": args.get("bundle"), "digest": args.get("digest"),
            "host": args.get("host"), "port": args.get("port"), "argv": [str(a) for a in args["argv"]],
            "marker": str(args.get("marker") or ""), "unit": path,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with open(os.path.join(inst, "app.json.tmp"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    os.replace(os.path.join(inst, "app.json.tmp"), os.path.join(inst, "app.json"))
    if not os.path.isdir("/run/systemd/system"):
        raise OpError("no_systemd", f"systemd is not running on this device; the unit was written to {path} "
                                    "but not enabled", unit=path)
    ctl = ["systemctl"] + ([] if system else ["--user"])
    stop_app(inst, float(args.get("stop_timeout") or 15.0))  # an app started without --systemd
    for cmd in ([*ctl, "daemon-reload"], [*ctl, "enable", unit_name], [*ctl, "restart", unit_name]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise OpError("systemctl", f"{' '.join(cmd)} failed: {proc.stderr.strip()[-300:]}", unit=path)
    pid = None
    deadline = time.monotonic() + 10.0
    while not pid and time.monotonic() < deadline:
        out = subprocess.run([*ctl, "show", "-p", "MainPID", "--value", unit_name], capture_output=True, text=True,
                             timeout=30).stdout.strip()
        pid = int(out) if out.isdigit() and int(out) > 0 else None
        time.sleep(0.1)
    if pid is None:
        raise OpError("start_failed", f"{unit_name} has no main process after start", unit=path,
                      log_tail=log_tail(os.path.join(inst, "app.log")))
    with open(os.path.join(inst, "app.pid"), "w", encoding="utf-8") as f:
        f.write(f"{pid}\n")
    return {"pid": pid, "unit": path, "scope": "system" if system else "user", "stopped": {},
            "log": os.path.join(inst, "app.log"), "instance": inst,
            "linger": None if system else "loginctl enable-linger (once) keeps a user unit running after logout "
                                           "and starts it at boot"}


def _get(url: str, timeout: float, headers: dict[str, str]) -> tuple[int | None, str]:
    import urllib.error
    import urllib.request

    try:
        req = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(65536).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(4096).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, str(getattr(exc, "reason", exc))


def op_health(args: Args) -> Args:
    """Poll ``args["url"]`` every ``interval`` s until it answers 200 with ``bundle_digest`` == ``digest``, the
    app exits, or ``deadline_s`` passes. Between polls the app's pid and the ready line in its log are watched,
    so an exit is reported at once and a fresh ready line triggers the next poll early."""
    inst = instance(workdir(args), args["name"])
    meta = read_json(os.path.join(inst, "app.json")) or {}
    pid = int(args["pid"])
    marker = meta.get("marker")
    log_path = os.path.join(inst, "app.log")
    url, digest = args["url"], args["digest"]
    headers = {"Authorization": f"Bearer {args['token']}"} if args.get("token") else {}
    interval = float(args.get("interval") or 0.5)
    t0 = time.monotonic()
    deadline = t0 + float(args["deadline_s"])
    last, polls, ready_seen = "no answer yet", 0, False
    while True:
        if not alive(pid, marker):
            code = exit_code(inst, 2.0)
            raise OpError("exited", f"the app exited with code {code} before it was healthy",
                          exit_code=code, seconds=round(time.monotonic() - t0, 3), log_tail=log_tail(log_path))
        polls += 1
        status, body = _get(url, max(0.2, min(2.0, deadline - time.monotonic())), headers)
        if status == 200:
            try:
                health = json.loads(body)
            except ValueError:
                health = None
            got = health.get("bundle_digest") if isinstance(health, dict) else None
            ready = _get(args["ready_url"], max(0.2, min(2.0, deadline - time.monotonic())), headers)[0] \
                if got == digest and args.get("ready_url") else 200
            if got == digest and ready == 200:
                return {"health": health, "seconds": round(time.monotonic() - t0, 3), "polls": polls, "pid": pid}
            if got == digest:
                last = f"{args['ready_url']} answers HTTP {ready}"
            else:
                last = f"HTTP 200 for bundle {str(got)[:12]}, not {digest[:12]} (another process answers on that port?)"
        elif status is not None:
            last = f"HTTP {status}: {body.strip()[:200]}"
        else:
            last = body[:200]
        if time.monotonic() >= deadline:
            raise OpError("timeout", "not healthy after {:g} s ({} polls of {}; last: {})".format(
                float(args["deadline_s"]), polls, url, last), last=last, log_tail=log_tail(log_path),
                seconds=round(time.monotonic() - t0, 3))
        next_poll = min(deadline, time.monotonic() + interval)
        while time.monotonic() < next_poll and alive(pid, marker):
            if not ready_seen and '"event": "ready"' in (read_text(log_path) or "")[-LOG_TAIL_BYTES:]:
                ready_seen = True
                break
            time.sleep(0.05)


def _health_url(meta: Args, path: str) -> str:
    host = str(meta.get("host") or "127.0.0.1")
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]", "[::]": "[::1]"}.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{meta.get('port')}{path}"


def op_restart(args: Args) -> Args:
    """Start the app ``name`` again from its app.json (argv, environment) and secret.env, on what its bundle's
    ``current`` is now (``digest``), then wait until it is healthy with that digest (and ``ready_path``, if
    given, answers 200). With ``unless_running: true`` an app that already runs ``digest`` is left alone."""
    work = workdir(args)
    name = args["name"]
    inst = instance(work, name)
    meta = read_json(os.path.join(inst, "app.json"))
    if not isinstance(meta, dict) or not meta.get("argv"):
        raise OpError("missing", f"no app named {name!r} on this device",
                      known=[d["name"] for d in _instances(work)])
    digest = str(args["digest"])
    pid = read_int(os.path.join(inst, "app.pid"))
    if args.get("unless_running") and meta.get("digest") == digest and alive(pid, meta.get("marker")):
        return {"restarted": False, "pid": pid, "digest": digest}
    if meta.get("unit"):
        raise OpError("unit", "app {!r} runs as the systemd unit {}: a rollout restarts detached apps only".format(
            name, meta["unit"]), unit=meta["unit"])
    secret = read_secret(inst)
    start = {**meta, "digest": digest, "secret_env": secret, "stop_timeout": args.get("stop_timeout") or 15.0}
    with file_lock(os.path.join(inst, ".lock"), what=f"app {name!r}"):
        started = _start_locked(start, inst, str(meta.get("marker") or ""), meta.get("port"))
    token = next(iter(secret.values()), None)
    health = op_health({"workdir": work, "name": name, "pid": started["pid"], "digest": digest, "token": token,
                        "url": _health_url(meta, str(args.get("health_path") or "/healthz")),
                        "ready_url": _health_url(meta, args["ready_path"]) if args.get("ready_path") else None,
                        "deadline_s": float(args.get("deadline_s") or 60.0),
                        "interval": float(args.get("interval") or 0.5)})
    return {"restarted": True, "pid": started["pid"], "digest": digest, "stopped": started["stopped"],
            "health": health.get("health"), "seconds": health.get("seconds"), "port": meta.get("port")}


def op_stop(args: Args) -> Args:
    work = workdir(args)
    inst = instance(work, args["name"])
    if not os.path.isfile(os.path.join(inst, "app.json")):
        raise OpError("missing", "no app named {!r} on this device".format(args["name"]),
                      known=[d["name"] for d in _instances(work)])
    with file_lock(os.path.join(inst, ".lock"), what=f"app {args['name']!r}"):
        out = stop_app(inst, float(args.get("timeout") or 15.0))
    out["name"] = args["name"]
    return out


def op_status(args: Args) -> Args:
    work = workdir(args)
    return {"workdir": work, "apps": _instances(work)}


OPS = {"probe": op_probe, "start": op_start, "install_unit": op_install_unit, "health": op_health,
       "restart": op_restart, "stop": op_stop, "status": op_status}


def main(argv: list[str] | None = None) -> int:
    return run_ops(OPS, argv, "python -m edgeify_runtime.device_apps")


if __name__ == "__main__":
    sys.exit(main())
