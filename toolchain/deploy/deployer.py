"""Deploy a bundle to a device: upload it with the device-side runtime, verify on the device, install atomically.

One deploy is four phases, each timed in the report:

1. **connect**: the transport's connection (SSH handshake, host key check, authentication);
2. **prepare**: the runtime zip is checked by the inline bootstrap (uploaded when the device does not have this
   version: ``runtime/edgeify_runtime-<version>-<hash>.zip``, see ``runtime_zip``); then
   ``python -m edgeify_runtime.device_files prepare`` from that zip creates the work directory, checks it is
   writable and has room, finds the files already there unchanged (sha256) and hard-links them into a fresh
   staging directory, under the bundle's lock on the device;
3. **transfer**: only the files that are missing or changed;
4. **verify + install**: ``device_files install`` checks the sha256 of every file, renames staging into
   ``bundles/<name>/v-...`` and switches ``current`` with one atomic rename, keeping the old version as
   ``previous`` (``edgeify rollback``), under the bundle's lock: concurrent deploys of one name install one
   after the other.

A failure before the final rename leaves the installed versions untouched; the deployer removes its staging
directory when the device is still reachable (the next deploy removes stale ones otherwise).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeify_runtime.engines import check_bundle_options
from edgeify_runtime.manifest import MANIFEST_NAME, REPORT_NAME, Manifest, sha256_file

from ..errors import BundleError, EdgeifyError, EngineMissingError, RemoteDiskError, TargetError, TransportLostError
from ..targets import load_registry
from .device_calls import device_op, op_error, space_error
from .inventory import Device
from .runtime_zip import RuntimeOnDevice, RuntimePackage, install_runtime, runtime_package
from .site import DeviceSite
from .site_exec import run_module
from .transport import ProgressCallback

BUNDLE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: room kept free on the device beyond the upload itself
SPACE_MARGIN_BYTES = 1 << 20
OP_TIMEOUT_S = 300.0
FILES_MODULE = "edgeify_runtime.device_files"

PhaseCallback = Callable[[str, dict[str, Any]], None]


def files_op(site: DeviceSite, runtime: RuntimeOnDevice, op: str, args: dict[str, Any], *,
             timeout: float = OP_TIMEOUT_S) -> dict[str, Any]:
    """One ``edgeify_runtime.device_files`` operation on the device."""
    return device_op(site, runtime, FILES_MODULE, op, args, timeout=timeout)


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
        check_manifest(manifest, root)  # what the device would refuse at load time, refused before it is sent
        links = [rel for rel in [*manifest.files, MANIFEST_NAME, REPORT_NAME] if _has_symlink(root, rel)]
        if links:
            raise BundleError(f"bundle {root} holds symbolic links ({', '.join(sorted(links))}); edgeify never "
                              "follows a link out of a bundle", hint="rebuild the bundle, or copy the real files in")
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


#: what an engine's registered name looks like (never a path)
ENGINE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def check_manifest(manifest: Manifest, where: Path) -> None:
    """Refuse (BundleError, exit 12) a manifest the device's runtime would refuse when it loads the bundle: an
    engine name that is not one, engine options off that engine's allow-list (the runtime's own check,
    ``edgeify_runtime.engines.base.check_bundle_options``), a malformed signature. The files table, names and
    digest were checked by ``Manifest.read``."""

    engine = manifest.engine.name
    if not ENGINE_NAME_RE.match(engine):
        raise BundleError(f"bundle {where}: {engine[:80]!r} is not an engine name (manifest engine.name)",
                          hint="rebuild the bundle with `edgeify build`; a manifest is data, never a path")
    try:
        check_bundle_options(engine, manifest.engine.options)
    except EngineMissingError as exc:
        raise BundleError(f"bundle {where}: engine name {engine!r} is not registered on this machine, so its "
                          f"options cannot be checked ({exc.message})",
                          hint="install the engine's edgeify-runtime plugin here too, or rebuild the bundle") from None
    except BundleError as exc:
        raise BundleError(f"bundle {where}: {exc.message}", hint=exc.hint) from None
    problems = signature_problems(manifest)
    if problems:
        raise BundleError(f"bundle {where}: malformed signature in its manifest: " + "; ".join(problems),
                          hint="rebuild the bundle with `edgeify build`")


def signature_problems(manifest: Manifest) -> list[str]:
    """What is wrong with the manifest's inputs/outputs: none or duplicate names, dtypes numpy does not know (or
    that are not numbers or bools), negative dimensions."""
    import numpy as np

    problems = []
    for kind, specs in (("inputs", manifest.inputs), ("outputs", manifest.outputs)):
        if not specs:
            problems.append(f"no {kind}")
        names = [t.name for t in specs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            problems.append(f"{kind} named twice: {dup}")
        for t in specs:
            label = f"{kind[:-1]} {t.name[:40]!r}"
            if not t.name:
                problems.append(f"an unnamed {kind[:-1]}")
            try:
                ok = np.dtype(t.dtype).kind in "biufc"
            except (TypeError, ValueError):
                ok = False
            if not ok:
                problems.append(f"{label}: dtype {t.dtype[:40]!r} is not a numeric dtype")
            if len(t.shape) > 32 or any((isinstance(d, int) and d < 0) or (isinstance(d, str) and not d)
                                        for d in t.shape):
                problems.append(f"{label}: shape {list(t.shape)[:8]} (dimensions are >= 0 or named)")
    return problems


def _has_symlink(root: Path, rel: str) -> bool:
    """Is ``root/rel``, or a directory on the way to it, a symbolic link?"""
    p = root
    for part in Path(rel).parts:
        p = p / part
        if p.is_symlink():
            return True
    return False


def bundle_name(bundle: LocalBundle, name: str | None) -> str:
    value = name or bundle.path.name
    if not BUNDLE_NAME_RE.match(value) or value in ("current", "previous"):
        raise BundleError(f"invalid bundle name {value!r} on the device",
                          hint="pass --name NAME (letters, digits, '.', '_', '-')")
    return value


def check_fit(manifest: Manifest, device: Device, *, force: bool = False) -> list[str]:
    """Refuse a bundle whose target or engine does not fit the device's target; the problems when forced."""

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
    """Make sure the device has this runtime version cached; returns it and ``{"workdir", "free_bytes",
    "runtime_path"}`` of the device."""
    on_device = install_runtime(site)
    return on_device.package, {"workdir": on_device.workdir, "free_bytes": on_device.free_bytes,
                               "runtime_path": on_device.path, "python": on_device.python}


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
        t = time.perf_counter()
        report.device_steps = run_device_steps(site, report)
        report.timings_s["device_steps"] = round(time.perf_counter() - t, 4)
        report.timings_s["total"] = round(report.timings_s.get("total", 0.0) + report.timings_s["device_steps"], 4)
        _phase(on_phase)("device_steps", {"steps": report.device_steps})
    return report


