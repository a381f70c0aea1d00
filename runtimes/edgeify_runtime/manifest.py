"""The bundle manifest (``manifest.json``): the contract between the host toolchain and the device.

A bundle is an immutable directory::

    bundle/
      manifest.json      this file's schema (below)
      report.md          human-readable build report (informational, not hashed)
      model.onnx | model.xml + model.bin | model.tflite | ...   the engine's artifact files

Schema version 1 (keys the device side reads are marked *; the host adds more, which the device ignores)::

    {
      "schema_version": 1,                       *
      "format": "edgeify-bundle",                *
      "created_at": "2026-11-24T10:00:00+00:00",
      "target": {"name": "x86-avx2", "family": "x86", "arch": "x86_64", ...},
      "engine": {"name": "onnxruntime",          *  adapter name (see edgeify_runtime.engines)
                 "min_version": "1.17.0",        *  oldest engine version that can run the artifact
                 "artifact": "model.onnx",       *  the file the adapter loads
                 "format": "onnx",
                 "options": {...}},                  engine-specific load options
      "precision": "int8",                       *
      "inputs":  [TensorSpec, ...],              *  what a caller feeds to Model.run
      "outputs": [TensorSpec, ...],              *
      "files": {"model.onnx": {"sha256": "...", "size": 123}},   *  every payload file
      "bundle_digest": "sha256 over files",     *  see files_digest()
      "labels": ["0", "1", ...] | null,
      "preprocessing": {...} | null,
      "quantization": {...}, "source": {...}, "tools": {...}, "steps": [...], "validation": {...},
      "facts": {"<namespace>": {...}, ...}       each build step's own typed facts record (optional)
    }

    TensorSpec = {"name": "x", "shape": ["batch", 1, 8, 8], "dtype": "float32", "layout": "NCHW",
                  "engine_layout": "NHWC" (optional: the artifact's own layout when it differs)}

Dynamic dimensions are strings (their symbolic name); fixed dimensions are ints.

One class for both sides: the host's bundle writer builds the manifest with ``Manifest.create`` (which fills in
the schema version, format marker and digest and validates the result as a reader would) and writes it with
``Manifest.write``; devices read it with ``Manifest.read``; a host step that adds facts to a finished bundle (the
optimize record, ``quantization.ladder``) goes through ``Manifest.updated``, which validates again. A newer or
unknown ``schema_version`` is a ``BundleError`` that says what to upgrade or rebuild. Symbolic links inside a
bundle are refused on read.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Sequence, Union

from .errors import BundleError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
REPORT_NAME = "report.md"
FORMAT_NAME = "edgeify-bundle"

Dim = Union[int, str]


@dataclass(frozen=True)
class TensorSpec:
    """One named model input or output."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str
    layout: str | None = None
    engine_layout: str | None = None

    @property
    def dynamic_axes(self) -> tuple[int, ...]:
        return tuple(i for i, d in enumerate(self.shape) if not isinstance(d, int))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                             "layout": self.layout}
        if self.engine_layout and self.engine_layout != self.layout:
            d["engine_layout"] = self.engine_layout
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        try:
            shape = tuple(x if isinstance(x, int) else str(x) for x in d["shape"])
            return cls(name=str(d["name"]), shape=shape, dtype=str(d["dtype"]), layout=d.get("layout"),
                       engine_layout=d.get("engine_layout"))
        except (KeyError, TypeError) as exc:
            raise BundleError(f"manifest: malformed tensor spec {d!r}: {exc}") from exc


