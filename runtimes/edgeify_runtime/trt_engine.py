"""TensorRT engines built on the device, cached by the device fingerprint.

A Jetson bundle carries the ONNX (``model.onnx``) and, in its manifest, the ``tensorrt-engine`` device step with
its build settings. ``ensure_engine`` is the one place that turns that into an engine plan on the device:

1. take the device fingerprint (``edgeify_runtime.jetson``: L4T release, TensorRT and CUDA versions, GPU compute
   capability) and compute the cache key with the build inputs (precision, DLA core, ONNX sha256, optimization
   profile, workspace, optimization level);
2. **reuse** the plan stored under that key when its sha256 still matches; else **build** it (first use on this
   device) or **rebuild** it (a plan exists for another key: the reason names what changed, e.g.
   ``l4t '36.4.3' -> '36.4.7'``), with ``trtexec`` when the device has it, else the TensorRT Python API, and a
   timing cache shared by every build on this device and TensorRT version;
3. write ``<key>.plan`` and ``<key>.json`` (the metadata the deployer brings back: fingerprint, key inputs,
   command, trtexec's parsed log, build time, plan sha256) atomically, remove plans for older keys.

Engines live in ``<bundle>/engines/`` (next to the bundle's files; not part of its payload, so the bundle's
digest does not change), or in the ``engine_dir`` load option. Every step that can only run with NVIDIA
hardware (the builds, the plan) has been checked against recorded trtexec output only; see the README.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import BundleError, EngineBuildError, EngineMissingError
from .jetson import ENGINE_KEY_FIELDS, INSTALL_HINT, describe_changes, engine_cache_key, jetson_fingerprint
from .manifest import Manifest, sha256_file
from .trtexec import build_command, parse_output

STEP_KIND = "tensorrt-engine"
ENGINE_DIR = "engines"
KEY_CHARS = 24


@dataclass(frozen=True)
class BuildSettings:
    """The ``tensorrt-engine`` step's config (from the manifest), overridable by load options of the same name."""

    dla_core: int | None = None
    dla_cores: int = 0
    gpu_fallback: bool = True
    timing_cache: bool = True
    workspace_mib: int | None = None
    builder_optimization_level: int | None = None
    builder: str = "auto"
    min_batch: int = 1
    opt_batch: int | None = None
    max_batch: int = 8
    timeout_s: float = 3600.0

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> BuildSettings:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise BundleError(f"tensorrt-engine: unknown setting(s) {unknown}; known: {sorted(known)}",
                              hint="upgrade edgeify-runtime if the bundle was built by a newer edgeify")
        s = cls(**cfg)
        if s.builder not in ("auto", "trtexec", "python"):
            raise BundleError(f"tensorrt-engine: builder must be auto, trtexec or python, not {s.builder!r}")
        if s.dla_core is not None and (isinstance(s.dla_core, bool) or not isinstance(s.dla_core, int)
                                       or s.dla_core < 0):
            raise BundleError(f"tensorrt-engine: dla_core must be a DLA core number or null, not {s.dla_core!r}")
        if not (1 <= s.min_batch <= (s.opt_batch or s.min_batch) <= s.max_batch):
            raise BundleError("tensorrt-engine: need 1 <= min_batch <= opt_batch <= max_batch")
        return s

    def key_inputs(self) -> dict[str, Any]:
        """Settings that change the plan (the builder and timeouts do not)."""
        return {"gpu_fallback": self.gpu_fallback if self.dla_core is not None else None,
                "workspace_mib": self.workspace_mib, "builder_optimization_level": self.builder_optimization_level}


def device_step(manifest: Manifest) -> dict[str, Any] | None:
    for step in manifest.raw.get("device_steps") or []:
        if isinstance(step, dict) and step.get("uses") == STEP_KIND:
            return step
    return None


