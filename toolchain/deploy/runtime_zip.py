"""The device-side runtime as one zip, and the one inline program edgeify runs on a device: the bootstrap that
checks and installs that zip. Everything else runs from the zip (``python -m edgeify_runtime.<module>``).

``WORKDIR/runtime/edgeify_runtime-<version>-<hash16>.zip`` is cached by content hash; Python imports it
straight from the zip (``PYTHONPATH``), so nothing is pip-installed on the device. The zip also carries the
device half of every installed engine plugin (its ``edgeify_runtime.engines`` adapter package and entry points).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import posixpath
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import edgeify_runtime
from edgeify_runtime.engines import GROUP, entry_points
from edgeify_runtime.envelope import parse_reply

from ..errors import EdgeifyError
from ..paths import cache_dir
from .device_calls import op_error, space_error
from .site_exec import no_reply_error
from .transport import ProgressCallback, Transport

#: the bootstrap (standard library, Python 3.8+): ``check`` says whether the zip is there (size + sha256) and
#: where to upload it; ``install`` verifies an upload and renames it into place. One JSON line on stdout.
BOOTSTRAP = r'''
import errno, hashlib, json, os, sys, uuid
def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()
def ok(p, a):
    try:
        return not os.path.islink(p) and os.path.getsize(p) == a["size"] and sha(p) == a["sha256"]
    except OSError:
        return False
def main(op, a):
    work = os.path.abspath(os.path.expanduser(a["workdir"]))
    rt = os.path.join(work, "runtime")
    name = a["file"]
    if not name or "/" in name or name.startswith("."):
        raise ValueError("unsafe runtime file name %r" % name)
    final = os.path.join(rt, name)
    if op == "check":
        os.makedirs(rt, exist_ok=True)
        st = os.statvfs(work)
        return {"workdir": work, "runtime_path": final, "runtime_ok": ok(final, a),
                "upload": os.path.join(rt, ".upload-%s.zip" % uuid.uuid4().hex[:12]),
                "free_bytes": st.f_bavail * st.f_frsize, "python": sys.version.split()[0]}
    up = a["uploaded"]
    if os.path.dirname(os.path.abspath(up)) != rt:
        raise ValueError("runtime upload outside %s: %r" % (rt, up))
    if op == "discard":
        if os.path.exists(up):
            os.unlink(up)
        return {}
    if not ok(up, a):
        os.unlink(up)
        return {"ok": False, "error": {"kind": "hash_mismatch", "bad": [name],
                "message": "the uploaded edgeify-runtime package failed its sha256 check"}}
    os.replace(up, final)
    return {"runtime_path": final}
try:
    out = main(sys.argv[1], json.loads(sys.stdin.read()))
    out.setdefault("ok", True)
except OSError as e:
    kind = {errno.ENOSPC: "disk_full", errno.EDQUOT: "disk_full", errno.EROFS: "not_writable",
            errno.EACCES: "not_writable", errno.EPERM: "not_writable"}.get(e.errno, "io")
    out = {"ok": False, "error": {"kind": kind, "message": "runtime bootstrap: %s" % e, "errno": e.errno}}
except (ValueError, KeyError) as e:
    out = {"ok": False, "error": {"kind": "unsafe", "message": "runtime bootstrap: %s" % e}}
sys.stdout.write(json.dumps(out) + "\n")
'''


class _Site(Protocol):
    transport: Transport
    name: str
    python: list[str]
    workdir: str
    runtime_path: str | None
    is_local: bool


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


@dataclass(frozen=True)
class RuntimeOnDevice:
    """The runtime zip installed on a device: where it is, and whether this call uploaded it."""

    package: RuntimePackage
    path: str
    workdir: str
    uploaded: bool
    free_bytes: int
    python: str

    def env(self) -> dict[str, str]:
        env = {"PYTHONPATH": self.path}
        if os.environ.get("EDGEIFY_DEBUG") == "1":
            env["EDGEIFY_DEBUG"] = "1"
        return env


def _runtime_sources() -> list[tuple[str, Path]]:
    root = Path(edgeify_runtime.__file__).resolve().parent
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root.parent).as_posix()
        if p.is_file() and "__pycache__" not in p.parts and (p.suffix == ".py" or p.name == "py.typed"):
            out.append((rel, p))
    return out


def _runtime_dist_info(version: str) -> list[tuple[str, str]]:
    """The runtime's dist-info (METADATA, entry_points.txt) for the zip: on the device, importlib.metadata finds
    the engine adapters' entry points (group ``edgeify_runtime.engines``) in the zip as in an installed package."""
    from importlib import metadata

    try:
        eps = metadata.distribution("edgeify-runtime").read_text("entry_points.txt") or ""
    except metadata.PackageNotFoundError:
        eps = ""
    base = f"edgeify_runtime-{version}.dist-info"
    return [(f"{base}/METADATA", f"Metadata-Version: 2.1\nName: edgeify-runtime\nVersion: {version}\n"),
            (f"{base}/entry_points.txt", eps)]


