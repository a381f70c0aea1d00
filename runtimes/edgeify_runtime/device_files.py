"""Device-side file operations of the deployer: ``python -m edgeify_runtime.device_files OP`` with a JSON
request on stdin (``prepare``, ``install``, ``discard``, ``rollback``, ``status``); one JSON reply on stdout.

Layout of a device's work directory (``--workdir``, default ``~/.edgeify``)::

    WORKDIR/runtime/edgeify_runtime-<version>-<hash>.zip   the device-side runtime, cached by content hash
    WORKDIR/bundles/<name>/v-<digest12>-<stamp>/           installed versions (immutable once installed)
    WORKDIR/bundles/<name>/current -> v-...                what runs (switched with one atomic rename)
    WORKDIR/bundles/<name>/previous -> v-...               what ``edgeify rollback`` returns to
    WORKDIR/bundles/<name>/sha256-<digest> -> v-...        that exact version while it is kept (k8s mounts it)
    WORKDIR/locks/bundle-<name>.lock                       flock: one prepare/install/rollback at a time
    WORKDIR/staging/<id>/                                  uploads in progress; never read by anything else
    WORKDIR/staging/<id>.lock                              flock held while that upload is installed

``prepare`` (under the bundle's lock) decides what must be sent and hard-links the files the device already
has into a fresh staging directory, so a version removed later by another deploy cannot take them away;
``install`` (under the lock) verifies the sha256 of every staged file, renames the directory into
``bundles/<name>`` and only then switches ``current``. Two deploys under one name at once run their installs
one after the other: ``current`` always names a complete, verified version. ``bundles/<name>`` is created by
the first install that succeeds: a refused deploy leaves nothing there (its lock lives in ``locks/``).
A cut or failed upload leaves only
a staging directory; it is removed by a later deploy once nothing in it changed for ``STALE_STAGING_S``
(an upload in progress keeps writing its files, which is its heartbeat) and no install holds its lock.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import uuid
from typing import Any

from .device_io import (
    Args,
    OpError,
    file_lock,
    fsync_dir,
    inside,
    matches,
    mkdirs,
    os_error,
    read_json,
    run_ops,
    safe_rel,
    try_lock,
    workdir,
)
from .manifest import sha256_file

STALE_STAGING_S = 600


#: a link per installed version named by the bundle digest (what `edgeify apps manifests` mounts)
DIGEST_LINK_PREFIX = "sha256-"

def safe_name(name: Any) -> str:
    if not isinstance(name, str) or not name or "/" in name or "\x00" in name or name.startswith(".") or \
            name in ("current", "previous"):
        raise OpError("unsafe", f"unsafe bundle name: {name!r}")
    return name


def _free_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _link_target(link: str) -> str | None:
    """The version directory a ``current``/``previous`` link points at (absolute), or None."""
    try:
        target = os.readlink(link)
    except OSError:
        return None
    path = os.path.join(os.path.dirname(link), target)
    return path if os.path.isdir(path) else None


def _digest_of(version_dir: str) -> Any:
    doc = read_json(os.path.join(version_dir, "manifest.json"))
    return doc.get("bundle_digest") if isinstance(doc, dict) else None


def _swap_link(link: str, target_name: str) -> None:
    """Point ``link`` at ``target_name`` (a sibling) with one atomic rename."""
    tmp = f"{link}.tmp-{uuid.uuid4().hex[:8]}"
    os.symlink(target_name, tmp)
    os.rename(tmp, link)


def _probe_writable(directory: str) -> None:
    probe = os.path.join(directory, f".write-probe-{uuid.uuid4().hex[:8]}")
    try:
        with open(probe, "wb") as f:
            f.write(b"x")
        os.unlink(probe)
    except OSError as exc:
        raise os_error(exc, f"{directory} is not writable") from None


def _tree_stat(path: str) -> tuple[int, float]:
    """(bytes, newest mtime) of everything under ``path`` (itself included)."""
    total, newest = 0, os.lstat(path).st_mtime
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, name))
                newest = max(newest, st.st_mtime)
                if name in files:
                    total += st.st_size
    return total, newest


def _gc_staging(staging_root: str) -> int:
    """Remove interrupted uploads (nothing written for STALE_STAGING_S, no install holding their lock);
    return the bytes held by the others."""
    now = time.time()
    try:
        entries = os.listdir(staging_root)
    except OSError:
        return 0
    held = 0
    for entry in entries:
        path = os.path.join(staging_root, entry)
        if entry.endswith(".lock"):
            if not os.path.exists(path[:-len(".lock")]):
                with contextlib.suppress(OSError):
                    if now - os.lstat(path).st_mtime > STALE_STAGING_S:
                        os.unlink(path)
            continue
        try:
            size, newest = _tree_stat(path) if os.path.isdir(path) and not os.path.islink(path) else \
                (os.lstat(path).st_size, os.lstat(path).st_mtime)
        except OSError:
            continue
        if now - newest <= STALE_STAGING_S:
            held += size
            continue
        fd = try_lock(path + ".lock")
        if fd is None:  # an install is working on it
            held += size
            continue
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        finally:
            os.close(fd)
    return held


def _bundle_lock(base: str) -> Any:
    """The bundle's lock, outside ``bundles/<name>`` (so that a refused first deploy leaves no directory there)."""
    bundles = os.path.dirname(base)
    locks = os.path.join(os.path.dirname(bundles), "locks")
    mkdirs(locks)
    return file_lock(os.path.join(locks, f"bundle-{os.path.basename(base)}.lock"),
                     what=f"bundle {os.path.basename(base)!r}")