@dataclass(frozen=True)
class EngineRef:
    name: str
    artifact: str
    min_version: str | None = None
    format: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """The parts of ``manifest.json`` the device side relies on; ``raw`` keeps everything."""

    schema_version: int
    engine: EngineRef
    precision: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    files: dict[str, dict[str, Any]]
    bundle_digest: str
    raw: dict[str, Any]

    @property
    def target(self) -> str | None:
        return (self.raw.get("target") or {}).get("name")

    @property
    def labels(self) -> list[str] | None:
        return self.raw.get("labels")

    @property
    def preprocessing(self) -> dict[str, Any] | None:
        return self.raw.get("preprocessing")

    # host-only facts, kept as their JSON mappings (the device reads none of them; the host's typed records are
    # ``edgeify.steps.records.validation_of`` / ``quantization_of``)
    @property
    def quantization(self) -> dict[str, Any]:
        return self.raw.get("quantization") or {}

    @property
    def validation(self) -> dict[str, Any] | None:
        return self.raw.get("validation")

    @property
    def source(self) -> dict[str, Any]:
        return self.raw.get("source") or {}

    @property
    def facts(self) -> dict[str, Any]:
        """The steps' own facts records, by namespace (``{"export": {...}, "prune": {...}}``; host-only, optional:
        a bundle written before it has none). The host validates a namespace with the record class its step
        declares (``edgeify.steps.facts.facts_of``)."""
        facts = self.raw.get("facts")
        return facts if isinstance(facts, dict) else {}

    def updated(self, **keys: Any) -> Manifest:
        """A copy with top-level ``keys`` replaced (e.g. ``quantization``, ``optimize``, ``engine``), validated
        again as a reader validates it; the digest must still match the files (payload edits are refused)."""
        raw = self.to_dict()
        raw.update(json.loads(json.dumps(keys)))
        return Manifest.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Manifest:
        if raw.get("format") != FORMAT_NAME:
            raise BundleError("not an edgeify bundle manifest (format field missing or wrong)")
        version = raw.get("schema_version")
        if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
            raise BundleError(
                f"manifest schema_version {version} is newer than this edgeify-runtime reads ({SCHEMA_VERSION}): "
                "the bundle was built by a newer edgeify",
                hint="upgrade edgeify-runtime on this machine (pip install -U edgeify-runtime), or rebuild the "
                     "bundle with the edgeify version installed here")
        if version != SCHEMA_VERSION:
            raise BundleError(
                f"manifest schema_version {version!r} is not supported by this edgeify-runtime "
                f"(supports {SCHEMA_VERSION})",
                hint="rebuild the bundle with `edgeify build` (it writes schema version "
                     f"{SCHEMA_VERSION})")
        try:
            eng = raw["engine"]
            engine = EngineRef(name=str(eng["name"]), artifact=safe_relpath(eng["artifact"]),
                               min_version=eng.get("min_version"), format=eng.get("format"),
                               options=dict(eng.get("options") or {}))
            files = {safe_relpath(k): dict(v) for k, v in raw["files"].items()}
            manifest = cls(
                schema_version=version, engine=engine, precision=str(raw["precision"]),
                inputs=tuple(TensorSpec.from_dict(t) for t in raw["inputs"]),
                outputs=tuple(TensorSpec.from_dict(t) for t in raw["outputs"]),
                files=files, bundle_digest=str(raw["bundle_digest"]), raw=raw)
        except KeyError as exc:
            raise BundleError(f"manifest is missing the field {exc}") from exc
        except (TypeError, AttributeError, ValueError) as exc:  # e.g. "engine": null, "files": [] (fuzzing found it)
            raise BundleError(f"manifest: a field has the wrong type ({type(exc).__name__}: {exc})") from None
        if engine.artifact not in files:
            raise BundleError(f"manifest: engine artifact {engine.artifact!r} is not listed in files")
        if files_digest(files) != manifest.bundle_digest:
            raise BundleError("manifest: bundle_digest does not match the files table (manifest was edited)")
        return manifest

    @classmethod
    def create(cls, *, target: dict[str, Any], engine: dict[str, Any], precision: str,
               inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], files: dict[str, dict[str, Any]],
               quantization: dict[str, Any], created_at: str | None = None, **extra: Any) -> Manifest:
        """Build a manifest (the host's bundle writer uses this, so host and device share one schema): the
        schema version, format marker and ``bundle_digest`` are filled in, and the result is validated exactly
        as a reader validates it. ``extra``: the host-only keys (source, tools, steps, validation, ...)."""
        import datetime as _dt

        raw: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "format": FORMAT_NAME,
            "created_at": created_at or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "target": dict(target),
            "engine": dict(engine),
            "precision": precision,
            "quantization": dict(quantization),
            "inputs": [t.to_dict() for t in inputs],
            "outputs": [t.to_dict() for t in outputs],
            "files": {k: dict(v) for k, v in files.items()},
            "bundle_digest": files_digest(files),
        }
        clash = sorted(set(extra) & set(raw))
        if clash:
            raise ValueError(f"Manifest.create: {clash} are set by create itself")
        raw.update(extra)
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``manifest.json`` (a copy)."""
        return json.loads(json.dumps(self.raw))

    def write(self, bundle_dir: str | os.PathLike[str]) -> Path:
        path = Path(bundle_dir) / MANIFEST_NAME
        path.write_text(dumps(self.raw), encoding="utf-8")
        return path

    @classmethod
    def read(cls, bundle_dir: str | os.PathLike[str]) -> Manifest:
        path = Path(bundle_dir) / MANIFEST_NAME
        refuse_symlinks(bundle_dir)
        if not path.is_file():
            raise BundleError(f"{bundle_dir}: no {MANIFEST_NAME}; not an edgeify bundle",
                              hint="pass the directory that `edgeify build -o DIR` wrote")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path}: unreadable manifest: {exc}") from exc
        if not isinstance(raw, dict):
            raise BundleError(f"{path}: manifest is not a JSON object")
        return cls.from_dict(raw)

    def verify_files(self, bundle_dir: str | os.PathLike[str]) -> None:
        """Check every payload file's size and sha256; raise BundleError naming each bad file."""
        root = Path(bundle_dir)
        refuse_symlinks(root)
        bad = []
        for rel, meta in sorted(self.files.items()):
            p = root / rel
            if not p.is_file():
                bad.append(f"{rel}: missing")
                continue
            if "size" in meta and p.stat().st_size != meta["size"]:
                bad.append(f"{rel}: size {p.stat().st_size} != {meta['size']}")
                continue
            if sha256_file(p) != meta.get("sha256"):
                bad.append(f"{rel}: sha256 mismatch")
        if bad:
            raise BundleError(f"bundle {root} failed its integrity check: " + "; ".join(bad),
                              hint="rebuild it (`edgeify build ... -o DIR`) or redeploy it (`edgeify deploy DIR "
                                   "--device NAME`)")


