"""Per-step content-addressed cache: key = input digest + step kind + resolved config + precision + tool versions
(+ calibration digest for steps that calibrate) + the artifact schema version. Targets that share a step share
its result. An entry is the artifact's files plus ``artifact.json`` (``Artifact.to_dict``); one that cannot be read
in this version's layout (older edgeify, a torn write) is a miss, never an error."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from edgeify_runtime.errors import BundleError

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
            artifact = Artifact.from_dict(json.loads((entry / "artifact.json").read_text()), entry)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, BundleError):
            return None
        return artifact if all(f.is_file() for f in artifact.files) else None

    def put(self, key: str, artifact: Artifact) -> Artifact:
        """Copy the step's output into the cache atomically; return the cached artifact."""
        if not self.enabled:
            return artifact
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        tmp.mkdir()
        for f in artifact.files:
            shutil.copyfile(f, tmp / f.name)
        (tmp / "artifact.json").write_text(json.dumps(artifact.to_dict()))
        try:
            os.rename(tmp, self.root / key)
        except OSError:  # another build cached the same key first
            shutil.rmtree(tmp, ignore_errors=True)
        return self.get(key) or artifact
