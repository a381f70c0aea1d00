"""Driver side: put a cell's bundle (a tar archive from the worker) in OUT atomically, and keep every cell's
build record.

The archive is unpacked into a hidden staging directory next to the destination, checked against its own
manifest (sha256 of every file), then swapped into place with ``edgeify.bundle.publish``: a reader of OUT sees
the previous bundle or the new one, never a mix; a broken archive never replaces anything.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

from edgeify_runtime.manifest import Manifest

from ..bundle import publish, staging_dir_for

REPORTS_DIR = "_reports"  # model names start with [a-z0-9], so this never collides with a model directory


def publish_bundle(archive: bytes, dest: Path) -> None:
    staging = staging_dir_for(dest)
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
            tar.extractall(staging, filter="data")
        Manifest.read(staging).verify_files(staging)
        publish(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def report_path(out: Path, cell_id: str) -> Path:
    return out / REPORTS_DIR / f"{cell_id}.json"


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