def settings_for(manifest: Manifest, options: dict[str, Any] | None = None) -> BuildSettings:
    step = device_step(manifest)
    cfg = dict((step or {}).get("config") or {})
    for k, v in (options or {}).items():
        if k in BuildSettings.__dataclass_fields__:
            cfg[k] = v
    return BuildSettings.from_config(cfg)


def _batch_axis(spec: Any) -> int | None:
    layout = (spec.layout or "").upper()
    if layout and "N" in layout and len(layout) == len(spec.shape):
        return layout.index("N")
    return 0 if spec.shape else None


def optimization_profile(manifest: Manifest, s: BuildSettings) -> dict[str, dict[str, list[int]]] | None:
    """min/opt/max shapes for inputs with dynamic dimensions: the batch axis spans min..max_batch, any other
    dynamic dimension is 1 (TensorRT needs a range for each; give fixed dims in the model for other sizes)."""
    dynamic = [t for t in manifest.inputs if any(not isinstance(d, int) or d < 0 for d in t.shape)]
    if not dynamic:
        return None
    prof: dict[str, dict[str, list[int]]] = {"min": {}, "opt": {}, "max": {}}
    for t in dynamic:
        axis = _batch_axis(t)
        for key, batch in (("min", s.min_batch), ("opt", s.opt_batch or s.min_batch), ("max", s.max_batch)):
            prof[key][t.name] = [d if isinstance(d, int) and d >= 0 else (batch if i == axis else 1)
                                 for i, d in enumerate(t.shape)]
    return prof


def engine_dir(bundle_dir: str | os.PathLike[str], options: dict[str, Any] | None = None) -> Path:
    opt = (options or {}).get("engine_dir") or os.environ.get("EDGEIFY_ENGINE_DIR")
    return Path(opt) if opt else Path(bundle_dir) / ENGINE_DIR


