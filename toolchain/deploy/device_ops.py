"""Device-side file operations of the deployer, run as ``python3 -c <this file> OP`` with JSON on stdin.

Standard library only, Python 3.8+, no edgeify import: this file is sent to the device as the program text
(it is not installed there). It prints exactly one JSON object: ``{"ok": true, ...}`` or
``{"ok": false, "error": {"kind": ..., "message": ...}}``.

Layout of a device's work directory (``--workdir``, default ``~/.edgeify``)::

    WORKDIR/runtime/edgeify_runtime-<version>-<hash>.zip   the device-side runtime, cached by content hash
    WORKDIR/bundles/<name>/v-<digest12>-<stamp>/           installed versions (immutable once installed)
    WORKDIR/bundles/<name>/current -> v-...                what runs (switched with one atomic rename)
    WORKDIR/bundles/<name>/previous -> v-...               what ``edgeify rollback`` returns to
    WORKDIR/staging/<id>/                                  uploads in progress; never read by anything else

An upload goes to ``staging/<id>``; ``install`` verifies the sha256 of every file there, renames the
directory into ``bundles/<name>`` and only then switches ``current``. A cut or failed upload leaves only a
staging directory (removed by the next deploy once stale), never a half-installed version.
"""

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import time
import uuid

STALE_STAGING_S = 600
_KIND_BY_ERRNO = {errno.ENOSPC: "disk_full", errno.EDQUOT: "disk_full", errno.EROFS: "not_writable",
                  errno.EACCES: "not_writable", errno.EPERM: "not_writable"}


class OpError(Exception):
    def __init__(self, kind, message, **extra):
        Exception.__init__(self, message)
        self.kind = kind
        self.extra = extra


def _os_error(exc, what):
    kind = _KIND_BY_ERRNO.get(exc.errno, "io")
    return OpError(kind, f"{what}: {exc.strerror or exc}", errno=exc.errno)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _safe_rel(rel):
    parts = rel.split("/")
    if not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel or any(p in ("", ".", "..") for p in parts):
        raise OpError("unsafe", f"unsafe path in request: {rel!r}")
    return rel


def _safe_name(name):
    if not name or "/" in name or name.startswith(".") or name in ("current", "previous"):
        raise OpError("unsafe", f"unsafe bundle name: {name!r}")
    return name


def _workdir(args):
    return os.path.abspath(os.path.expanduser(args["workdir"]))


def _free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _matches(path, meta, hash_check=True):
    try:
        if os.path.getsize(path) != meta["size"]:
            return False
        return (not hash_check) or _sha256(path) == meta["sha256"]
    except OSError:
        return False


def _link_target(link):
    """The version directory a ``current``/``previous`` link points at (absolute), or None."""
    try:
        target = os.readlink(link)
    except OSError:
        return None
    path = os.path.join(os.path.dirname(link), target)
    return path if os.path.isdir(path) else None


def _digest_of(version_dir):
    try:
        with open(os.path.join(version_dir, "manifest.json"), encoding="utf-8") as f:
            return json.load(f).get("bundle_digest")
    except (OSError, ValueError, AttributeError):
        return None


def _swap_link(link, target_name):
    """Point ``link`` at ``target_name`` (a sibling) with one atomic rename."""
    tmp = f"{link}.tmp-{uuid.uuid4().hex[:8]}"
    os.symlink(target_name, tmp)
    os.rename(tmp, link)


def _mkdirs(path):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise _os_error(exc, f"cannot create {path}") from None


def _probe_writable(directory):
    probe = os.path.join(directory, f".write-probe-{uuid.uuid4().hex[:8]}")
    try:
        with open(probe, "wb") as f:
            f.write(b"x")
        os.unlink(probe)
    except OSError as exc:
        raise _os_error(exc, f"{directory} is not writable") from None


