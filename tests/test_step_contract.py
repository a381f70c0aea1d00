"""The step contract suite (issue 22): every step registered in the entry-point group ``edgeify.steps`` — built-in
or third-party — gets these tests by registering (the pattern of the transport contract suite).

Per step: it declares its artifact formats; its typed config round-trips; its search space is well-formed for
every precision (each recipe's overrides validate against its own config); its facts records round-trip; and a
tiny pipeline that uses it (found generically: the first built-in target whose pipeline runs it) builds a tiny
PyTorch model, the step's facts land in the manifest's open ``facts`` and validate on read. Plus the registry and
pipeline rules: a format mismatch and a duplicate registration are ``ConfigError`` naming both sides.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from edgeify.errors import ConfigError
from edgeify.steps.base import ANY_FORMAT, SAME_FORMAT, SOURCE_MODEL, Step, StepConfig, StepSearch
from edgeify.steps.registry import facts_records, step_class, step_table

KINDS = sorted(step_table())
#: every precision a target may declare
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int8-mixed", "int8-dynamic", "int16x8")
#: the precision a contract build tries first (cheapest first; static int8 gets the tiny calibration set)
BUILD_ORDER = ("fp32", "int8-dynamic", "fp16", "int8", "int16x8", "int8-mixed", "bf16")


def test_every_builtin_step_is_registered_through_the_entry_point_group() -> None:
    builtin = {"onnx-export", "onnx-optimize", "ort-quantize", "openvino-convert", "nncf-quantize",
               "tflite-convert", "tflite-quantize", "check", "tensorrt-engine"}
    assert builtin <= set(KINDS)
    assert all(step_table()[k].distribution == "edgeify" for k in builtin)
    with pytest.raises(TypeError):  # the table is read-only: no mutable global registry
        step_table()["x"] = step_table()["check"]  # type: ignore[index]


@pytest.mark.parametrize("kind", KINDS)
def test_declares_its_formats(kind: str) -> None:
    cls = step_class(kind)
    assert issubclass(cls, Step) and cls.kind == kind
    assert cls.consumes and all(isinstance(f, str) and f for f in cls.consumes), "consumes: a tuple of formats"
    assert isinstance(cls.produces, str) and cls.produces not in (SOURCE_MODEL, ANY_FORMAT)
    for fmt in cls.consumes:
        if fmt != ANY_FORMAT:
            assert cls.accepts(fmt)
            out = cls.output_format(fmt)
            assert out == (fmt if cls.produces == SAME_FORMAT else cls.produces)


@pytest.mark.parametrize("kind", KINDS)
def test_typed_config_round_trips(kind: str) -> None:
    cls = step_class(kind)
    assert issubclass(cls.Config, StepConfig)
    cfg = cls.Config()
    again = cls.Config.model_validate(cfg.model_dump(mode="json"))
    assert again == cfg
    with pytest.raises(ValueError):  # extra="forbid": a typo in a target file is an error, never ignored
        cls.Config.model_validate({"no_such_option_xyz": 1})
    undocumented = [n for n, f in cls.Config.model_fields.items() if f.description is None and n not in _LEGACY]
    assert not undocumented or kind in _LEGACY_STEPS, f"{kind}: config fields without a description: {undocumented}"


#: config fields of the built-in steps written before descriptions were required (new steps describe every field)
_LEGACY = {"activation_type", "weight_type", "per_channel", "reduce_range", "calibration_method",
           "max_calibration_samples", "symmetric_activations", "preset", "subset_size", "fast_bias_correction",
           "opset", "min_opset", "max_opset", "dynamic_batch", "level", "slim", "compress_to_fp16"}
_LEGACY_STEPS = {"onnx-export", "onnx-optimize", "ort-quantize", "openvino-convert", "nncf-quantize",
                 "tflite-convert", "tflite-quantize", "check", "tensorrt-engine"}


@pytest.mark.parametrize("kind", KINDS)
def test_search_space_is_well_formed(kind: str) -> None:
    cls = step_class(kind)
    cfg = cls.Config().model_dump(mode="json")
    fields = set(cls.Config.model_fields)
    if cls.float_layers_option is not None:
        assert cls.float_layers_option in fields
    for precision in PRECISIONS:
        search = cls.search_space(cfg, precision, max_accuracy_drop=0.5)
        if search is None:
            continue
        assert isinstance(search, StepSearch)
        recipes = [*search.speed, *search.alternates, *([search.mixed] if search.mixed else [])]
        names = [r.name for r in recipes]
        assert len(names) == len(set(names)), f"{kind} {precision}: duplicate recipe names {names}"
        for r in recipes:  # every recipe is a valid config of this very step
            cls.Config.model_validate({**cfg, **r.config})
            assert r.config, f"{kind} {precision}: recipe {r.name!r} changes nothing"
        if search.mixed_by_layers:
            assert precision == "int8-mixed" and cls.float_layers_option is not None
        if search.keep_fp32_option is not None:
            assert search.keep_fp32_option in fields


@pytest.mark.parametrize("kind", KINDS)
def test_facts_records_are_namespaced_and_registered(kind: str) -> None:
    known = facts_records()
    for rec in step_class(kind).facts:
        ns = rec.namespace
        assert isinstance(ns, str) and ns and known[ns] is rec
        assert callable(getattr(rec, "to_dict", None)) and callable(getattr(rec, "from_dict", None))


# -- a tiny pipeline per step --------------------------------------------------------------------------------


def _case(kind: str) -> tuple[object, str, str] | None:
    """(target, engine, precision) of the first built-in target whose host pipeline runs ``kind``, else where it
    runs on the device (recorded in the manifest's device_steps), else a built-in target with ``kind`` inserted
    before its final check where the formats fit (a plugin step no built-in target uses)."""
    from edgeify.pipeline import resolve
    from edgeify.targets import load_registry

    reg = load_registry(user_dir=Path("/nonexistent"))
    if step_class(kind).transforms_source:  # runs before any pipeline, on request: the first fp32 one will do
        spec = reg.get(sorted(s.name for s in reg)[0])
        return spec.name, spec.engine_for("fp32", None)[0], "fp32"
    device = None
    candidates = []
    for spec in sorted(reg, key=lambda s: s.name):
        for eng_name, eng in spec.engines.items():
            for prec in BUILD_ORDER:
                if prec not in eng.precisions or prec not in spec.precisions:
                    continue
                steps = resolve(spec, eng_name, prec).steps
                hit = [s for s in steps if s.kind == kind]
                if hit and hit[0].where == "host":
                    return spec.name, eng_name, prec
                if hit and device is None:
                    device = (spec.name, eng_name, prec)
                candidates.append((spec, eng_name, prec))
    if device is not None:
        return device
    for spec, eng_name, prec in candidates:
        inserted = _insert_before_check(spec, eng_name, prec, kind)
        if inserted is not None:
            return inserted, eng_name, prec
    return None


def _insert_before_check(spec, eng_name: str, prec: str, kind: str):
    """``spec`` with ``kind`` wired between the final check and its input, when the formats allow it."""
    from edgeify.errors import ConfigError
    from edgeify.pipeline import resolve
    from edgeify.targets.spec import StepRef

    eng = spec.engines[eng_name]
    host = [s for s in resolve(spec, eng_name, prec).steps if s.where == "host"]
    check = host[-1]
    new = StepRef(id="contract-step", uses=kind, input=check.input, config={})
    pipeline = tuple(s.model_copy(update={"input": "contract-step"}) if s.id == check.id else s for s in eng.pipeline)
    ref_index = [s.id for s in pipeline].index(check.id)
    pipeline = (*pipeline[:ref_index], new, *pipeline[ref_index:])
    variant = spec.model_copy(update={"engines": {**spec.engines, eng_name: eng.model_copy(update={
        "pipeline": pipeline})}})
    try:
        resolve(variant, eng_name, prec)
    except ConfigError:
        return None
    return variant


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import numpy as np
    import torch

    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    model = root / "tiny.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(1, 8),)), str(model))
    rng = np.random.default_rng(0)
    calib = root / "calib.npz"
    np.savez(calib, x=rng.standard_normal((32, 8)).astype(np.float32))
    return {"model": model, "calib": calib, "root": root}


def _missing_tools(cls: type[Step]) -> list[str]:
    import importlib.metadata as md

    missing = []
    for name in cls.tools:
        try:
            md.version(name)
        except md.PackageNotFoundError:
            missing.append(name)
    return missing


_BUILT: dict[tuple[str, ...], object] = {}


@pytest.mark.parametrize("kind", KINDS)
def test_a_tiny_pipeline_using_the_step_builds(kind: str, tiny: dict[str, Path]) -> None:
    from edgeify import build
    from edgeify.request import BuildRequest, DataSets
    from edgeify.steps.facts import facts_of

    case = _case(kind)
    if case is None:
        pytest.skip(f"no built-in target uses {kind!r} and it fits before none of their checks: a plugin step "
                    "whose formats no built-in engine has brings its own target and test")
    target, engine, precision = case
    cls = step_class(kind)
    key = (getattr(target, "name", target), engine, precision,
           kind if not isinstance(target, str) or cls.transforms_source else "")
    res = _BUILT.get(key)
    if res is None:  # steps that share a pipeline (export, optimize, check) share its build
        transform = cls.transforms_source  # asked for through the request's options, trained on its train set
        data = DataSets(calibration=str(tiny["calib"]), train=str(tiny["calib"]) if transform else None)
        req = BuildRequest(model=str(tiny["model"]), target=target, out=str(tiny["root"] / "-".join(key)),
                           precision=precision, engine=engine, data=data,
                           options={kind: {}} if transform else {}, use_cache=False, measure_latency=False)
        try:
            res = _BUILT[key] = build(req)
        except Exception:
            missing = _missing_tools(cls)
            if missing:
                pytest.skip(f"{kind}: {', '.join(missing)} not installed")
            raise
    steps = {s["uses"]: s for s in res.manifest.raw["steps"]}
    on_device = kind in {s["uses"] for s in res.manifest.raw.get("device_steps") or []}
    assert kind in steps or on_device
    if on_device:
        return
    assert steps[kind]["tools"].keys() == set(cls.tools)
    facts = res.manifest.facts
    for rec in cls.facts:  # what the step recorded is in the manifest and validates with its own record
        assert rec.namespace in facts, f"{kind} declares {rec.__name__} but wrote no facts.{rec.namespace}"
        got = facts_of(res.manifest, rec)
        assert got is not None and rec.from_dict(got.to_dict()) == got


# -- the rules around the contract -----------------------------------------------------------------------------


def test_a_format_mismatch_names_both_steps(tmp_path: Path) -> None:
    from edgeify.targets import load_registry

    (tmp_path / "bad.toml").write_text('''
[[targets]]
name = "bad-formats"
extends = "x86-cpu"
status = "test: nncf-quantize wired to an ONNX file"
[targets.engines.openvino]
pipeline = [
  { id = "export", uses = "onnx-export" },
  { id = "quantize", uses = "nncf-quantize", input = "export", precisions = ["fp32", "int8"] },
  { id = "check", uses = "check", input = "quantize" },
]
''')
    with pytest.raises(ConfigError) as exc:  # refused when the file loads, before any build
        load_registry([str(tmp_path / "bad.toml")], user_dir=Path("/nonexistent"))
    msg = str(exc.value)
    assert "'quantize' (nncf-quantize)" in msg and "'export' (onnx-export)" in msg and "'onnx'" in msg


def test_two_distributions_registering_one_step_kind_is_an_error(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "edgeify_fake_steps-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: edgeify-fake-steps\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text('[edgeify.steps]\ncheck = "edgeify_fake_steps:Check"\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    step_table.cache_clear()
    try:
        with pytest.raises(ConfigError) as exc:
            step_table()
        msg = str(exc.value)
        assert "'check'" in msg and "edgeify-fake-steps" in msg and "edgeify (" in msg
    finally:
        monkeypatch.undo()
        step_table.cache_clear()
    assert "check" in step_table()


def test_a_plugin_step_with_its_own_facts_needs_no_edit_elsewhere(tmp_path: Path, tiny: dict[str, Path],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party step registered by its own distribution: found, wired into a pipeline (before a built-in
    target's check), its facts in the bundle's manifest and report, validated on read by its own record."""
    pkg = tmp_path / "edgeify_demo_step.py"
    pkg.write_text('''
from typing import ClassVar
from edgeify.steps.base import ANY_FORMAT, SAME_FORMAT, Step
from edgeify.steps.facts import StepFacts

class DemoFacts(StepFacts):
    namespace: ClassVar[str] = "demo"
    ratio: float

class Demo(Step):
    kind = "demo-step"
    consumes = (ANY_FORMAT,)
    produces = SAME_FORMAT
    facts = (DemoFacts,)

    def run(self, ctx, artifact, out_dir):
        return artifact.with_facts(artifact.format, artifact.files, demo=DemoFacts(ratio=0.25))
''')
    dist = tmp_path / "edgeify_demo_step-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: edgeify-demo-step\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[edgeify.steps]\ndemo-step = edgeify_demo_step:Demo\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for fn in (step_table, step_class, facts_records):
        fn.cache_clear()
    try:
        from edgeify.steps.base import Artifact
        from edgeify.steps.facts import read_facts

        cls = step_class("demo-step")
        assert step_table()["demo-step"].distribution == "edgeify-demo-step"
        (tmp_path / "m.onnx").write_bytes(b"x")
        art = cls(cls.Config()).run(None, Artifact("onnx", [tmp_path / "m.onnx"]), tmp_path)
        back = Artifact.from_dict(art.to_dict(), tmp_path)
        assert back == art and back.facts["demo"].ratio == 0.25
        with pytest.raises(Exception, match="demo"):  # validated by the plugin's own record on read
            read_facts({"demo": {"ratio": "not a number"}})
        from edgeify import build
        from edgeify.request import BuildRequest

        target, engine, precision = _case("demo-step")
        res = build(BuildRequest(model=str(tiny["model"]), target=target, engine=engine, precision=precision,
                                 out=str(tmp_path / "b"), use_cache=False, measure_latency=False))
        assert res.manifest.facts["demo"] == {"ratio": 0.25}
        assert "demo-step" in [s["uses"] for s in res.manifest.raw["steps"]]
        assert "- demo: ratio 0.25" in (tmp_path / "b" / "report.md").read_text()
    finally:
        monkeypatch.undo()
        sys.modules.pop("edgeify_demo_step", None)
        for fn in (step_table, step_class, facts_records):
            fn.cache_clear()
    assert "demo-step" not in step_table()
    assert importlib.util.find_spec("edgeify_demo_step") is None


def test_the_cache_key_follows_the_request_a_step_reads(tmp_path: Path) -> None:
    """A step's cache key holds the request's options for it and the digests of the data sets it names in
    ``uses_data``: a new train file or option rebuilds it, the same request hits the cache."""
    from _kit import make_gemm_onnx
    from edgeify.request import BuildRequest, DataSets
    from edgeify.sources import open_source
    from edgeify.steps.base import BuildContext
    from edgeify.targets import load_registry

    class Trains(Step):
        kind = "trains-demo"
        consumes = (ANY_FORMAT,)
        uses_data = ("train",)

    spec = load_registry(user_dir=Path("/nonexistent")).get("x86-avx2")
    eng_name, eng = spec.engine_for("fp32", None)
    src = open_source(str(make_gemm_onnx(tmp_path / "m.onnx")), None)
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    a.write_bytes(b"one")
    b.write_bytes(b"two")

    def key(**req) -> str:
        request = BuildRequest(model=str(src.path), target=spec, **req)
        ctx = BuildContext(source=src, target=spec, engine_name=eng_name, engine=eng, precision="fp32",
                           work_dir=tmp_path, request=request)
        return Trains(Trains.Config()).cache_key(ctx, "input-digest")

    base = key()
    keys = {base, key(data=DataSets(train=str(a))), key(data=DataSets(train=str(b))),
            key(options={"trains-demo": {"epochs": 2}})}
    assert len(keys) == 4
    assert key(data=DataSets(train=str(a))) == key(data=DataSets(train=str(a)))
    assert key(options={"other-step": {"x": 1}}) == base  # another step's options are not this step's input


def test_build_takes_one_request_or_its_keywords(tmp_path: Path) -> None:
    """``build(model, target=..., out=...)`` builds a ``BuildRequest``; ``build(request)`` takes one; the result
    carries it; ``engine_options`` reach the manifest's engine options."""
    from _kit import make_gemm_onnx
    from edgeify import build
    from edgeify.errors import UsageError
    from edgeify.request import BuildRequest

    model = make_gemm_onnx(tmp_path / "m.onnx")
    by_kw = build(model, target="x86-avx2", out=tmp_path / "kw", measure_latency=False)
    req = BuildRequest(model=str(model), target="x86-avx2", out=str(tmp_path / "req"), measure_latency=False,
                       engine_options={"graph_optimization_level": "basic"})
    by_req = build(req)
    assert by_req.request == req and by_kw.request is not None and by_kw.request.target == "x86-avx2"
    assert by_req.manifest.files == by_kw.manifest.files  # the same bundle payload
    assert by_req.manifest.engine.options.get("graph_optimization_level") == "basic"
    assert "graph_optimization_level" not in by_kw.manifest.engine.options
    with pytest.raises(UsageError):
        build(req, target="x86-avx2", out=tmp_path / "x")
