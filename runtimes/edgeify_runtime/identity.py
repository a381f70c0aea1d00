"""A bundle's identity: everything that changes what runs, in one digest.

``bundle_digest`` (the manifest's) covers the payload files only, so two builds of the same artifact with
different engine settings (ONNX Runtime ``graph_optimization_level``, OpenVINO ``performance_hint``, threads, ...)
share it. The identity (``bundle_id``) is sha256 over the files digest, the engine's name, the precision and the
engine options as canonical JSON (sorted keys), so::

    bundle_id(m) != bundle_id(m with engine.options {"threads": 1})

The benchmark agent records the identity of what it ran (the manifest's options merged with the request's
``options``); the results store filters, compares and gates by it.

>>> a = identity("ab" * 32, "onnxruntime", "fp32", {})
>>> b = identity("ab" * 32, "onnxruntime", "fp32", {"graph_optimization_level": "basic"})
>>> a != b and len(a) == 64
True
>>> identity("ab" * 32, "onnxruntime", "fp32", {"x": 1, "y": 2}) == identity("ab" * 32, "onnxruntime", "fp32",
...                                                                          {"y": 2, "x": 1})
True
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

#: bumped when the identity's inputs change (old identities then differ from new ones by design)
IDENTITY_VERSION = 1


def identity(files_digest: str, engine: str, precision: str, options: Mapping[str, Any] | None) -> str:
    """sha256 over ``files_digest``, engine, precision and the canonical JSON of the engine options."""
    doc = {"v": IDENTITY_VERSION, "files": str(files_digest).lower(), "engine": str(engine),
           "precision": str(precision), "options": dict(options or {})}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def manifest_identity(manifest: Any, options: Mapping[str, Any] | None = None) -> str:
    """The identity of a :class:`~edgeify_runtime.manifest.Manifest` (or its raw JSON dict) as it runs with the
    extra load ``options`` merged over its ``engine.options``."""
    if isinstance(manifest, Mapping):
        engine = manifest.get("engine") or {}
        name, base, files, precision = (engine.get("name"), engine.get("options") or {},
                                        manifest.get("bundle_digest"), manifest.get("precision"))
    else:
        name, base, files, precision = (manifest.engine.name, manifest.engine.options, manifest.bundle_digest,
                                        manifest.precision)
    return identity(str(files), str(name), str(precision), {**dict(base), **dict(options or {})})


__all__ = ["IDENTITY_VERSION", "identity", "manifest_identity"]