@dataclass
class EngineRecord:
    """What ``ensure_engine`` did: ``decision`` is built | reused | rebuilt."""

    decision: str
    reason: str
    key: str
    plan: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _log(msg: str) -> None:
    print(f"[edgeify tensorrt] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One engine build per bundle at a time (a benchmark and an app starting together)."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _existing(directory: Path) -> list[dict[str, Any]]:
    metas = []
    for p in sorted(directory.glob("*.json")):
        meta = _read_json(p)
        if meta and "key" in meta and "key_payload" in meta:
            metas.append(meta)
    metas.sort(key=lambda m: str(m.get("created_at", "")))
    return metas


def choose_builder(s: BuildSettings, fp: dict[str, Any]) -> str:
    """``trtexec`` or ``python``; EngineMissingError naming what to install when the device has neither."""
    have_exec, have_py = bool(fp.get("trtexec")), bool(fp.get("tensorrt_python"))
    if s.builder == "trtexec" and not have_exec:
        raise EngineMissingError("the bundle asks for builder=trtexec but trtexec is not on this device",
                                 hint=INSTALL_HINT)
    if s.builder == "python" and not have_py:
        raise EngineMissingError("the bundle asks for builder=python but the tensorrt Python module is not "
                                 "installed on this device", hint=INSTALL_HINT)
    if s.builder != "auto":
        return s.builder
    if have_exec:
        return "trtexec"
    if have_py:
        return "python"
    raise EngineMissingError(
        "TensorRT is not installed on this device (no trtexec, no tensorrt Python module): the TensorRT engine "
        "cannot be built here", hint=INSTALL_HINT)


def ensure_engine(bundle_dir: str | os.PathLike[str], manifest: Manifest, options: dict[str, Any] | None = None,
                  *, fingerprint: dict[str, Any] | None = None) -> EngineRecord:
    """Reuse, build or rebuild the bundle's engine plan for this device; see the module docstring."""
    bundle_dir = Path(bundle_dir)
    s = settings_for(manifest, options)
    fp = fingerprint if fingerprint is not None else jetson_fingerprint()
    builder = choose_builder(s, fp)
    if s.dla_core is not None and s.dla_core >= s.dla_cores:
        raise EngineMissingError(
            f"dla_core={s.dla_core} asked for, but this module ({manifest.target}) has {s.dla_cores} DLA core(s)",
            hint="leave dla_core unset (GPU only), or use a module with DLA cores (Orin NX, AGX Orin)")
    onnx_name = manifest.engine.artifact
    onnx_sha = str((manifest.files.get(onnx_name) or {}).get("sha256") or sha256_file(bundle_dir / onnx_name))
    profile = optimization_profile(manifest, s)
    build_inputs = dict(s.key_inputs(), profile=profile)
    key = engine_cache_key(fp, precision=manifest.precision, onnx_sha256=onnx_sha, dla_core=s.dla_core,
                           build=build_inputs)
    payload = {k: fp.get(k) for k in ENGINE_KEY_FIELDS}
    payload.update({"precision": manifest.precision, "onnx_sha256": onnx_sha, "dla_core": s.dla_core,
                    "build": build_inputs})
    directory = engine_dir(bundle_dir, options)
    stem = key[:KEY_CHARS]
    plan, meta_path = directory / f"{stem}.plan", directory / f"{stem}.json"
    with _locked(directory):
        meta = _read_json(meta_path)
        if meta and meta.get("key") == key and plan.is_file() and \
                sha256_file(plan) == (meta.get("plan") or {}).get("sha256"):
            return EngineRecord("reused", "same device fingerprint and build inputs", key, str(plan), meta)
        previous = [m for m in _existing(directory) if m.get("key") != key]
        if previous:
            changes = describe_changes(previous[-1]["key_payload"], payload)
            decision, reason = "rebuilt", "changed since the last build: " + "; ".join(changes or ["plan damaged"])
        elif meta is not None:
            decision, reason = "rebuilt", "the stored plan is missing or damaged"
        else:
            decision, reason = "built", "first use on this device"
        _log(f"{decision.replace('built', 'building')} the TensorRT engine ({reason}) with {builder}")
        tc_key = engine_cache_key(fp, precision="*", onnx_sha256="*", dla_core=None)[:16]
        timing_cache = directory / f"timing-{tc_key}.cache" if s.timing_cache else None
        t0 = time.monotonic()
        tmp_plan = directory / f".{stem}.plan.{os.getpid()}.tmp"
        if builder == "trtexec":
            info = _build_with_trtexec(fp, bundle_dir / onnx_name, tmp_plan, timing_cache, s, manifest.precision,
                                       profile, directory / f"{stem}.build.log")
        else:
            info = _build_with_python(bundle_dir / onnx_name, tmp_plan, timing_cache, s, manifest.precision,
                                      profile)
        if not tmp_plan.is_file() or tmp_plan.stat().st_size == 0:
            raise EngineBuildError(f"the {builder} build finished without writing an engine plan",
                                   hint=f"see {directory / (stem + '.build.log')}")
        os.replace(tmp_plan, plan)
        meta = {
            "key": key, "key_payload": payload, "decision": decision, "reason": reason, "builder": builder,
            "fingerprint": fp, "precision": manifest.precision, "dla_core": s.dla_core,
            "gpu_fallback": s.gpu_fallback if s.dla_core is not None else None,
            "bundle_digest": manifest.bundle_digest, "target": manifest.target,
            "build_wall_s": round(time.monotonic() - t0, 3),
            "plan": {"file": plan.name, "size": plan.stat().st_size, "sha256": sha256_file(plan)},
            "timing_cache": ({"file": timing_cache.name, "size": timing_cache.stat().st_size}
                             if timing_cache is not None and timing_cache.is_file() else None),
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **info,
        }
        _write_json(meta_path, meta)
        for old in previous:
            old_stem = str(old["key"])[:KEY_CHARS]
            for suffix in (".plan", ".json", ".build.log"):
                with contextlib.suppress(OSError):
                    (directory / f"{old_stem}{suffix}").unlink()
    _log(f"engine {decision}: {plan} ({meta['plan']['size']} bytes, {meta['build_wall_s']} s)")
    return EngineRecord(decision, reason, key, str(plan), meta)


def _build_with_trtexec(fp: dict[str, Any], onnx: Path, plan: Path, timing_cache: Path | None, s: BuildSettings,
                        precision: str, profile: dict[str, Any] | None, log_path: Path) -> dict[str, Any]:
    cmd = build_command(str(fp["trtexec"]), str(onnx), str(plan), trt_version=fp.get("tensorrt"),
                        precision=precision, timing_cache=str(timing_cache) if timing_cache else None,
                        profile=profile, dla_core=s.dla_core, gpu_fallback=s.gpu_fallback,
                        workspace_mib=s.workspace_mib, builder_optimization_level=s.builder_optimization_level)
    _log(" ".join(cmd))
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=s.timeout_s)
        text, rc = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out = exc.output
        text = out.decode(errors="replace") if isinstance(out, bytes) else (out or "")
        log_path.write_text(text, encoding="utf-8")
        raise EngineBuildError(f"trtexec ran past its {s.timeout_s:.0f} s deadline building the engine",
                               hint=f"see {log_path}") from None
    log_path.write_text(text, encoding="utf-8")
    parsed = parse_output(text)
    if rc != 0 or parsed["status"] == "failed":
        detail = "; ".join(parsed["errors"][-3:]) or text.strip().splitlines()[-1:] or ["no output"]
        raise EngineBuildError(f"trtexec could not build the engine (exit {rc}): {detail}",
                               hint=f"the full log is {log_path} on the device")
    keep = ("status", "tensorrt_version", "device", "precision", "build_s", "engine_size_mib", "timing_cache")
    return {"command": cmd, "trtexec": {k: parsed[k] for k in keep}, "warnings": parsed["warnings"][:20],
            "build_log": log_path.name}


