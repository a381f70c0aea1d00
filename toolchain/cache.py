"""Per-step content-addressed cache: key = input digest + step kind + resolved config + precision + tool versions
(+ calibration digest for steps that calibrate). Targets that share a step share its result."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from .steps.base import Artifact


class StepCache:
    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root = root / "steps"
        self.enabled = enabled

    def get(self, key: str) -> Artifact | None:
        if not self.enabled:
            return None
        entry = self.root / key
        try:
            info = json.loads((entry / "artifact.json").read_text())
        except (OSError, ValueError):
            return None
        files = [entry / name for name in info["files"]]
        if not all(f.is_file() for f in files):
            return None
        return Artifact(info["format"], files, info["meta"])

    def put(self, key: str, artifact: Artifact) -> Artifact:
        """Copy the step's output into the cache atomically; return the cached artifact."""
        if not self.enabled:
            return artifact
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        tmp.mkdir()
        for f in artifact.files:
            shutil.copyfile(f, tmp / f.name)
        info = {"format": artifact.format, "files": [f.name for f in artifact.files], "meta": artifact.meta}
        (tmp / "artifact.json").write_text(json.dumps(info, default=str))
        try:
            os.rename(tmp, self.root / key)
        except OSError:  # another build cached the same key first
            shutil.rmtree(tmp, ignore_errors=True)
        return self.get(key) or artifact
