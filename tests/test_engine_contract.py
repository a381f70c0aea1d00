"""The engine contract suite: every registered engine (entry points ``edgeify_runtime.engines`` and
``edgeify.engines``) passes it, so a plugin that registers gets these tests by registering.

Per engine: the declared contract (options, tuning axes, CPU placement, hooks, ``available()``) is consistent;
where the engine is installed, a tiny PyTorch model is built for it with ``edgeify.build`` (the target file that
offers it, fp32), then load -> run -> parity with the source -> options round trip (an unknown option refused, from
the manifest and from ``load``) -> per-op profile (the common record) -> intermediate-tensor dump -> per-op parity
with the source ONNX. An engine that cannot be installed here (TensorRT: no GPU) is checked for its declared
contract and for its actionable missing-engine error, never skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _kit import run_cli
from edgeify_runtime.engines import EngineConflictError, Option, adapter_class, check_unique, create_adapter, registry
from edgeify_runtime.errors import BundleError, EngineMissingError

ENGINES = sorted(registry())
BUILTIN = {"onnxruntime", "openvino", "litert", "tensorrt"}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny PyTorch program (.pt2, Linear 16->4 + ReLU, batch 1), its ONNX export and its reference output."""
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.fc(x))

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("engine-contract")
    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
    model = Tiny().eval()
    ep = torch.export.export(model, (torch.from_numpy(x),))
    torch.export.save(ep, str(out / "tiny.pt2"))
    torch.onnx.export(ep, (), str(out / "tiny.onnx"), dynamo=True, external_data=False, input_names=["x"],
                      output_names=["y"])
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    return {"pt2": out / "tiny.pt2", "onnx": out / "tiny.onnx", "x": x, "want": want, "dir": out}


def _target_for(engine: str) -> tuple[str, str] | None:
    """(target, engine entry) of the first target file that offers ``engine`` fp32 with every step on the host."""
    from edgeify.pipeline import resolve
    from edgeify.targets import load_registry

    for spec in load_registry():
        for entry, eng in spec.engines.items():
            if eng.runtime != engine or "fp32" not in eng.precisions or "fp32" not in spec.precisions:
                continue
            if not any(s.where == "device" for s in resolve(spec, entry, "fp32").steps):
                return spec.name, entry
    return None


# -- the declared contract: every registered engine, installed or not ---------------------------------------------
@pytest.mark.parametrize("name", ENGINES)
def test_declared_contract(name: str) -> None:
    from edgeify.engines import host_engines

    cls = adapter_class(name)
    info = registry()[name]
    assert cls.name == name and cls.modules and (cls.pip or cls.install_hint) and info.distribution
    if name in host_engines():
        assert host_engines()[name].adapter is cls  # host and device read one record
    assert cls.option_keys == frozenset(cls.option_specs)
    assert all(isinstance(o, Option) for o in cls.option_specs.values())
    for axis in cls.tuning_axes:  # what optimize varies is an option a bundle may carry, with allowed values
        spec = cls.option_specs[axis.option]
        assert spec.check is not None and axis.values and all(spec.check(v) for v in axis.values), axis
        if axis.via is not None:
            assert axis.via[0] in cls.option_keys
    assert set(cls.cpu_placement) <= cls.option_keys
    with pytest.raises(BundleError, match="not an option a bundle may set"):
        cls.check_bundle_options({"no_such_option_for_edgeify_tests": 1})
    for key, opt in cls.option_specs.items():  # load-only options (paths, libraries) never come from a bundle
        if not opt.bundle:
            with pytest.raises(BundleError):
                cls.check_bundle_options({key: "x"})
    ok, reason = cls.available()
    assert isinstance(ok, bool) and reason
    if not ok:  # the actionable missing-engine error
        command = info.install_command
        assert command in reason
        with pytest.raises(EngineMissingError) as exc:
            create_adapter(name)
        assert exc.value.hint == command and command in str(exc.value)