def plugin_device_parts() -> tuple[list[tuple[str, Path]], list[tuple[str, str]]]:
    """The device halves of installed engine plugins, for the zip: every distribution other than edgeify-runtime
    that registers an adapter in ``edgeify_runtime.engines`` contributes the top-level package its entry points
    name (its ``.py`` files: a device half is pure Python over edgeify_runtime and its engine's own wheel) and a
    dist-info with those entry points, so the device's engine registry finds the plugin in the zip as on the host.
    The engine's own wheel is the device's to install, like every built-in engine's."""
    from importlib import metadata, util

    by_dist: dict[str, list[tuple[str, str]]] = {}
    for name, value, dist in entry_points(GROUP):
        if dist.lower().replace("_", "-") != "edgeify-runtime":
            by_dist.setdefault(dist, []).append((name, value))
    files: list[tuple[str, Path]] = []
    texts: list[tuple[str, str]] = []
    for dist, eps in sorted(by_dist.items()):
        for top in sorted({value.partition(":")[0].strip().split(".")[0] for _, value in eps} - {"edgeify_runtime"}):
            spec = util.find_spec(top)
            if spec is None:
                continue
            if spec.submodule_search_locations:
                root = Path(next(iter(spec.submodule_search_locations))).resolve()
                files += [(f"{top}/{p.relative_to(root).as_posix()}", p) for p in sorted(root.rglob("*.py"))
                          if "__pycache__" not in p.parts]
            elif spec.origin and spec.origin.endswith(".py"):
                files.append((f"{top}.py", Path(spec.origin)))
        version = metadata.version(dist)
        base = f"{dist.replace('-', '_')}-{version}.dist-info"
        texts += [(f"{base}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"),
                  (f"{base}/entry_points.txt", f"[{GROUP}]\n" + "".join(f"{n} = {v}\n" for n, v in eps))]
    return files, texts


@functools.lru_cache(maxsize=1)
def _runtime_zip() -> tuple[bytes, str, str]:
    plugin_files, plugin_texts = plugin_device_parts()
    seen: set[str] = set()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for rel, path in [*_runtime_sources(), *plugin_files]:
            if rel in seen:  # a plugin never overwrites the runtime's own modules
                continue
            seen.add(rel)
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
        for rel, text in [*_runtime_dist_info(edgeify_runtime.__version__), *plugin_texts]:
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, text.encode("utf-8"))
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest(), edgeify_runtime.__version__


def runtime_package() -> RuntimePackage:
    """The installed ``edgeify_runtime`` as a zip (sources only, fixed timestamps: same sources, same bytes) with
    the device halves of installed engine plugins (``plugin_device_parts``), written once to edgeify's cache dir."""

    data, digest, version = _runtime_zip()
    name = f"edgeify_runtime-{version}-{digest[:16]}.zip"
    out = cache_dir() / "runtime" / name
    if not out.is_file() or out.stat().st_size != len(data):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{name}.{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(data)
        os.replace(tmp, out)
    return RuntimePackage(path=out, file=name, sha256=digest, size=len(data), version=version)


def bootstrap(site: _Site, op: str, args: dict[str, Any], *, timeout: float = 120.0) -> dict[str, Any]:
    """Run the inline bootstrap (``check``, ``install`` or ``discard``) on ``site``; the typed error it reports."""

    payload = json.dumps({"workdir": site.workdir, **args})
    rc, out, err = site.transport.run([*site.python, "-c", BOOTSTRAP, op], input=payload, timeout=timeout)
    reply = parse_reply(out)
    if reply is None:
        raise no_reply_error(site, "the runtime bootstrap", rc, err)  # type: ignore[arg-type]
    if reply.get("ok"):
        return reply
    raise op_error(site.name, {"kind": "io", **(reply.get("error") or {})})  # type: ignore[misc]


def install_runtime(site: _Site, *, on_progress: ProgressCallback | None = None,
                   check_space: bool = True) -> RuntimeOnDevice:
    """Make sure the device has this runtime version cached (one call when it has; upload + install if not)."""

    rt = runtime_package()
    if site.is_local and site.runtime_path:  # this machine: the installed edgeify_runtime
        return RuntimeOnDevice(package=rt, path=site.runtime_path, workdir=os.path.expanduser(site.workdir),
                               uploaded=False, free_bytes=0, python="")
    info = bootstrap(site, "check", rt.meta())
    uploaded = False
    if not info.get("runtime_ok"):
        free = int(info.get("free_bytes") or 0)
        if check_space and rt.size + (1 << 20) > free:
            raise space_error(site.name, info["workdir"], rt.size, free)
        remote = str(info.get("upload") or posixpath.join(info["workdir"], "runtime", ".upload.zip"))
        try:
            site.transport.put(str(rt.path), remote,
                               callback=(lambda n, _t: on_progress(n, rt.size)) if on_progress else None)
        except EdgeifyError:
            with contextlib.suppress(EdgeifyError):
                bootstrap(site, "discard", {**rt.meta(), "uploaded": remote}, timeout=60)
            raise
        bootstrap(site, "install", {**rt.meta(), "uploaded": remote})
        uploaded = True
    site.runtime_path = str(info["runtime_path"])  # what site_exec puts on PYTHONPATH from now on
    return RuntimeOnDevice(package=rt, path=site.runtime_path, workdir=str(info["workdir"]),
                           uploaded=uploaded, free_bytes=int(info.get("free_bytes") or 0),
                           python=str(info.get("python") or ""))


__all__ = ["BOOTSTRAP", "RuntimeOnDevice", "RuntimePackage", "bootstrap", "install_runtime", "plugin_device_parts",
           "runtime_package"]