#: seconds allowed for a bundle's device steps (a TensorRT engine build takes minutes on an Orin Nano)
DEVICE_STEPS_TIMEOUT_S = 3600.0


def run_device_steps(site: DeviceSite, report: DeployReport, *, options: dict[str, Any] | None = None,
                     timeout: float = DEVICE_STEPS_TIMEOUT_S) -> list[dict[str, Any]]:
    """Run ``python -m edgeify_runtime.device_steps`` on the installed bundle; return what each step did.

    Raises the typed error the device reported: EngineMissingError (exit 11) when the device has no TensorRT,
    ConversionError (8) when the engine build failed, BundleError (12)."""

    remote_bundle = posixpath.join(report.workdir or site.workdir, "bundles", report.name, "current")
    args = ["--bundle", remote_bundle] + (["--options", json.dumps(options)] if options else [])
    reply = run_module(site, "edgeify_runtime.device_steps", *args, timeout=timeout, what="the device steps")
    return list(reply.get("steps") or [])


def _deploy_files(site: DeviceSite, bundle: str | os.PathLike[str], *, device: Device | None = None,
                  name: str | None = None, force: bool = False, hash_check: bool = True, check_space: bool = True,
                  on_progress: ProgressCallback | None = None, on_phase: PhaseCallback | None = None) -> DeployReport:
    t_start = time.perf_counter()
    local = LocalBundle.read(bundle)
    bname = bundle_name(local, name)
    warnings = check_fit(local.manifest, device, force=force) if device is not None else []
    timings: dict[str, float] = {}
    phase = _phase(on_phase)

    t = time.perf_counter()
    site.transport.connect()
    timings["connect"] = time.perf_counter() - t
    phase("connected", {})

    t = time.perf_counter()
    runtime = install_runtime(site, on_progress=on_progress, check_space=check_space)
    timings["runtime"] = time.perf_counter() - t
    t = time.perf_counter()
    prep = files_op(site, runtime, "prepare", {"name": bname, "files": local.files, "hash_check": hash_check})
    timings["prepare"] = time.perf_counter() - t
    rt = runtime.package
    report = DeployReport(device=site.name, name=bname, digest=local.digest, status="installed",
                          workdir=prep["workdir"], bundle_bytes=local.size, runtime=rt.file, warnings=warnings,
                          runtime_uploaded=runtime.uploaded, uploaded_bytes=rt.size if runtime.uploaded else 0)
    current = prep.get("current") or {}
    if prep.get("unchanged"):
        report.status = "unchanged"
        report.version = current.get("dir")
        report.reused_files = len(local.files)
        timings["total"] = time.perf_counter() - t_start
        report.timings_s = _round(timings)
        return report

    staging = prep["staging"]
    reuse: dict[str, str] = prep.get("reuse") or {}
    todo = [(str(local.path / rel), posixpath.join(staging, rel), meta["size"])
            for rel, meta in sorted(local.files.items()) if rel not in reuse]
    install_args: dict[str, Any] = {"name": bname, "files": local.files, "staging": staging, "reuse": reuse,
                                    "digest": local.digest}
    t = time.perf_counter()
    total = sum(size for _, _, size in todo)
    _upload(site, runtime, todo, prep, on_progress, total, check_space=check_space, discard_args=install_args)
    timings["transfer"] = time.perf_counter() - t
    phase("transferred", {"staging": staging, "files": [r for _, r, _ in todo]})

    t = time.perf_counter()
    try:
        inst = files_op(site, runtime, "install", install_args)
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
    report.uploaded_bytes += total
    report.reused_files = len(reuse)
    timings["total"] = time.perf_counter() - t_start
    report.timings_s = _round(timings)
    return report


