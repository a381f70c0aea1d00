"""Writing bundles: assemble files + manifest in a staging directory, then publish it atomically.

``publish`` swaps the staging directory into place with ``renameat2(RENAME_EXCHANGE)`` on Linux, so a reader
sees either the old bundle or the new one, never a mix; a failed or interrupted build never touches ``out``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeify_runtime.manifest import FORMAT_NAME, MANIFEST_NAME, REPORT_NAME, Manifest, sha256_file

from .errors import UsageError
from .report import render_markdown
from .steps.facts import write_facts
from .version import __version__

if TYPE_CHECKING:
    from .steps.base import Artifact, BuildContext

STAGING_PREFIX = ".edgeify-staging-"


def assemble(dest: Path, ctx: BuildContext, artifact: Artifact, *, steps: list[dict[str, Any]],
             tools: dict[str, str], device_steps: list[dict[str, Any]] | None = None,
             fixed_dims: list[dict[str, Any]] | None = None,
             labels: list[str] | None = None) -> Manifest:
    """Copy the artifact into ``dest`` under the engine's file names and write ``manifest.json`` (returned).

    The artifact's records go in as their ``to_dict`` forms (the step cache stores the same): its signature as
    ``inputs``/``outputs``, ``quantization``, ``opset``, the check step's ``validation`` report, and every step's
    own facts record under ``facts`` (``{namespace: {...}}``: open, so a new step adds its record there without
    a change here).

    ``device_steps``: resolved steps that run on the device after deploy (``where = "device"``, e.g. the TensorRT
    engine build), written as the manifest's ``device_steps`` for ``edgeify_runtime.device_steps``."""
    dest.mkdir(parents=True, exist_ok=True)
    primary = ctx.engine.artifact
    stem = Path(primary).stem
    names = [primary] + [stem + p.suffix for p in artifact.files[1:]]
    files: dict[str, dict[str, Any]] = {}
    for src, name in zip(artifact.files, names, strict=True):
        shutil.copyfile(src, dest / name)
        files[name] = {"sha256": sha256_file(dest / name), "size": (dest / name).stat().st_size}
    given, labels, prep = labels, None, None  # labels: --labels or labels.txt (edgeify.labels) win
    for ds in (ctx.eval, ctx.calib):
        if ds is not None and ds.preprocessing:
            prep = ds.preprocessing
            labels = ds.preprocessing.get("classes")
            break
    labels = given or labels
    extra: dict[str, Any] = {
        "labels": labels,
        "preprocessing": prep,
        "source": ctx.source.describe(),
        "opset": artifact.opset,
        "calibration": None if ctx.calib is None else {
            "sha256": ctx.calib.sha256, "count": ctx.calib.count, "file": Path(ctx.calib.origin).name},
        "evaluation": None if ctx.eval is None else {
            "sha256": ctx.eval.sha256, "count": ctx.eval.count, "file": Path(ctx.eval.origin).name},
        "tools": {"edgeify": __version__, **tools},
        "steps": steps,
        "validation": None if artifact.validation is None else artifact.validation.to_dict(),
    }
    if artifact.facts:  # each step's own facts record, by namespace (read back with steps.facts.facts_of)
        extra["facts"] = write_facts(artifact.facts)
    if fixed_dims:  # dynamic dims of the source the bundle has fixed (--input-shape, or the conversion)
        extra["fixed_dims"] = fixed_dims
    if device_steps:
        extra["device_steps"] = device_steps
    sig = artifact.signature
    manifest = Manifest.create(  # the device's class builds and validates it: one schema on both sides
        target={"name": ctx.target.name, "family": ctx.target.family, "arch": ctx.target.arch,
                "os": ctx.target.os, "spec_digest": ctx.target.digest, "status": ctx.target.status},
        engine={"name": ctx.engine.runtime, "engine_key": ctx.engine_name, "min_version": ctx.engine.min_version,
                "artifact": primary, "format": ctx.engine.artifact_format, "build_on": ctx.engine.build_on,
                "options": dict(ctx.engine.options)},
        precision=ctx.precision, quantization=artifact.quantization.to_dict(), inputs=sig.inputs,
        outputs=sig.outputs, files=files, **extra)
    manifest.write(dest)
    return manifest


def write_report(dest: Path, manifest: Manifest, latency: dict[str, Any] | None) -> str:
    text = render_markdown(manifest, latency)
    (dest / REPORT_NAME).write_text(text, encoding="utf-8")
    return text