def _build_with_python(onnx: Path, plan: Path, timing_cache: Path | None, s: BuildSettings, precision: str,
                       profile: dict[str, Any] | None) -> dict[str, Any]:  # pragma: no cover - needs TensorRT
    """The TensorRT Python API equivalent of ``build_command``. Never run on NVIDIA hardware by edgeify's tests."""
    try:
        import tensorrt as trt
    except Exception as exc:
        raise EngineMissingError(f"the tensorrt Python module cannot be imported: {exc}", hint=INSTALL_HINT) from exc
    version = str(getattr(trt, "__version__", ""))
    major = int(version.split(".")[0]) if version[:1].isdigit() else 10
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if major < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    elif major >= 11 and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError("TensorRT could not parse the ONNX: " + "; ".join(errors[-3:]))
    config = builder.create_builder_config()
    if major < 11:
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif precision in ("int8", "int8-mixed"):  # explicit Q/DQ; int8-mixed keeps some layers float
            config.set_flag(trt.BuilderFlag.INT8)
            config.set_flag(trt.BuilderFlag.FP16)
    if s.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(s.dla_core)
        if s.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if s.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(s.workspace_mib) << 20)
    if s.builder_optimization_level is not None:
        config.builder_optimization_level = int(s.builder_optimization_level)
    if profile:
        prof = builder.create_optimization_profile()
        for name in profile["min"]:
            prof.set_shape(name, profile["min"][name], profile["opt"][name], profile["max"][name])
        config.add_optimization_profile(prof)
    if timing_cache is not None:
        blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(blob), False)
    t0 = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError("TensorRT's builder returned no engine (see the messages above on stderr)")
    plan.write_bytes(bytes(serialized))
    if timing_cache is not None:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {"command": ["tensorrt.Builder.build_serialized_network"], "trtexec": None,
            "python_api": {"tensorrt_version": version, "build_s": round(time.monotonic() - t0, 3)}}


__all__ = ["BuildSettings", "EngineRecord", "choose_builder", "device_step", "engine_dir", "ensure_engine",
           "optimization_profile", "settings_for"]