def op_prepare(args: Args) -> Args:
    """State of the device for a deploy; when something must be uploaded, a fresh staging directory that
    already holds (hard links of) the files the device has."""
    work = workdir(args)
    staging_root = os.path.join(work, "staging")
    for d in (work, os.path.join(work, "bundles"), staging_root):
        mkdirs(d)
    _probe_writable(staging_root)
    held = _gc_staging(staging_root)
    out: Args = {"workdir": work, "free_bytes": _free_bytes(work), "staging_bytes": held,
                 "python": sys.version.split()[0]}
    files = args.get("files")
    if files is None:
        return out
    name = safe_name(args.get("name"))
    base = os.path.join(work, "bundles", name)
    with _bundle_lock(base):
        return _prepare_locked(args, files, name, base, staging_root, out)


def _prepare_locked(args: Args, files: Args, name: str, base: str, staging_root: str, out: Args) -> Args:
    current = _link_target(os.path.join(base, "current"))
    previous = _link_target(os.path.join(base, "previous"))
    out["current"] = current and {"dir": current, "digest": _digest_of(current)}
    out["previous"] = previous and {"dir": previous, "digest": _digest_of(previous)}
    hash_check = bool(args.get("hash_check", True))
    if current:
        bad = [rel for rel, meta in sorted(files.items())
               if not matches(os.path.join(current, safe_rel(rel)), meta, hash_check or rel == "manifest.json")]
        out["current"]["bad_files"] = bad
        if not bad:
            out["unchanged"] = True
            return out
    out["unchanged"] = False
    staging = os.path.join(staging_root, f"{name}-{uuid.uuid4().hex[:12]}")
    mkdirs(staging)
    reuse = {}
    for rel, meta in sorted(files.items()):
        parent = os.path.dirname(safe_rel(rel))
        if parent:
            mkdirs(os.path.join(staging, parent))
        for version in (current, previous):
            candidate = version and os.path.join(version, rel)
            if candidate and matches(candidate, meta, True):
                try:
                    os.link(candidate, os.path.join(staging, rel))
                except OSError:
                    shutil.copyfile(candidate, os.path.join(staging, rel))
                reuse[rel] = candidate
                break
    out["reuse"] = reuse
    out["staging"] = staging
    return out


def op_install(args: Args) -> Args:
    """Verify a staging directory, install it as a new version, switch ``current``."""
    work = workdir(args)
    try:
        name = safe_name(args.get("name"))
        base = os.path.join(work, "bundles", name)
        staging = str(args["staging"])
        if not inside(staging, os.path.join(work, "staging")) or os.path.islink(staging):
            raise OpError("unsafe", f"staging directory outside the work directory: {staging!r}")
        fd = try_lock(staging + ".lock")  # a GC of another deploy must not take it from under us
        if fd is None:
            raise OpError("busy", f"staging directory {staging} is being installed by another operation")
        try:
            if not os.path.isdir(staging):
                raise OpError("missing", f"the upload in {staging} is gone (removed as stale?); nothing was "
                                         "installed", bad=[])
            with _bundle_lock(base):
                return _install_locked(args, name, base, staging)
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(staging + ".lock")
    except OpError:
        _discard(args, work)
        raise
    except OSError as exc:
        _discard(args, work)
        raise os_error(exc, "install failed") from None