def staging_dir_for(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.parent / f"{STAGING_PREFIX}{out.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


# -- what -o may point at ------------------------------------------------------------------------------------
def is_edgeify_bundle(path: Path) -> bool:
    """True when ``path`` is a directory holding an edgeify bundle and nothing else (manifest with the format
    marker; every other entry is a payload file the manifest lists, or the report)."""
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        raw = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME or not isinstance(raw.get("files"), dict):
        return False
    known = {MANIFEST_NAME, REPORT_NAME, *raw["files"]}
    return all(entry.name in known and not entry.is_symlink() for entry in path.iterdir())


def check_output(out: str | os.PathLike[str]) -> Path:
    """Refuse, before anything is built, an ``-o`` that publishing would not replace (``UsageError``, exit 2):
    an empty name, the current directory (or one of its parents), a file, a symlink, a directory holding
    anything but an edgeify bundle, or a place where the staging directory cannot be created."""

    if not str(out).strip():
        raise UsageError("-o '': the bundle directory name is empty",
                         hint="name a new directory, e.g. -o build/model-x86")
    path = Path(out).expanduser()
    fix_new = f"name a new directory, e.g. -o {path / 'bundle'}" if path.is_dir() else "name a new directory"
    recover_aside(path)
    cwd = Path.cwd().resolve()
    if path.resolve() == cwd or path.resolve() in cwd.parents:
        raise UsageError(f"-o {out}: that is the current directory (or one of its parents); a bundle replaces "
                         "its whole directory", hint=fix_new)
    if path.is_symlink():
        raise UsageError(f"-o {out}: is a symbolic link; edgeify does not replace links",
                         hint="pass the directory itself, or a new directory")
    if path.exists() and not path.is_dir():
        raise UsageError(f"-o {out}: is a file, not a bundle directory; it is left alone",
                         hint=f"name a directory instead, e.g. -o {path.with_suffix('')}-bundle")
    if path.is_dir() and any(path.iterdir()) and not is_edgeify_bundle(path):
        entries = sorted(e.name for e in path.iterdir())
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise UsageError(f"-o {out}: the directory holds {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} "
                         f"that are not one edgeify bundle ({shown}); edgeify replaces only an earlier bundle "
                         "or an empty directory", hint=fix_new)
    _probe_writable(path)
    return path


def _probe_writable(path: Path) -> None:
    """Create (and remove) a directory where the staging directory will go: the nearest existing ancestor."""

    anchor = path.parent
    while not anchor.exists() and anchor != anchor.parent:
        anchor = anchor.parent
    if not anchor.is_dir():
        raise UsageError(f"-o {path}: {anchor} is a file, so the bundle directory cannot be created under it",
                         hint="name a directory whose parents are directories")
    try:
        probe = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}probe-", dir=anchor))
        probe.rmdir()
    except OSError as exc:
        raise UsageError(f"-o {path}: cannot write in {anchor} ({exc.strerror or exc})",
                         hint="choose a writable place for the bundle, e.g. -o build/NAME in your project") from None


# -- publishing ------------------------------------------------------------------------------------------------
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
ASIDE_PREFIX = ".edgeify-old-"


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2). False where the kernel or libc cannot."""
    if os.environ.get("EDGEIFY_TEST_NO_RENAMEAT2"):  # tests: exercise the portable path on Linux too
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for entry in root.iterdir():
        if entry.is_file() and not entry.is_symlink():
            _fsync_path(entry)
    _fsync_path(root)


def _asides(out: Path) -> list[Path]:
    pattern = re.compile(rf"^{re.escape(ASIDE_PREFIX + out.name)}-[0-9a-f]{{8}}$")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        return sorted(p for p in parent.iterdir() if pattern.match(p.name))
    except OSError:
        return []


def recover_aside(out: Path) -> list[str]:
    """Finish a publish that a crash interrupted (the portable path renames the old bundle aside first).

    ``out`` missing and an aside bundle there: the aside goes back to ``out``. ``out`` present: an aside that is
    an edgeify bundle is the old one and is removed. An aside that is not an edgeify bundle is never touched."""
    notes: list[str] = []
    for aside in _asides(out):
        if not is_edgeify_bundle(aside):
            notes.append(f"left {aside} alone: not an edgeify bundle")
            continue
        if not out.exists() and not out.is_symlink():
            os.rename(aside, out)
            notes.append(f"restored {out} from {aside.name} (a previous publish was interrupted)")
        else:
            shutil.rmtree(aside, ignore_errors=True)
            notes.append(f"removed {aside.name}, the bundle a finished publish replaced")
    return notes


def publish(staging: Path, out: Path) -> None:
    """Put the finished ``staging`` bundle at ``out``, replacing a previous bundle (or empty directory) there.

    Files and directories are fsynced before the swap. With ``renameat2(RENAME_EXCHANGE)`` the swap is atomic;
    without it the old bundle is renamed aside (``.edgeify-old-NAME-xxxxxxxx``), the new one renamed in, then the
    old one removed: after a crash between the two renames ``recover_aside`` (run by the next build's
    ``check_output``) puts the old bundle back, so ``out`` is never lost."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not is_edgeify_bundle(out):  # check_output refused this earlier
        raise FileExistsError(f"{out} holds files that are not an edgeify bundle; not replacing it")
    _fsync_tree(staging)
    _fsync_path(out.parent)
    if not out.exists():
        os.rename(staging, out)
        _fsync_path(out.parent)
        return
    if _exchange(staging, out):  # staging now holds the old bundle
        _fsync_path(out.parent)
        shutil.rmtree(staging, ignore_errors=True)
        return
    aside = out.parent / f"{ASIDE_PREFIX}{out.name}-{uuid.uuid4().hex[:8]}"
    os.rename(out, aside)
    os.rename(staging, out)
    _fsync_path(out.parent)
    shutil.rmtree(aside, ignore_errors=True)