def refuse_symlinks(bundle_dir: str | os.PathLike[str]) -> None:
    """Refuse a bundle that has a symbolic link anywhere inside it (a ``model.onnx`` linking to a key file would
    otherwise be read, hashed and uploaded). The bundle directory itself may be a link (a device's ``current``)."""
    root = Path(bundle_dir)
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root):  # os.walk does not follow links into directories
        for name in dirnames + filenames:
            entry = Path(dirpath) / name
            if entry.is_symlink():
                raise BundleError(f"bundle {root}: {entry.relative_to(root)} is a symbolic link; bundles hold "
                                  "regular files only",
                                  hint="rebuild the bundle with `edgeify build` (it never writes links), or copy "
                                       "the real file in place of the link")


def safe_relpath(name: str) -> str:
    """Return ``name`` if it is a plain relative path inside the bundle; refuse traversal, absolute paths."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise BundleError(f"unsafe file name in manifest: {name!r}")
    p = PurePosixPath(name)
    if p.is_absolute() or any(part in ("..", "") for part in p.parts) or name.startswith("~"):
        raise BundleError(f"unsafe file name in manifest (path traversal refused): {name!r}")
    return str(p)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def files_digest(files: dict[str, dict[str, Any]]) -> str:
    """The bundle digest: sha256 over the sorted ``"<path> <sha256>\\n"`` lines of the payload files."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(f"{rel} {files[rel].get('sha256')}\n".encode())
    return h.hexdigest()


def dumps(raw: dict[str, Any]) -> str:
    return json.dumps(raw, indent=2, sort_keys=False) + "\n"
