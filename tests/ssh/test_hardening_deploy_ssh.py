"""Issue 24 items 6 and 7 over a real sshd: ``edgeify deploy`` refuses a manifest the runtime would refuse, with
exit 12 and nothing sent to the device; a deploy the device refuses (a file that fails its sha256 there) leaves
no ``bundles/<name>`` directory (its lock lives in ``locks/``) and ``devices status`` does not list it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from sshtest import run_cli

pytestmark = pytest.mark.ssh


def test_deploy_refusals_over_ssh(env, lab, workdir: Path, bundles, tmp_path: Path) -> None:
    d = lab.devices["dev-c"]
    add = run_cli("devices", "add", "pi-09", "--host", d.address, "--port", str(d.port), "--user", "root",
                  "--python", os.sys.executable, "--workdir", str(workdir), "--target", "x86-avx2")
    assert add.returncode == 0, add.stderr
    evil = tmp_path / "evil"
    shutil.copytree(bundles["v1"], evil)
    doc = json.loads((evil / "manifest.json").read_text())
    doc["engine"]["options"] = {"session_config": {"session.optimized_model_filepath": "/tmp/x"}}
    (evil / "manifest.json").write_text(json.dumps(doc))
    dep = run_cli("deploy", str(evil), "--device", "pi-09")
    assert dep.returncode == 12, dep.stdout + dep.stderr
    assert "session.optimized_model_filepath" in dep.stderr
    assert not any(workdir.iterdir())  # nothing was sent, not even the runtime

    broken = tmp_path / "broken"
    shutil.copytree(bundles["v1"], broken)
    data = bytearray((broken / "model.onnx").read_bytes())
    data[-1] ^= 0xFF  # same size, another sha256: refused by the device at install
    (broken / "model.onnx").write_bytes(bytes(data))
    dep = run_cli("deploy", str(broken), "--device", "pi-09", "--name", "gemm")
    assert dep.returncode == 12, dep.stdout + dep.stderr
    assert not (workdir / "bundles" / "gemm").exists()
    st = run_cli("devices", "status", "pi-09", "--format", "json")
    assert st.returncode == 0, st.stderr
    assert "gemm" not in json.loads(st.stdout)["bundles"]
