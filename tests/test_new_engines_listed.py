"""Issue 26's two engines where a user looks for them (no builds: fast): ``edgeify engines`` lists ExecuTorch
(built in) and ncnn (from the ``edgeify-ncnn`` plugin), ``optimize``'s search space for rpi5 has both, and the
runtime zip the deployer copies to a device carries the plugin's device half, found there by its entry point."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from _kit import run_cli
from edgeify.deploy.runtime_zip import runtime_package
from edgeify.optimize.space import DeviceFacts, build_space
from edgeify.targets import load_registry

pytest.importorskip("executorch")
pytest.importorskip("edgeify_ncnn")

PI5 = DeviceFacts(arch="aarch64", cpu_model="Cortex-A76", physical_cores=4, flags=("fp", "asimd", "asimddp"))


def test_edgeify_engines_lists_executorch_built_in_and_ncnn_from_its_plugin() -> None:
    res = run_cli("engines", "--format", "json")
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["executorch"]["distribution"] == "edgeify" and rows["executorch"]["available"] is True
    assert rows["ncnn"]["distribution"] == "edgeify-ncnn" and rows["ncnn"]["available"] is True


def test_optimize_candidates_for_rpi5_include_executorch_and_ncnn() -> None:
    spec = load_registry(user_dir=Path("/nonexistent")).get("rpi5")
    space = build_space(spec, PI5, has_calib=True)
    plans = {(a.engine, a.precision) for a in space.artifacts}
    assert {("executorch", "fp32"), ("executorch", "int8"), ("ncnn", "fp32")} <= plans, sorted(plans)
    assert ("ncnn", "int8") not in plans  # no ncnn calibration tool in the wheels (docs/engines.md)
    assert space.settings["executorch"] and space.settings["ncnn"]
    # the ncnn adapter's tuning axis reaches the settings grid
    assert {s.options.get("light_mode") for s in space.settings["ncnn"]} == {True, False}
    without_calib = {(a.engine, a.precision) for a in build_space(spec, PI5, has_calib=False).artifacts}
    assert ("executorch", "fp32") in without_calib and ("executorch", "int8") not in without_calib


def test_the_runtime_zip_carries_the_plugins_device_half(tmp_path: Path) -> None:
    rt = runtime_package()
    with zipfile.ZipFile(rt.path) as zf:
        names = set(zf.namelist())
        eps = zf.read(f"edgeify_ncnn-{version('edgeify-ncnn')}.dist-info/entry_points.txt").decode()
    assert "edgeify_ncnn_runtime/adapter.py" in names and "edgeify_runtime/bench.py" in names
    assert not any(n.startswith("edgeify_ncnn/") for n in names)  # the host half (pnnx, torch) stays home
    assert eps == "[edgeify_runtime.engines]\nncnn = edgeify_ncnn_runtime.adapter:NcnnAdapter\n"
    # a Python with no site-packages (-S) and only the zip on its path finds the plugin's adapter by entry point
    code = ("import json, edgeify_runtime.engines as e, edgeify_ncnn_runtime as p; "
            "print(json.dumps([[n for n, _, d in e.entry_points(e.GROUP)], p.__file__]))")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(rt.path)}, cwd=tmp_path, check=True)
    found, plugin_file = json.loads(out.stdout)
    assert "ncnn" in found and plugin_file.startswith(str(rt.path))