# -- build -> load -> run -> options -> profile -> dump -> parity: every installed engine -------------------------
@pytest.mark.parametrize("name", ENGINES)
def test_engine_round_trip(name: str, source: dict[str, Any], tmp_path: Path) -> None:
    import edgeify
    import edgeify_runtime as er
    from edgeify.parity_ops import compare_ops
    from edgeify_runtime.manifest import Manifest
    from edgeify_runtime.profile import Profile, profile_bundle

    cls = adapter_class(name)
    ok, _ = cls.available()
    if not ok:  # not installable here: what a user meets is the install command, from load too
        assert name not in er.available_engines()
        with pytest.raises(EngineMissingError, match="not installed"):
            create_adapter(name, "1.0")
        return
    where = _target_for(name)
    assert where is not None, f"no target file offers {name} fp32 with a host-side pipeline"
    bundle = tmp_path / "bundle"
    edgeify.build(str(source["pt2"]), target=where[0], out=bundle, engine=where[1], measure_latency=False)
    m = Manifest.read(bundle)
    assert m.engine.name == name
    feeds = {m.inputs[0].name: source["x"]}

    # load -> run -> parity with the source
    with er.load(bundle) as model:
        assert model.engine_name == name and model.accelerator
        got = next(iter(model.run(feeds).values()))
    np.testing.assert_allclose(got, source["want"], rtol=1e-4, atol=1e-4)

    # options: what the bundle carries passes the allow-list; unknown options are refused from both sides
    cls.check_bundle_options(m.engine.options)
    with pytest.raises(BundleError, match="does not understand"):
        er.load(bundle, options={"no_such_option_for_edgeify_tests": 1})
    edited = tmp_path / "edited"
    shutil.copytree(bundle, edited)
    raw = json.loads((edited / "manifest.json").read_text())
    raw["engine"]["options"]["no_such_option_for_edgeify_tests"] = 1
    (edited / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="refused"):
        er.load(edited)
    if cls.option_specs.get("threads") is not None and cls.option_specs["threads"].bundle:
        raw["engine"]["options"] = {**m.engine.options, "threads": 1}
        (edited / "manifest.json").write_text(json.dumps(raw))
        with er.load(edited) as model:
            assert model.threads == 1

    # per-op profile: the common record
    if cls.profile_source:
        prof = profile_bundle(bundle, feeds=feeds, threads=1, runs=2, warmup=1)
        assert prof.engine == name and prof.ops and prof.placement.intended
        assert Profile.from_dict(json.loads(json.dumps(prof.to_dict()))) == prof
    else:
        with pytest.raises(BundleError, match="no profiler"):
            profile_bundle(bundle, feeds=feeds, runs=1)

    # intermediate tensors, then per-op parity with the source ONNX
    artifact = bundle / m.engine.artifact
    if cls.can_dump:
        dumped = create_adapter(name).dump_intermediates(artifact, feeds, frozenset({"y"}), "fp32")
        arrays = [np.asarray(v) for v in dumped.values()]
        assert any(a.shape == source["want"].shape and np.allclose(a, source["want"], atol=1e-4) for a in arrays), \
            f"{name}: the dump has no tensor equal to the model's output ({sorted(dumped)[:10]})"
        parity = compare_ops(source["onnx"], artifact, name, "fp32", feeds)
        assert parity.divergent == (), parity.table()
    else:
        with pytest.raises(BundleError):
            create_adapter(name).dump_intermediates(artifact, feeds)
        assert "no per-op comparison" in str(compare_ops(source["onnx"], artifact, name, "fp32", feeds).note)


# -- registration --------------------------------------------------------------------------------------------------
def test_builtins_register_by_entry_points_in_both_groups() -> None:
    from edgeify.engines import host_engines

    assert set(registry()) >= BUILTIN and set(host_engines()) >= BUILTIN
    assert {registry()[n].distribution for n in BUILTIN} == {"edgeify-runtime"}
    with pytest.raises(TypeError):
        registry()["x"] = registry()["onnxruntime"]  # type: ignore[index]


def test_one_name_from_two_distributions_is_an_error_naming_both() -> None:
    with pytest.raises(EngineConflictError) as exc:
        check_unique([("fast", "a:Fast", "edgeify-fast"), ("fast", "b:Fast", "other-fast")], "engine")
    assert "edgeify-fast" in str(exc.value) and "other-fast" in str(exc.value)
    assert isinstance(exc.value, EngineMissingError) and exc.value.exit_code == 11


