"""Writing bundles: assemble files + manifest in a staging directory, then publish it atomically.

``publish`` swaps the staging directory into place with ``renameat2(RENAME_EXCHANGE)`` on Linux, so a reader
sees either the old bundle or the new one, never a mix; a failed or interrupted build never touches ``out``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as _dt
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeify_runtime.manifest import (
    FORMAT_NAME,
    MANIFEST_NAME,
    REPORT_NAME,
    SCHEMA_VERSION,
    dumps,
    files_digest,
    sha256_file,
)

from . import __version__

if TYPE_CHECKING:
    from .steps.base import Artifact, BuildContext

STAGING_PREFIX = ".edgeify-staging-"


def assemble(dest: Path, ctx: BuildContext, artifact: Artifact, *, steps: list[dict[str, Any]],
             tools: dict[str, str], validation: dict[str, Any] | None,
             device_steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Copy the artifact into ``dest`` under the engine's file names and write ``manifest.json``.

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
    meta = artifact.meta
    labels = None
    prep = None
    for ds in (ctx.eval, ctx.calib):
        if ds is not None and ds.preprocessing:
            prep = ds.preprocessing
            labels = ds.preprocessing.get("classes")
            break
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "format": FORMAT_NAME,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "target": {"name": ctx.target.name, "family": ctx.target.family, "arch": ctx.target.arch,
                   "os": ctx.target.os, "spec_digest": ctx.target.digest, "status": ctx.target.status},
        "engine": {"name": ctx.engine.runtime, "engine_key": ctx.engine_name, "min_version": ctx.engine.min_version,
                   "artifact": primary, "format": ctx.engine.artifact_format, "build_on": ctx.engine.build_on,
                   "options": dict(ctx.engine.options)},
        "precision": ctx.precision,
        "quantization": meta.get("quantization") or {"method": "none", "weights": "float32"},
        "inputs": meta["inputs"],
        "outputs": meta["outputs"],
        "files": files,
        "bundle_digest": files_digest(files),
        "labels": labels,
        "preprocessing": prep,
        "source": ctx.source.describe(),
        "opset": meta.get("opset"),
        "calibration": None if ctx.calib is None else {
            "sha256": ctx.calib.sha256, "count": ctx.calib.count, "file": Path(ctx.calib.origin).name},
        "evaluation": None if ctx.eval is None else {
            "sha256": ctx.eval.sha256, "count": ctx.eval.count, "file": Path(ctx.eval.origin).name},
        "tools": {"edgeify": __version__, **tools},
        "steps": steps,
        "validation": validation,
    }
    if device_steps:
        manifest["device_steps"] = device_steps
    (dest / MANIFEST_NAME).write_text(dumps(manifest), encoding="utf-8")
    return manifest


def write_report(dest: Path, manifest: dict[str, Any], latency: dict[str, Any] | None) -> str:
    from .report import render_markdown

    text = render_markdown(manifest, latency)
    (dest / REPORT_NAME).write_text(text, encoding="utf-8")
    return text


def staging_dir_for(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.parent / f"{STAGING_PREFIX}{out.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2). False where the kernel or libc cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def publish(staging: Path, out: Path) -> None:
    """Put the finished ``staging`` bundle at ``out``, replacing a previous bundle there atomically."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if not out.exists():
        os.rename(staging, out)
        return
    if _exchange(staging, out):  # staging now holds the old bundle
        shutil.rmtree(staging, ignore_errors=True)
        return
    old = out.parent / f"{STAGING_PREFIX}old-{out.name}-{uuid.uuid4().hex[:8]}"
    os.rename(out, old)
    os.rename(staging, out)
    shutil.rmtree(old, ignore_errors=True)
