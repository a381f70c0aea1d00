"""`edgeify optimize --executor ray`: the candidates are built as Ray tasks on the real two-node cluster of
raylab.py and measured on this machine (the "device"); and the errors when Ray is missing or unreachable."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from _kit import run_cli
from edgeify_runtime.manifest import Manifest
from raylab import RayLab

pytestmark = pytest.mark.ray


def test_optimize_builds_candidates_on_both_nodes_and_measures_here(lab: RayLab, digits, tmp_path: Path,
                                                                    results_db: Path) -> None:
    node = lab.add_node("w-opt")
    out = tmp_path / "best"
    proc = lab.cli("optimize", str(digits["model"]), "--target", "x86-avx2", "--calib", str(digits["calib"]),
                   "--eval", str(digits["eval"]), "--max-accuracy-drop", "1", "--engine", "onnxruntime",
                   "--precision", "fp32", "--precision", "int8", "--max-time", "10m", "-o", str(out),
                   "--executor", "ray", "--ray-address", lab.address, "--format", "json",
                   env={"EDGEIFY_HOME": str(tmp_path / "home"), "EDGEIFY_RESULTS_DB": str(results_db)})
    try:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
    finally:
        lab.kill_node("w-opt")
    data = json.loads(stdout)
    cands = data["candidates"]
    # every artifact (engine, precision, recipe) was built by exactly one Ray node; two nodes shared the builds
    by_artifact = {(c["engine"], c["precision"], c["recipe"]["name"]): c["node"] for c in cands}
    assert len(by_artifact) >= 2 and all(n and n["id"] not in (None, "local") for n in by_artifact.values())
    assert {n["ip"] for n in by_artifact.values()} == {"127.0.0.1", node.ip}
    assert "Ray: building 3 candidate(s) at once" in stderr
    # measured here: the screening and full-protocol results are in this run's results store
    from edgeify.results import open_store

    with open_store() as st:
        stored = st.query(run_id=data["run_id"], limit=1000)
    assert len(stored) >= sum(1 for c in cands if c["latency_ms"]) > 0
    # the chosen bundle came back from a worker intact and is published at -o, with its optimize record
    chosen = data["chosen"]
    assert chosen and chosen["bundle"] == str(out)
    Manifest.read(out).verify_files(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["optimize"]["run_id"] == data["run_id"] and manifest["precision"] == chosen["precision"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".edgeify-")]  # work dir and staging removed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_optimize_ray_errors_unreachable_missing_and_usage(tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "best"
    base = ("optimize", str(tiny_onnx), "--target", "x86-avx2", "-o", str(out))
    # nothing listens at the address: refused at once (ray.init alone would retry for ever), nothing built
    addr = f"127.0.0.1:{_free_port()}"
    r = run_cli(*base, "--executor", "ray", "--ray-address", addr, timeout=60)
    assert r.returncode == 4, r.stderr
    assert f"cannot connect to the Ray cluster at {addr}" in r.stderr and "ray start --head" in r.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".edgeify-")]
    # an interpreter without Ray: how to install it
    blocker = tmp_path / "noray" / "sitecustomize.py"
    blocker.parent.mkdir()
    blocker.write_text("import sys\nclass _NoRay:\n    def find_spec(self, name, path=None, target=None):\n"
                       "        if name == 'ray' or name.startswith('ray.'):\n"
                       "            raise ModuleNotFoundError(\"No module named 'ray'\")\n"
                       "sys.meta_path.insert(0, _NoRay())\n")
    path = os.pathsep.join(x for x in (str(blocker.parent), os.environ.get("PYTHONPATH")) if x)
    r = run_cli(*base, "--executor", "ray", env={"PYTHONPATH": path})
    assert r.returncode == 4, r.stderr
    assert "needs Ray" in r.stderr and "pip install 'edgeify[ray]'" in r.stderr and not out.exists()
    # --ray-address without --executor ray is a usage error
    r = run_cli(*base, "--ray-address", addr)
    assert r.returncode == 2 and "--executor ray" in r.stderr