def _phase(cb: PhaseCallback | None) -> PhaseCallback:
    return cb if cb is not None else (lambda name, info: None)


def _upload(site: DeviceSite, runtime: RuntimeOnDevice, todo: list[tuple[str, str, int]], prep: dict[str, Any],
            on_progress: ProgressCallback | None, total: int, *, check_space: bool = True,
            discard_args: dict[str, Any] | None = None) -> None:
    """Upload ``(local, remote, size)`` files; on failure remove what was staged and classify disk problems."""
    free = int(prep.get("free_bytes") or 0)
    if check_space and total + SPACE_MARGIN_BYTES > free:
        _discard(site, runtime, discard_args)
        raise space_error(site.name, prep["workdir"], total, free, int(prep.get("staging_bytes") or 0))
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
        raise  # the device is gone: its staging directory is removed by a later deploy
    except KeyboardInterrupt:
        _discard(site, runtime, discard_args)
        raise
    except EdgeifyError as exc:
        after = _discard(site, runtime, discard_args)
        if isinstance(exc, RemoteDiskError):
            raise
        # SFTP reports ENOSPC as a generic "Failure": after removing the partial upload, does it fit?
        if after is not None and after.get("free_bytes") is not None and \
                int(after["free_bytes"]) < total + SPACE_MARGIN_BYTES:
            raise RemoteDiskError(f"device {site.name}: the disk filled up during the upload ({exc.message}); "
                                  "nothing was installed and the partial upload was removed",
                                  hint="free space on the device, or point --workdir at a bigger disk") from None
        raise


def _discard(site: DeviceSite, runtime: RuntimeOnDevice, args: dict[str, Any] | None) -> dict[str, Any] | None:
    if not args:
        return None
    try:
        return files_op(site, runtime, "discard", {"staging": args.get("staging")}, timeout=60)
    except EdgeifyError:
        return None


def rollback(site: DeviceSite, name: str) -> dict[str, Any]:
    """Make the previous version current again (and the current one previous), under the bundle's lock."""
    if not BUNDLE_NAME_RE.match(name):
        raise BundleError(f"invalid bundle name {name!r}")
    return files_op(site, install_runtime(site), "rollback", {"name": name})


def status(site: DeviceSite) -> dict[str, Any]:
    return files_op(site, install_runtime(site), "status", {})


__all__ = ["DeployReport", "DeviceSite", "LocalBundle", "RuntimePackage", "bundle_name", "check_fit", "check_manifest",
           "deploy",
           "ensure_runtime", "files_op", "op_error", "rollback", "run_device_steps", "runtime_package", "status"]
