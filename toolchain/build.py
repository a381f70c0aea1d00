"""The build engine: resolve target + pipeline, run the steps (cached), check, and publish a bundle atomically."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgeify_runtime.envelope import sigterm_as_interrupt
from edgeify_runtime.errors import BundleError

from . import bundle as bundle_mod
from . import labels as labels_mod
from .bench_agent import BenchSettings, bench_local
from .cache import StepCache
from .compress import transforms as source_transforms
from .compress.data import is_loader_ref
from .data import load_dataset
from .errors import DataError, InterruptedBuild, NoSpaceError, TargetError, UsageError
from .paths import cache_dir, ensure_writable_dir
from .pipeline import resolve, step_class
from .preflight import describe_fixed, fixed_dims, n_classes, preflight
from .request import Budgets, BuildRequest, DataSets
from .sources import open_source
from .steps.base import BuildContext
from .steps.records import quantization_of, validation_of
from .targets import load_registry
from .telemetry import vendor_telemetry_off

if TYPE_CHECKING:
    from edgeify_runtime.manifest import Manifest

    from .request import BuildRequest
    from .steps.records import Quantization, ValidationReport
    from .targets.spec import TargetSpec


class BuildObserver(Protocol):
    def step_started(self, step_id: str, kind: str) -> None: ...
    def step_finished(self, step_id: str, seconds: float, cached: bool) -> None: ...
    def message(self, text: str) -> None: ...


class _Silent:
    def step_started(self, step_id: str, kind: str) -> None: ...
    def step_finished(self, step_id: str, seconds: float, cached: bool) -> None: ...
    def message(self, text: str) -> None: ...


@dataclass
class BuildResult:
    """A finished build: the bundle at ``out`` and its manifest (the same ``Manifest`` a device reads);
    ``validation`` and ``quantization`` are the manifest's facts as the host's typed records."""

    out: Path
    target: str
    family_alias: str | None
    engine: str
    precision: str
    manifest: Manifest
    latency: dict[str, Any] | None
    seconds: float
    steps: list[dict[str, Any]] = field(default_factory=list)
    request: BuildRequest | None = None  # what was asked for (edgeify.request.BuildRequest)

    @cached_property
    def validation(self) -> ValidationReport:
        """The check step's report (every bundle has one: a pipeline's last host step is a ``check``)."""

        report = validation_of(self.manifest)
        if report is None:
            raise BundleError(f"{self.out}: the manifest has no validation report")
        return report

    @cached_property
    def quantization(self) -> Quantization:
        return quantization_of(self.manifest)


def default_out(model: str | Path, *, target: str, precision: str = "fp32",
                target_files: list[str] | tuple[str, ...] = ()) -> Path:
    """The bundle directory ``edgeify build`` writes when ``-o`` is not given: ``build/<model>-<board>-<prec>``
    (a family alias resolves to its default board)."""

    spec, _ = load_registry(target_files).resolve(target)
    return Path("build") / f"{Path(str(model).split(':')[0]).stem}-{spec.name}-{precision}"


def build(model: str | Path | BuildRequest, *, target: str | TargetSpec | None = None, out: str | Path | None = None,
          precision: str = "fp32", engine: str | None = None, calib: str | Path | None = None,
          eval: str | Path | None = None, preprocess: str | Path | None = None,
          input_shapes: list[str] | None = None, target_files: list[str] | tuple[str, ...] = (),
          max_accuracy_drop: float | None = None, use_cache: bool = True, measure_latency: bool = True,
          observer: BuildObserver | None = None, io_dtype: str = "float32",
          trust_source: bool = False, labels: str | Path | None = None) -> BuildResult:
    """Build ``model`` for ``target`` at ``precision`` into the bundle directory ``out``.

    ``model`` may also be a whole ``BuildRequest`` (``edgeify.request``), e.g. with training data or step
    options the keywords do not cover; the keywords build exactly such a request (pass one or the other).

    Trusted models only: a PyTorch source runs code on this machine (``module.py:factory`` imports your file,
    TorchScript runs its own code); a ``.pt2`` that needs full unpickling is refused unless ``trust_source``.

    ``io_dtype``: the dtype callers feed and receive; ``int8`` (int8 I/O, quantized with the scale and zero
    point recorded in the manifest) only for ``int8`` builds on engines that list it (TFLite).
    """

    if isinstance(model, BuildRequest):
        if target is not None or out is not None:
            raise UsageError("build(request, ...): the request carries target and out; pass a request or keywords",
                             hint="use request.model_copy(update={...}) to change a request")
        return run_build(model, observer)
    if target is None or out is None:
        raise UsageError("build() needs target= and out=", hint='build("model.onnx", target="x86", out="build/m")')
    request = BuildRequest(
        model=str(model), target=target, out=str(out), precision=precision, engine=engine,
        data=DataSets(calibration=calib, evaluation=eval, preprocess=preprocess, labels=labels),
        budgets=Budgets(max_accuracy_drop=max_accuracy_drop), input_shapes=tuple(input_shapes or ()),
        target_files=tuple(target_files), io_dtype=io_dtype, trust_source=trust_source, use_cache=use_cache,
        measure_latency=measure_latency)
    return run_build(request, observer)


def run_build(request: BuildRequest, observer: BuildObserver | None = None) -> BuildResult:
    """Run one ``BuildRequest``: resolve the pipeline, run the steps (cached), check, publish the bundle."""

    req = request
    model, target, precision, engine, io_dtype = req.model, req.target, req.precision, req.engine, req.io_dtype
    calib, eval, preprocess = req.data.calibration, req.data.evaluation, req.data.preprocess
    if req.out is None:
        raise UsageError("the build request has no out directory", hint="set BuildRequest(out=...)")
    obs = observer or _Silent()
    t0 = time.perf_counter()
    if isinstance(target, str):
        spec, family = load_registry(req.target_files).resolve(target)
    else:  # an already-resolved spec, e.g. a variant `edgeify optimize` derives from a registered target
        spec, family = target, None
    pipeline = resolve(spec, engine, precision)
    eng_name = pipeline.engine
    if precision in ("int8", "int16x8") and calib is None:
        raise DataError(f"--precision {precision} is static quantization and needs calibration data ({spec.name})",
                        hint="pass --calib data.npz (a few hundred representative inputs), "
                             "or use --precision int8-dynamic")
    if io_dtype not in spec.engines[eng_name].io_dtypes or (io_dtype != "float32" and precision != "int8"):
        raise TargetError(f"--io-dtype {io_dtype} is not available for {precision} with engine {eng_name!r} on "
                          f"{spec.name}", hint="int8 I/O needs --precision int8 and an engine that offers it "
                                               "(the TFLite targets); omit --io-dtype for float32 I/O")
    for flag, p in (("--calib", calib), ("--eval", eval), ("--preprocess", preprocess),
                    ("--train", _train_file(req.data.train))):
        if p is not None and not Path(p).exists():
            raise DataError(f"{flag} {p}: not found", hint=f"{flag} takes a .npz, a .npy or an image folder")
    out = bundle_mod.check_output(req.out)  # before any step: a bad -o must not cost a whole build
    if req.use_cache:
        ensure_writable_dir(cache_dir(), "step cache")
    source = open_source(str(model), list(req.input_shapes) or None, trust_source=req.trust_source)
    class_labels = labels_mod.resolve(model, req.data.labels)  # --labels FILE, else labels.txt beside the model
    pre = preflight(source, calib, eval, preprocess, obs.message)  # signature, --input-shape, data: before steps
    staging = bundle_mod.staging_dir_for(out)
    cache = StepCache(cache_dir(), enabled=req.use_cache)
    eng_spec = spec.engines[eng_name]
    if req.engine_options:  # the request's engine load options over the target's (the adapter validates them)
        eng_spec = eng_spec.model_copy(update={"options": {**eng_spec.options, **req.engine_options}})
    ctx = BuildContext(source=source, target=spec, engine_name=eng_name, engine=eng_spec,
                       precision=precision, work_dir=staging / "work", max_accuracy_drop=req.max_accuracy_drop,
                       progress=obs.message, io_dtype=io_dtype, request=req)
    records: list[dict[str, Any]] = []
    device_steps: list[dict[str, Any]] = []  # where = "device": recorded for the device, never run here
    tools: dict[str, str] = {}
    outputs: dict[str | None, Any] = {}
    try:
        with sigterm_as_interrupt(), vendor_telemetry_off():
            ctx.work_dir.mkdir(parents=True)
            transforms = source_transforms.run(ctx, obs, records, tools)  # e.g. compress: a new ctx.source
            source = ctx.source
            for step in pipeline.steps:
                if step.where == "device":  # e.g. the TensorRT engine: deploy/bench runs it on the device
                    device_steps.append(step.describe())
                    continue
                impl = step_class(step.kind)(step.config)
                tools.update(impl.tool_versions())
                if impl.validates or impl.uses_calibration:
                    _load_data(ctx, outputs, calib, eval, preprocess, load_dataset)
                inp = outputs.get(step.input)
                obs.step_started(step.id, step.kind)
                ts = time.perf_counter()
                key = impl.cache_key(ctx, inp.digest if inp is not None else source.digest)
                art = cache.get(key) if impl.cacheable else None
                cached = art is not None
                if art is None:
                    step_dir = ctx.work_dir / step.id
                    step_dir.mkdir()
                    art = impl.run(ctx, inp, step_dir)
                    if impl.cacheable:
                        art = cache.put(key, art)
                secs = time.perf_counter() - ts
                obs.step_finished(step.id, secs, cached)
                outputs[step.id] = art
                if art.engine_min_version:  # what this artifact's ops need (e.g. TFLite op versions)
                    ctx.engine = ctx.engine.model_copy(update={"min_version": art.engine_min_version})
                records.append({**step.describe(), "cache_key": key if impl.cacheable else None,
                                "cached": cached, "seconds": round(secs, 3), "tools": impl.tool_versions()})
            final = outputs[[s for s in pipeline.steps if s.where != "device"][-1].id]
            if ctx.calib is None and ctx.eval is None and (calib or eval):
                _load_data(ctx, outputs, calib, eval, preprocess, load_dataset)
            final = source_transforms.finish(transforms, ctx, final)
            dest = staging / "bundle"
            fixed = fixed_dims(pre, [t.to_dict() for t in final.signature.inputs], spec.name)
            for f in fixed:
                obs.message(describe_fixed(f))
            if class_labels is not None:
                labels_mod.check_count(class_labels, [t.to_dict() for t in final.signature.outputs])
                obs.message(f"labels: {len(class_labels.names)} from {class_labels.origin}"
                            + (" (found next to the model; --labels FILE picks another)" if class_labels.found
                               else ""))
            manifest = bundle_mod.assemble(dest, ctx, final, steps=records, tools=tools, device_steps=device_steps,
                                           fixed_dims=fixed,
                                           labels=list(class_labels.names) if class_labels else None)
            latency = None
            if req.measure_latency and device_steps:  # e.g. a TensorRT engine: it only exists on the device
                latency = {"error": "the engine is built on the device: measure it there with "
                                    "`edgeify bench BUNDLE --device NAME`"}
            elif req.measure_latency:
                obs.message("measuring local latency")
                latency = quick_latency(dest)
            bundle_mod.write_report(dest, manifest, latency)
            shutil.rmtree(ctx.work_dir, ignore_errors=True)
            bundle_mod.publish(dest, out)
    except KeyboardInterrupt:
        raise InterruptedBuild(f"build interrupted; nothing was written to {out}") from None
    except OSError as exc:
        if no_space(exc):  # before the staging directory is removed: it tells how much was written
            raise no_space_error(exc, out, staging, source.path) from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BuildResult(out=out, target=spec.name, family_alias=family, engine=eng_name, precision=precision,
                       manifest=manifest, latency=latency, seconds=time.perf_counter() - t0, steps=records,
                       request=req)


def _train_file(train: str | None) -> str | None:
    """The --train path to check for existence (None for a loader reference ``pkg.mod:factory``)."""

    return None if train is None or is_loader_ref(train) else train


def no_space(exc: OSError) -> bool:
    import errno

    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def no_space_error(exc: OSError, out: Path, staging: Path, model: Path) -> NoSpaceError:
    """ENOSPC/EDQUOT while building for ``-o out``: the path, what was written, what is free, about what it needs
    (the staging directory holds the steps' outputs and the bundle: about twice the model's size)."""
    written = 0
    for root, _dirs, files in os.walk(staging):
        for f in files:
            with contextlib.suppress(OSError):
                written += os.lstat(os.path.join(root, f)).st_size
    try:
        st = os.statvfs(staging.parent)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = 0
    need = max(written + (1 << 20), 2 * model.stat().st_size)
    mib = 1 << 20
    return NoSpaceError(f"no space left on the filesystem of -o {out} ({exc.strerror}): the build needs about "
                        f"{need / mib:.1f} MiB there (staging and bundle; {written / mib:.1f} MiB were written "
                        f"when it ran full), {free / mib:.1f} MiB are free; nothing was written to {out}",
                        hint=f"free space there (df -h {staging.parent}), or pass -o on a bigger disk")


def _load_data(ctx, outputs, calib, eval, preprocess, load_dataset) -> None:
    if ctx.calib is not None or ctx.eval is not None:
        return

    export = next((a for a in outputs.values() if a is not None and a.signature.inputs), None)
    if export is None:
        return
    sig = list(export.signature.inputs)
    classes = n_classes(list(export.signature.outputs))
    if calib is not None:
        ctx.calib = load_dataset(calib, sig, purpose="calibration", preprocess=preprocess, n_classes=classes)
    if eval is not None:
        ctx.eval = load_dataset(eval, sig, purpose="evaluation", need_labels=True, preprocess=preprocess,
                                n_classes=classes)


def quick_latency(bundle_dir: Path) -> dict[str, Any] | None:
    """A short local benchmark for a bundle's report (the real one is `edgeify bench`); ``{"error": ...}`` when
    it cannot run (the build itself succeeded). Also used by ``edgeify build --ladder``."""

    quick = BenchSettings(warmup=3, runs=20, min_duration_s=0.3, max_duration_s=20)
    try:
        res = bench_local(bundle_dir, quick).to_dict()  # the bench orchestrator's local path, not the fleet layer
    except Exception as exc:  # the report says why; the build itself succeeded
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {k: res.get(k) for k in ("latency_ms", "throughput_ips", "load_ms", "peak_rss_mb", "protocol")}


def manifest_json(result: BuildResult) -> str:
    return json.dumps(result.manifest.raw, indent=2)