def _tree_bytes(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _gc_staging(staging_root):
    """Remove uploads interrupted more than STALE_STAGING_S ago; return the bytes held by younger ones."""
    now = time.time()
    try:
        entries = os.listdir(staging_root)
    except OSError:
        return 0
    held = 0
    for entry in entries:
        path = os.path.join(staging_root, entry)
        try:
            if now - os.lstat(path).st_mtime > STALE_STAGING_S:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
            else:
                held += _tree_bytes(path)
        except OSError:
            pass
    return held


def op_prepare(args):
    """State of the device for a deploy, and a fresh staging directory when something must be uploaded."""
    work = _workdir(args)
    staging_root = os.path.join(work, "staging")
    for d in (work, os.path.join(work, "runtime"), os.path.join(work, "bundles"), staging_root):
        _mkdirs(d)
    _probe_writable(staging_root)
    held = _gc_staging(staging_root)
    out = {"workdir": work, "free_bytes": _free_bytes(work), "staging_bytes": held,
           "python": sys.version.split()[0]}
    rt = args.get("runtime")
    if rt:
        path = os.path.join(work, "runtime", _safe_rel(rt["file"]))
        out["runtime_path"] = path
        out["runtime_ok"] = _matches(path, rt, True)
    files = args.get("files")
    if files is None:
        return out
    name = _safe_name(args["name"])
    base = os.path.join(work, "bundles", name)
    _mkdirs(base)
    current = _link_target(os.path.join(base, "current"))
    previous = _link_target(os.path.join(base, "previous"))
    out["current"] = current and {"dir": current, "digest": _digest_of(current)}
    out["previous"] = previous and {"dir": previous, "digest": _digest_of(previous)}
    hash_check = bool(args.get("hash_check", True))
    if current:
        bad = [rel for rel, meta in sorted(files.items())
               if not _matches(os.path.join(current, _safe_rel(rel)), meta, hash_check or rel == "manifest.json")]
        out["current"]["bad_files"] = bad
        if not bad:
            out["unchanged"] = True
            return out
    out["unchanged"] = False
    reuse = {}
    for rel, meta in sorted(files.items()):
        for version in (current, previous):
            if version:
                candidate = os.path.join(version, _safe_rel(rel))
                if _matches(candidate, meta, True):
                    reuse[rel] = candidate
                    break
    out["reuse"] = reuse
    staging = os.path.join(staging_root, f"{name}-{uuid.uuid4().hex[:12]}")
    _mkdirs(staging)
    for rel in files:
        parent = os.path.dirname(rel)
        if parent:
            _mkdirs(os.path.join(staging, parent))
    out["staging"] = staging
    return out


def _inside(path, root):
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path.startswith(root + os.sep)


def _install_runtime(work, rt):
    final = os.path.join(work, "runtime", _safe_rel(rt["file"]))
    tmp = rt["uploaded"]
    if not _inside(tmp, os.path.join(work, "runtime")):
        raise OpError("unsafe", f"runtime upload outside the work directory: {tmp!r}")
    if not _matches(tmp, rt, True):
        os.unlink(tmp)
        raise OpError("hash_mismatch", "the uploaded edgeify-runtime package failed its sha256 check",
                      bad=[rt["file"]])
    os.rename(tmp, final)


def op_install(args):
    """Verify a staging directory, install it as a new version, switch ``current``; runtime too."""
    t0 = time.monotonic()
    work = _workdir(args)
    timings = {}
    try:
        rt = args.get("runtime")
        if rt and rt.get("uploaded"):
            _install_runtime(work, rt)
        files = args.get("files")
        if files is None:
            return {"timings_ms": timings}
        name = _safe_name(args["name"])
        base = os.path.join(work, "bundles", name)
        staging = args["staging"]
        if not _inside(staging, os.path.join(work, "staging")):
            raise OpError("unsafe", f"staging directory outside the work directory: {staging!r}")
        for rel, src in sorted((args.get("reuse") or {}).items()):
            dst = os.path.join(staging, _safe_rel(rel))
            if not _inside(src, base):
                raise OpError("unsafe", f"reuse source outside the bundle directory: {src!r}")
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
        t1 = time.monotonic()
        timings["link_ms"] = round((t1 - t0) * 1000, 2)
        bad = []
        for rel, meta in sorted(files.items()):
            path = os.path.join(staging, _safe_rel(rel))
            if not os.path.isfile(path):
                bad.append(rel + ": missing")
            elif os.path.getsize(path) != meta["size"]:
                bad.append(f"{rel}: size {os.path.getsize(path)} != {meta['size']}")
            elif _sha256(path) != meta["sha256"]:
                bad.append(rel + ": sha256 mismatch")
        if bad:
            raise OpError("hash_mismatch", "files failed their sha256 check on the device: " + "; ".join(bad),
                          bad=bad)
        if args.get("fsync", True):
            for rel in files:
                if rel not in (args.get("reuse") or {}):
                    fd = os.open(os.path.join(staging, rel), os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
        t2 = time.monotonic()
        timings["verify_ms"] = round((t2 - t1) * 1000, 2)
        digest = args["digest"]
        version_name = "v-{}-{}".format(digest[:12], time.strftime("%Y%m%dT%H%M%S", time.gmtime()))
        version_name += "-" + uuid.uuid4().hex[:4]
        version = os.path.join(base, version_name)
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
        _fsync_dir(base)
        timings["install_ms"] = round((time.monotonic() - t2) * 1000, 2)
        return {"timings_ms": timings, "version": version, "digest": digest}
    except OpError:
        _discard(args, work)
        raise
    except OSError as exc:
        _discard(args, work)
        raise _os_error(exc, "install failed") from None


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _discard(args, work):
    staging = args.get("staging")
    if staging and _inside(staging, os.path.join(work, "staging")):
        shutil.rmtree(staging, ignore_errors=True)
    rt = args.get("runtime") or {}
    if rt.get("uploaded") and _inside(rt["uploaded"], os.path.join(work, "runtime")):
        with contextlib.suppress(OSError):
            os.unlink(rt["uploaded"])


def op_discard(args):
    """Remove a staging directory and an uploaded runtime temp file (after a failed upload)."""
    work = _workdir(args)
    _discard(args, work)
    out = {}
    with contextlib.suppress(OSError):
        out["free_bytes"] = _free_bytes(work)
    return out


def op_rollback(args):
    work = _workdir(args)
    name = _safe_name(args["name"])
    base = os.path.join(work, "bundles", name)
    current = _link_target(os.path.join(base, "current"))
    previous = _link_target(os.path.join(base, "previous"))
    if not current:
        raise OpError("missing", f"bundle {name!r} is not installed on this device")
    if not previous:
        raise OpError("missing", f"bundle {name!r} has no previous version on this device to roll back to")
    bad = _check_version(previous)
    if bad:
        raise OpError("hash_mismatch", "the previous version failed its sha256 check: " + "; ".join(bad), bad=bad)
    _swap_link(os.path.join(base, "current"), os.path.basename(previous))
    _swap_link(os.path.join(base, "previous"), os.path.basename(current))
    _fsync_dir(base)
    return {"current": {"dir": previous, "digest": _digest_of(previous)},
            "previous": {"dir": current, "digest": _digest_of(current)}}


def _check_version(version):
    try:
        with open(os.path.join(version, "manifest.json"), encoding="utf-8") as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"manifest.json: unreadable ({exc})"]
    return [rel for rel, meta in sorted(files.items()) if not _matches(os.path.join(version, _safe_rel(rel)), meta)]


def op_status(args):
    work = _workdir(args)
    bundles = {}
    base = os.path.join(work, "bundles")
    if os.path.isdir(base):
        for name in sorted(os.listdir(base)):
            entry = {}
            for which in ("current", "previous"):
                target = _link_target(os.path.join(base, name, which))
                entry[which] = target and {"dir": target, "digest": _digest_of(target)}
            bundles[name] = entry
    runtimes = sorted(os.listdir(os.path.join(work, "runtime"))) if os.path.isdir(os.path.join(work, "runtime")) \
        else []
    out = {"workdir": work, "bundles": bundles, "runtimes": [r for r in runtimes if not r.startswith(".")]}
    if os.path.isdir(work):
        out["free_bytes"] = _free_bytes(work)
    return out


OPS = {"prepare": op_prepare, "install": op_install, "discard": op_discard, "rollback": op_rollback,
       "status": op_status}


def main(argv):
    try:
        op = OPS[argv[1]]
        args = json.loads(sys.stdin.read())
        result = op(args)
        result["ok"] = True
        code = 0
    except OpError as exc:
        result = {"ok": False, "error": dict({"kind": exc.kind, "message": str(exc)}, **exc.extra)}
        code = 3
    except OSError as exc:
        err = _os_error(exc, "device operation failed")
        result = {"ok": False, "error": {"kind": err.kind, "message": str(err), "errno": exc.errno}}
        code = 3
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
