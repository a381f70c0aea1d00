"""Deploy a bundle to a device: upload it with the device-side runtime, verify on the device, install atomically.

One deploy is four phases, each timed in the report:

1. **connect**: the transport's connection (SSH handshake, host key check, authentication);
2. **prepare**: one device-side call that creates the work directory, checks it is writable and has room,
   finds the files already there unchanged (sha256) and makes a fresh staging directory;
3. **transfer**: only the files that are missing or changed, plus the runtime package when the device does
   not have this version cached (``runtime/edgeify_runtime-<version>-<hash>.zip``; Python imports it
   straight from the zip, so nothing is pip-installed on the device);
4. **verify + install**: one device-side call that hard-links the unchanged files into staging, checks the
   sha256 of every file, renames staging into ``bundles/<name>/v-...`` and switches ``current`` with one
   atomic rename, keeping the old version as ``previous`` (``edgeify rollback``).

A failure before the final rename leaves the installed versions untouched; the deployer removes its staging
directory when the device is still reachable (the next deploy removes stale ones otherwise).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import posixpath
import re
import shlex
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeify_runtime.manifest import MANIFEST_NAME, REPORT_NAME, Manifest, sha256_file

from ..errors import (
    BundleError,
    EdgeifyError,
    RemoteCommandError,
    RemoteDiskError,
    RemoteUnwritableError,
    TargetError,
    TransportLostError,
)
from .inventory import DEFAULT_PYTHON, DEFAULT_WORKDIR, Device
from .transport import ProgressCallback, Transport

#: device-side operations: this file's text is the program ``python3 -c`` runs on the device
_DEVICE_OPS = Path(__file__).with_name("device_ops.py")
BUNDLE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: room kept free on the device beyond the upload itself
SPACE_MARGIN_BYTES = 1 << 20
OP_TIMEOUT_S = 300.0

PhaseCallback = Callable[[str, dict[str, Any]], None]


@functools.lru_cache(maxsize=1)
def device_ops_source() -> str:
    return _DEVICE_OPS.read_text(encoding="utf-8")


# -- the runtime package -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RuntimePackage:
    """The device-side ``edgeify_runtime`` package as one deterministic zip (PYTHONPATH-importable)."""

    path: Path
    file: str
    sha256: str
    size: int
    version: str

    def meta(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "size": self.size}


def _runtime_sources() -> list[tuple[str, Path]]:
    import edgeify_runtime

    root = Path(edgeify_runtime.__file__).resolve().parent
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root.parent).as_posix()
        if p.is_file() and "__pycache__" not in p.parts and (p.suffix == ".py" or p.name == "py.typed"):
            out.append((rel, p))
    return out


@functools.lru_cache(maxsize=1)
def _runtime_zip() -> tuple[bytes, str, str]:
    import edgeify_runtime

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for rel, path in _runtime_sources():
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest(), edgeify_runtime.__version__


def runtime_package() -> RuntimePackage:
    """The installed ``edgeify_runtime`` as a zip (sources only, fixed timestamps: same sources, same bytes),
    written once to edgeify's cache dir."""
    from ..paths import cache_dir

    data, digest, version = _runtime_zip()
    name = f"edgeify_runtime-{version}-{digest[:16]}.zip"
    out = cache_dir() / "runtime" / name
    if not out.is_file() or out.stat().st_size != len(data):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{name}.{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(data)
        os.replace(tmp, out)
    return RuntimePackage(path=out, file=name, sha256=digest, size=len(data), version=version)


# -- a device reached through a transport --------------------------------------------------------------------------
class DeviceSite:
    """A device's Python and work directory behind a transport; runs the device-side operations."""

    def __init__(self, transport: Transport, *, name: str = "device", python: list[str] | None = None,
                 workdir: str | None = None) -> None:
        self.transport = transport
        self.name = name
        self.python = python or [DEFAULT_PYTHON]
        self.workdir = workdir or DEFAULT_WORKDIR

    @classmethod
    def for_device(cls, transport: Transport, device: Device) -> DeviceSite:
        return cls(transport, name=device.name, python=device.python_argv, workdir=device.remote_workdir)

    def op(self, op: str, args: dict[str, Any], *, timeout: float = OP_TIMEOUT_S) -> dict[str, Any]:
        payload = json.dumps({"workdir": self.workdir, **args})
        rc, out, err = self.transport.run([*self.python, "-c", device_ops_source(), op], input=payload,
                                          timeout=timeout)
        result = _last_json(out)
        if result is None:
            self._no_result(rc, err)
        if result.get("ok"):
            return result
        raise op_error(self.name, result.get("error") or {})

    def _no_result(self, rc: int, err: str) -> None:
        tail = " | ".join(err.strip().splitlines()[-4:])
        py = shlex.join(self.python)
        if rc in (126, 127):
            raise RemoteCommandError(f"device {self.name}: cannot run `{py}` ({tail or f'exit {rc}'})",
                                     hint="install Python 3 on the device, or tell edgeify where it is: "
                                          f"edgeify devices add {self.name} ... --python /path/to/python3 --replace")
        if "SyntaxError" in err:
            raise RemoteCommandError(f"device {self.name}: `{py}` is too old for edgeify ({tail})",
                                     hint="edgeify needs Python 3.8 or newer on the device (--python)")
        raise RemoteCommandError(f"device {self.name}: device-side operation failed (exit {rc}): {tail}")

    def python_env(self, runtime: RuntimePackage, prep: dict[str, Any]) -> dict[str, str]:
        return {"PYTHONPATH": prep.get("runtime_path") or posixpath.join(prep["workdir"], "runtime", runtime.file)}


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        return value if isinstance(value, dict) else None
    return None


def op_error(device: str, err: dict[str, Any]) -> EdgeifyError:
    kind = err.get("kind")
    msg = f"device {device}: {err.get('message', 'device-side operation failed')}"
    if kind == "disk_full":
        return RemoteDiskError(msg, hint="free space in the device's work directory, or point --workdir at a "
                                         "bigger disk")
    if kind == "not_writable":
        return RemoteUnwritableError(msg, hint="make the device's work directory writable for the login user, or "
                                         "choose another one with --workdir")
    if kind == "hash_mismatch":
        return BundleError(msg, hint="redeploy; if it happens again, check the device's storage")
    if kind == "missing":
        return BundleError(msg, hint="deploy the bundle first: edgeify deploy BUNDLE --device " + device)
    return RemoteCommandError(msg)


# -- local bundle ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalBundle:
    path: Path
    manifest: Manifest
    #: every file to put on the device (payload + manifest.json + report.md): rel -> {sha256, size}
    files: dict[str, dict[str, Any]]

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> LocalBundle:
        root = Path(path).resolve()
        if not root.is_dir():
            raise BundleError(f"{path}: not a directory", hint="pass the directory that `edgeify build` wrote")
        manifest = Manifest.read(root)  # checks names (no traversal) and the digest of the files table
        files: dict[str, dict[str, Any]] = {}
        problems = []
        for rel, meta in manifest.files.items():
            p = root / rel
            if not p.is_file():
                problems.append(f"{rel}: missing")
            elif p.stat().st_size != meta.get("size"):
                problems.append(f"{rel}: size {p.stat().st_size} != {meta.get('size')}")
            else:
                files[rel] = {"sha256": meta["sha256"], "size": meta["size"]}
        if problems:
            raise BundleError(f"bundle {root} is incomplete: " + "; ".join(problems), hint="rebuild it")
        for extra in (MANIFEST_NAME, REPORT_NAME):
            p = root / extra
            if p.is_file():
                files[extra] = {"sha256": sha256_file(p), "size": p.stat().st_size}
        return cls(path=root, manifest=manifest, files=files)

    @property
    def digest(self) -> str:
        return self.manifest.bundle_digest

    @property
    def size(self) -> int:
        return sum(f["size"] for f in self.files.values())

    def locally_corrupt(self, rels: list[str]) -> list[str]:
        return [r for r in rels if r in self.files and sha256_file(self.path / r) != self.files[r]["sha256"]]


def bundle_name(bundle: LocalBundle, name: str | None) -> str:
    value = name or bundle.path.name
    if not BUNDLE_NAME_RE.match(value) or value in ("current", "previous"):
        raise BundleError(f"invalid bundle name {value!r} on the device",
                          hint="pass --name NAME (letters, digits, '.', '_', '-')")
    return value


def check_fit(manifest: Manifest, device: Device, *, force: bool = False) -> list[str]:
    """Refuse a bundle whose target or engine does not fit the device's target; the problems when forced."""
    from ..targets import load_registry

    bundle_target = manifest.target
    engine = manifest.engine.name
    if bundle_target == device.target:  # built for exactly this target: its engine is one of the target's
        return []
    try:
        spec, _ = load_registry().resolve(device.target)
    except EdgeifyError:
        spec = None
    device_target = spec.name if spec else device.target
    problems = []
    if bundle_target != device_target:
        problems.append(f"the bundle was built for target {bundle_target!r}, device {device.name!r} is "
                        f"{device_target!r}" + (f" ({spec.arch})" if spec else ""))
    if spec is not None:
        engines = sorted({e.runtime for e in spec.engines.values()})
        if engine not in engines:
            problems.append(f"its engine {engine!r} is not one of {device_target}'s engines ({', '.join(engines)})")
    if problems and not force:
        raise TargetError(f"refusing to deploy to {device.name}: " + "; ".join(problems),
                          hint=f"build for the device (edgeify build MODEL --target {device_target}), or pass "
                               "--force to deploy anyway")
    return problems


# -- deploy -------------------------------------------------------------------------------------------------------
@dataclass
class DeployReport:
    device: str
    name: str
    digest: str
    status: str  # installed | unchanged | repaired
    version: str | None = None
    workdir: str | None = None
    uploaded_files: list[str] = field(default_factory=list)
    uploaded_bytes: int = 0
    reused_files: int = 0
    bundle_bytes: int = 0
    runtime_uploaded: bool = False
    runtime: str | None = None
    warnings: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    #: what the bundle's device steps did on the device (e.g. the TensorRT engine: built / reused / rebuilt)
    device_steps: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _round(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in d.items()}


def ensure_runtime(site: DeviceSite) -> tuple[RuntimePackage, dict[str, Any]]:
    """Make sure the device has this runtime version cached; returns it and the device's state."""
    rt = runtime_package()
    prep = site.op("prepare", {"runtime": rt.meta()})
    if not prep.get("runtime_ok"):
        uploaded = posixpath.join(prep["workdir"], "runtime", f".upload-{uuid.uuid4().hex[:12]}.zip")
        _upload(site, [(str(rt.path), uploaded, rt.size)], prep, None, rt.size)
        site.op("install", {"runtime": {**rt.meta(), "uploaded": uploaded}})
    return rt, prep


def deploy(site: DeviceSite, bundle: str | os.PathLike[str], *, device: Device | None = None,
           name: str | None = None, force: bool = False, hash_check: bool = True, check_space: bool = True,
           on_progress: ProgressCallback | None = None, on_phase: PhaseCallback | None = None,
           device_steps: bool = True) -> DeployReport:
    """Deploy ``bundle`` to ``site``; see the module docstring. ``hash_check=False`` decides "unchanged" on
    sizes and the manifest's sha256 only (the benchmark agent hashes every file before it runs).

    Then, unless ``device_steps=False``, run the bundle's device steps there (the manifest's ``device_steps``,
    e.g. building its TensorRT engine, or reusing it when the device fingerprint has not changed); what they did
    is in ``report.device_steps``."""
    report = _deploy_files(site, bundle, device=device, name=name, force=force, hash_check=hash_check,
                           check_space=check_space, on_progress=on_progress, on_phase=on_phase)
    if device_steps and LocalBundle.read(bundle).manifest.raw.get("device_steps"):
        from .remote_bench import run_device_steps_on_site

        t = time.perf_counter()
        report.device_steps = run_device_steps_on_site(site, report)
        report.timings_s["device_steps"] = round(time.perf_counter() - t, 4)
        report.timings_s["total"] = round(report.timings_s.get("total", 0.0) + report.timings_s["device_steps"], 4)
        _phase(on_phase)("device_steps", {"steps": report.device_steps})
    return report


def _deploy_files(site: DeviceSite, bundle: str | os.PathLike[str], *, device: Device | None = None,
                  name: str | None = None, force: bool = False, hash_check: bool = True, check_space: bool = True,
                  on_progress: ProgressCallback | None = None, on_phase: PhaseCallback | None = None) -> DeployReport:
    t_start = time.perf_counter()
    local = LocalBundle.read(bundle)
    bname = bundle_name(local, name)
    warnings = check_fit(local.manifest, device, force=force) if device is not None else []
    rt = runtime_package()
    timings: dict[str, float] = {}
    phase = _phase(on_phase)

    t = time.perf_counter()
    site.transport.connect()
    timings["connect"] = time.perf_counter() - t
    phase("connected", {})

    t = time.perf_counter()
    prep = site.op("prepare", {"name": bname, "files": local.files, "runtime": rt.meta(), "hash_check": hash_check})
    timings["prepare"] = time.perf_counter() - t
    report = DeployReport(device=site.name, name=bname, digest=local.digest, status="installed",
                          workdir=prep["workdir"], bundle_bytes=local.size, runtime=rt.file, warnings=warnings)
    runtime_missing = not prep.get("runtime_ok")
    current = prep.get("current") or {}
    if prep.get("unchanged") and not runtime_missing:
        report.status = "unchanged"
        report.version = current.get("dir")
        report.reused_files = len(local.files)
        timings["total"] = time.perf_counter() - t_start
        report.timings_s = _round(timings)
        return report
    if prep.get("unchanged"):  # only the runtime is new
        t = time.perf_counter()
        uploaded = posixpath.join(prep["workdir"], "runtime", f".upload-{uuid.uuid4().hex[:12]}.zip")
        _upload(site, [(str(rt.path), uploaded, rt.size)], prep, on_progress, rt.size, check_space=check_space)
        timings["transfer"] = time.perf_counter() - t
        t = time.perf_counter()
        site.op("install", {"runtime": {**rt.meta(), "uploaded": uploaded}})
        timings["install"] = time.perf_counter() - t
        report.status, report.version, report.runtime_uploaded = "unchanged", current.get("dir"), True
        report.uploaded_bytes, report.reused_files = rt.size, len(local.files)
        timings["total"] = time.perf_counter() - t_start
        report.timings_s = _round(timings)
        return report

    staging = prep["staging"]
    reuse: dict[str, str] = prep.get("reuse") or {}
    todo = [(str(local.path / rel), posixpath.join(staging, rel), meta["size"])
            for rel, meta in sorted(local.files.items()) if rel not in reuse]
    runtime_arg: dict[str, Any] | None = None
    if runtime_missing:
        uploaded = posixpath.join(prep["workdir"], "runtime", f".upload-{uuid.uuid4().hex[:12]}.zip")
        todo.insert(0, (str(rt.path), uploaded, rt.size))
        runtime_arg = {**rt.meta(), "uploaded": uploaded}
    install_args: dict[str, Any] = {"name": bname, "files": local.files, "staging": staging, "reuse": reuse,
                                    "digest": local.digest, "runtime": runtime_arg}
    t = time.perf_counter()
    total = sum(size for _, _, size in todo)
    _upload(site, todo, prep, on_progress, total, check_space=check_space, discard_args=install_args)
    timings["transfer"] = time.perf_counter() - t
    phase("transferred", {"staging": staging, "files": [r for _, r, _ in todo]})

    t = time.perf_counter()
    try:
        inst = site.op("install", install_args)
    except BundleError as exc:  # device-side sha256 mismatch: tell a corrupt local bundle from a bad transfer
        bad = [r for r in local.files if r in str(exc)]
        corrupt = local.locally_corrupt(bad)
        if corrupt:
            raise BundleError(f"the local bundle {local.path} is corrupted ({', '.join(corrupt)} no longer match "
                              "their manifest); nothing was installed", hint="rebuild the bundle") from None
        raise BundleError(f"{exc.message}; nothing was installed, the device keeps its current version",
                          hint="redeploy (the transfer or the device's storage corrupted the file)") from None
    wall = time.perf_counter() - t
    dev_ms = inst.get("timings_ms") or {}
    verify = (dev_ms.get("link_ms", 0) + dev_ms.get("verify_ms", 0)) / 1000
    timings["verify"] = verify
    timings["install"] = max(0.0, wall - verify)
    phase("installed", {"version": inst.get("version")})
    report.version = inst.get("version")
    report.status = "repaired" if current.get("digest") == local.digest else "installed"
    report.uploaded_files = [r for r in sorted(local.files) if r not in reuse]
    report.uploaded_bytes = total
    report.reused_files = len(reuse)
    report.runtime_uploaded = runtime_missing
    timings["total"] = time.perf_counter() - t_start
    report.timings_s = _round(timings)
    return report


def _phase(cb: PhaseCallback | None) -> PhaseCallback:
    return cb if cb is not None else (lambda name, info: None)


def _upload(site: DeviceSite, todo: list[tuple[str, str, int]], prep: dict[str, Any],
            on_progress: ProgressCallback | None, total: int, *, check_space: bool = True,
            discard_args: dict[str, Any] | None = None) -> None:
    """Upload ``(local, remote, size)`` files; on failure remove what was staged and classify disk problems."""
    free = int(prep.get("free_bytes") or 0)
    if check_space and total + SPACE_MARGIN_BYTES > free:
        _discard(site, discard_args)
        held = int(prep.get("staging_bytes") or 0)
        note = (f"; {_mb(held)} of it is held by interrupted uploads in {prep['workdir']}/staging, removed "
                "automatically 10 minutes after they stopped") if held else ""
        raise RemoteDiskError(
            f"device {site.name}: not enough space in {prep['workdir']}: the upload needs {_mb(total)} "
            f"(+{_mb(SPACE_MARGIN_BYTES)} margin), {_mb(free)} is free; nothing was changed{note}",
            hint="free space on the device, or point --workdir at a bigger disk")
    done = 0
    try:
        for local, remote, size in todo:
            base = done

            def cb(n: int, _t: int, base: int = base) -> None:
                if on_progress:
                    on_progress(base + n, total)

            site.transport.put(local, remote, callback=cb)
            done += size
    except TransportLostError:
        raise  # the device is gone: its staging directory is removed by the next deploy
    except KeyboardInterrupt:
        _discard(site, discard_args)
        raise
    except EdgeifyError as exc:
        after = _discard(site, discard_args)
        if isinstance(exc, RemoteDiskError):
            raise
        # SFTP reports ENOSPC as a generic "Failure": after removing the partial upload, does it fit?
        if after is not None and after.get("free_bytes") is not None and \
                int(after["free_bytes"]) < total + SPACE_MARGIN_BYTES:
            raise RemoteDiskError(f"device {site.name}: the disk filled up during the upload ({exc.message}); "
                                  "nothing was installed and the partial upload was removed",
                                  hint="free space on the device, or point --workdir at a bigger disk") from None
        raise


def _discard(site: DeviceSite, args: dict[str, Any] | None) -> dict[str, Any] | None:
    if not args:
        return None
    try:
        return site.op("discard", {"staging": args.get("staging"), "runtime": args.get("runtime")}, timeout=60)
    except EdgeifyError:
        return None


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def rollback(site: DeviceSite, name: str) -> dict[str, Any]:
    """Make the previous version current again (and the current one previous)."""
    if not BUNDLE_NAME_RE.match(name):
        raise BundleError(f"invalid bundle name {name!r}")
    return site.op("rollback", {"name": name})


def status(site: DeviceSite) -> dict[str, Any]:
    return site.op("status", {})


__all__ = ["DeployReport", "DeviceSite", "LocalBundle", "RuntimePackage", "bundle_name", "check_fit", "deploy",
           "ensure_runtime", "rollback", "runtime_package", "status"]