def _install_locked(args: Args, name: str, base: str, staging: str) -> Args:
    t0 = time.monotonic()
    files = args["files"]
    bad = []
    for rel, meta in sorted(files.items()):
        path = os.path.join(staging, safe_rel(rel))
        if os.path.islink(path) or not os.path.isfile(path):
            bad.append(rel + ": missing")
        elif os.path.getsize(path) != meta["size"]:
            bad.append(f"{rel}: size {os.path.getsize(path)} != {meta['size']}")
        elif sha256_file(path) != meta["sha256"]:
            bad.append(rel + ": sha256 mismatch")
    if bad:
        raise OpError("hash_mismatch", "files failed their sha256 check on the device: " + "; ".join(bad), bad=bad)
    reused = args.get("reuse") or {}
    if args.get("fsync", True):
        for rel in files:
            if rel not in reused:
                fd = os.open(os.path.join(staging, rel), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
    t1 = time.monotonic()
    digest = str(args["digest"])
    version_name = "v-{}-{}-{}".format(digest[:12], time.strftime("%Y%m%dT%H%M%S", time.gmtime()),
                                       uuid.uuid4().hex[:4])
    version = os.path.join(base, version_name)
    mkdirs(base)
    os.rename(staging, version)
    current_link = os.path.join(base, "current")
    old = _link_target(current_link)
    _swap_link(current_link, version_name)
    if old and _digest_of(old) != digest:  # a repair of the same digest keeps the older previous
        _swap_link(os.path.join(base, "previous"), os.path.basename(old))
    keep = {version_name}
    prev = _link_target(os.path.join(base, "previous"))
    if prev:
        keep.add(os.path.basename(prev))
    for entry in os.listdir(base):
        path = os.path.join(base, entry)
        if entry.startswith("v-") and entry not in keep and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
    # sha256-<digest> -> v-...: a path that always holds that exact bundle (Kubernetes manifests mount it, so a
    # restarted pod never picks up another version); links to versions that are gone are removed
    _swap_link(os.path.join(base, DIGEST_LINK_PREFIX + digest), version_name)
    for entry in os.listdir(base):
        path = os.path.join(base, entry)
        if entry.startswith(DIGEST_LINK_PREFIX) and os.path.islink(path) and not os.path.exists(path):
            with contextlib.suppress(OSError):
                os.unlink(path)
    fsync_dir(base)
    timings = {"link_ms": 0.0, "verify_ms": round((t1 - t0) * 1000, 2),
               "install_ms": round((time.monotonic() - t1) * 1000, 2)}
    return {"timings_ms": timings, "version": version, "digest": digest}


def _discard(args: Args, work: str) -> None:
    staging = args.get("staging")
    if staging and inside(staging, os.path.join(work, "staging")):
        shutil.rmtree(staging, ignore_errors=True)


def op_discard(args: Args) -> Args:
    """Remove a staging directory (after a failed upload)."""
    work = workdir(args)
    _discard(args, work)
    out: Args = {}
    with contextlib.suppress(OSError):
        out["free_bytes"] = _free_bytes(work)
    return out


def _check_version(version: str) -> list[str]:
    doc = read_json(os.path.join(version, "manifest.json"))
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, dict):
        return ["manifest.json: unreadable"]
    return [rel for rel, meta in sorted(files.items()) if not matches(os.path.join(version, safe_rel(rel)), meta)]


def op_rollback(args: Args) -> Args:
    work = workdir(args)
    name = safe_name(args.get("name"))
    base = os.path.join(work, "bundles", name)
    if not os.path.isdir(base):
        raise OpError("missing", f"bundle {name!r} is not installed on this device")
    with _bundle_lock(base):
        current = _link_target(os.path.join(base, "current"))
        previous = _link_target(os.path.join(base, "previous"))
        if not current:
            raise OpError("missing", f"bundle {name!r} is not installed on this device")
        if not previous:
            raise OpError("missing", f"bundle {name!r} has no previous version on this device to roll back to")
        bad = _check_version(previous)
        if bad:
            raise OpError("hash_mismatch", "the previous version failed its sha256 check: " + "; ".join(bad),
                          bad=bad)
        _swap_link(os.path.join(base, "current"), os.path.basename(previous))
        _swap_link(os.path.join(base, "previous"), os.path.basename(current))
        fsync_dir(base)
    return {"current": {"dir": previous, "digest": _digest_of(previous)},
            "previous": {"dir": current, "digest": _digest_of(current)}}


def op_status(args: Args) -> Args:
    work = workdir(args)
    bundles = {}
    base = os.path.join(work, "bundles")
    if os.path.isdir(base):
        for name in sorted(os.listdir(base)):
            entry = {}
            for which in ("current", "previous"):
                target = _link_target(os.path.join(base, name, which))
                entry[which] = target and {"dir": target, "digest": _digest_of(target)}
            if any(entry.values()) or _has_versions(os.path.join(base, name)):
                bundles[name] = entry  # (nothing installed: an empty directory left by an older runtime's lock)
    rt_dir = os.path.join(work, "runtime")
    runtimes = sorted(os.listdir(rt_dir)) if os.path.isdir(rt_dir) else []
    out: Args = {"workdir": work, "bundles": bundles, "runtimes": [r for r in runtimes if not r.startswith(".")]}
    if os.path.isdir(work):
        out["free_bytes"] = _free_bytes(work)
    return out


def _has_versions(path: str) -> bool:
    try:
        return any(e.startswith("v-") for e in os.listdir(path))
    except OSError:
        return False


OPS = {"prepare": op_prepare, "install": op_install, "discard": op_discard, "rollback": op_rollback,
       "status": op_status}


def main(argv: list[str] | None = None) -> int:
    return run_ops(OPS, argv, "python -m edgeify_runtime.device_files")


if __name__ == "__main__":
    sys.exit(main())
