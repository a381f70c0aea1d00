"""``edgeify optimize --device NAME`` over SSH to a real loopback sshd device: every candidate deployed and
benchmarked there by the agent, results stored under the run id with the device's name."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from edgeify.deploy.inventory import Inventory
from sshtest import device_for, run_cli

pytestmark = pytest.mark.ssh
REPO = Path(__file__).resolve().parents[2]


def test_optimize_over_ssh(env, lab, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("edgeify_outlier_ssh", REPO / "examples/outlier/make_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    paths = mod.make(tmp_path / "model")
    from edgeify.optimize.autotarget import choose_target
    from edgeify.optimize.space import DeviceFacts
    from edgeify.targets import load_registry

    # the loopback device is this machine: declare it as the board its CPU fits (x86-avx2 on a Zen 3, x86-avx512
    # on an AVX-512 VNNI CPU), as `edgeify devices add` users do; a wrong declaration is the second case below
    fits = choose_target(load_registry(), DeviceFacts.local())[0].name
    inv = Inventory(env.devices_file)
    inv.add(device_for(lab.devices["dev-b"], name="opt-dev", workdir=tmp_path / "device", target=fits))
    inv.add(device_for(lab.devices["dev-b"], name="opt-wrong", workdir=tmp_path / "device-w", target="rpi5"))
    inv.save()
    wrong = run_cli("optimize", str(paths["model"]), "--target", "auto", "--device", "opt-wrong",
                    "--engine", "onnxruntime", "--precision", "fp32", "-o", str(tmp_path / "never"), timeout=300)
    assert wrong.returncode == 3, wrong.stderr[-3000:]
    assert f"fits {fits}" in wrong.stderr and "'rpi5'" in wrong.stderr and "fix:" in wrong.stderr
    assert not (tmp_path / "never").exists()  # refused before building anything
    out = tmp_path / "best"
    proc = run_cli("optimize", str(paths["model"]), "--target", "auto", "--device", "opt-dev",
                   "--engine", "onnxruntime", "--precision", "fp32", "--max-time", "5m", "-o", str(out),
                   "--format", "json", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    data = json.loads(proc.stdout)
    assert data["device"] == "opt-dev" and data["chosen"]["engine"] == "onnxruntime"
    # --target auto over SSH: the board from the device's own fingerprint (this x86 CPU), and why
    assert data["target"].startswith("x86-") and "opt-dev" in data["target_reason"]
    assert "device opt-dev:" in proc.stderr  # the device's own fingerprint replaced the spec's guess
    from edgeify.results import open_store

    with open_store() as st:
        stored = st.query(run_id=data["run_id"], limit=100)
    assert stored and {r.device for r in stored} == {"opt-dev"}
    assert all(r.bundle and r.bundle.startswith(str(tmp_path / "device")) for r in stored)  # ran on the device
    assert json.loads((out / "manifest.json").read_text())["optimize"]["device"] == "opt-dev"