_PLUGIN = '''
from edgeify_runtime.engines.base import EngineAdapter, Option, is_bool


class ToyAdapter(EngineAdapter):
    name = "toy"
    modules = ("json",)
    pip = "edgeify-toy"
    option_specs = {"fast": Option(is_bool, "go fast")}
    target_families = ("x86",)


class ClashAdapter(EngineAdapter):
    name = "onnxruntime"
    modules = ("json",)
    pip = "edgeify-clash"
'''


def _dist(root: Path, name: str, entries: dict[str, list[str]]) -> None:
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("".join(f"[{group}]\n" + "\n".join(lines) + "\n\n"
                                                  for group, lines in entries.items()))


def test_a_plugin_registers_like_the_builtins(tmp_path: Path) -> None:
    """A third-party distribution on sys.path: its adapter is listed by `edgeify engines`, serves its declared
    family in `edgeify targets`; a second distribution registering a built-in's name is refused, naming both."""
    (tmp_path / "edgeify_toy.py").write_text(_PLUGIN)
    _dist(tmp_path, "edgeify-toy", {"edgeify_runtime.engines": ["toy = edgeify_toy:ToyAdapter"],
                                    "edgeify.engines": ["toy = edgeify_toy:ToyAdapter"]})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    r = run_cli("engines", "--format", "json", env=env)
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert set(next(iter(rows.values()))) == {"name", "distribution", "available", "reason"}
    assert set(rows) >= BUILTIN
    assert rows["toy"]["distribution"] == "edgeify-toy" and rows["toy"]["available"] is True
    code = textwrap.dedent("""
        import json
        from edgeify.targets import load_registry
        from edgeify_runtime.engines import create_adapter
        from edgeify.engines import engines_for_target
        spec, _ = load_registry().resolve("x86-avx2")
        print(json.dumps({"x86": sorted(engines_for_target(spec)), "toy": sorted(create_adapter("toy").option_keys)}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert "toy" in seen["x86"] and "onnxruntime" in seen["x86"] and seen["toy"] == ["fast"]

    clash = tmp_path / "clash"
    shutil.copy(tmp_path / "edgeify_toy.py", clash.mkdir() or clash / "edgeify_toy.py")
    _dist(clash, "edgeify-clash", {"edgeify_runtime.engines": ["onnxruntime = edgeify_toy:ClashAdapter"]})
    out = subprocess.run([sys.executable, "-c", "import edgeify_runtime.engines as e; e.registry()"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(clash)})
    assert out.returncode != 0 and "EngineConflictError" in out.stderr
    assert "edgeify-runtime" in out.stderr and "edgeify-clash" in out.stderr


def test_a_broken_plugin_adapter_is_refused_by_name_and_the_others_still_work(tmp_path: Path) -> None:
    """A plugin whose device half cannot be imported (deployed without its dependencies): the device's registry
    still serves every other engine; the broken one is listed unavailable with the import error, and using it is
    an EngineMissingError naming its distribution."""
    (tmp_path / "edgeify_broken.py").write_text("import no_such_engine_module_here\n")
    _dist(tmp_path, "edgeify-broken", {"edgeify_runtime.engines": ["broken = edgeify_broken:Adapter"]})
    code = textwrap.dedent("""
        import json
        from edgeify_runtime.engines import create_adapter, engine_info, engine_status, EngineMissingError
        rows = {r["name"]: r for r in engine_status()}
        try:
            engine_info("broken")
            err = None
        except EngineMissingError as exc:
            err = str(exc)
        print(json.dumps({"rows": rows, "err": err, "ort": engine_info("onnxruntime").name,
                          "load": type(create_adapter("onnxruntime")).__name__}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["ort"] == "onnxruntime" and seen["load"].endswith("Adapter")
    assert seen["rows"]["broken"]["available"] is False and seen["rows"]["broken"]["distribution"] == "edgeify-broken"
    assert "no_such_engine_module_here" in seen["rows"]["broken"]["reason"]
    assert seen["err"] and "edgeify-broken" in seen["err"] and "cannot be imported" in seen["err"]
    assert seen["rows"]["onnxruntime"]["available"] is True
