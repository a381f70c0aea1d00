"""Bundles read by deploy and remote bench refuse symbolic links; engine options from a bundle's manifest are
allow-listed before they reach the engine (issue 11.9). Real bundles, real ONNX Runtime, the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import edgeify_runtime as er
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "ssh"))
import sshlab  # the tiny real bundles of the SSH tests


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    return sshlab.make_bundle(tmp_path / "b" / "model", seed=5)


def _edgeify(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGEIFY_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "edgeify", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_deploy_refuses_a_bundle_whose_model_is_a_symlink(bundle: Path, tmp_path: Path) -> None:
    from edgeify.deploy.deployer import LocalBundle
    from edgeify.errors import BundleError

    secret = tmp_path / "id_ed25519"
    secret.write_bytes((bundle / "model.onnx").read_bytes())  # same bytes: the sha256 check alone would pass
    (bundle / "model.onnx").unlink()
    (bundle / "model.onnx").symlink_to(secret)
    with pytest.raises(BundleError) as exc:
        LocalBundle.read(bundle)
    assert exc.value.exit_code == 12 and "symbolic link" in exc.value.message and "model.onnx" in exc.value.message
    # the CLI: exit 12 before any connection (the device's address is never contacted)
    home = tmp_path / "home"
    add = _edgeify(home, "devices", "add", "far", "--host", "10.200.0.250", "--target", "x86-avx2")
    assert add.returncode == 0, add.stderr
    dep = _edgeify(home, "deploy", str(bundle), "--device", "far")
    assert dep.returncode == 12, dep.stderr
    assert "symbolic link" in dep.stderr and "fix:" in dep.stderr and "Traceback" not in dep.stderr


def test_a_symlinked_directory_inside_the_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    from edgeify.deploy.deployer import LocalBundle
    from edgeify.errors import BundleError

    real = tmp_path / "elsewhere"
    real.mkdir()
    shutil.move(str(bundle / "model.onnx"), real / "model.onnx")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"] = {"sub/model.onnx": manifest["files"]["model.onnx"]}
    manifest["engine"]["artifact"] = "sub/model.onnx"
    from edgeify_runtime.manifest import files_digest

    manifest["bundle_digest"] = files_digest(manifest["files"])
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    (bundle / "sub").symlink_to(real, target_is_directory=True)
    with pytest.raises(BundleError, match="symbolic link"):
        LocalBundle.read(bundle)


def _with_options(bundle: Path, options: dict) -> Path:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["engine"]["options"] = options
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


@pytest.mark.parametrize(("options", "needle"), [
    ({"provider_options": [{"library_path": "/tmp/evil.so"}]}, "'provider_options' (not an option a bundle may set)"),
    ({"session_config": {"session.custom_op_library": "/tmp/evil.so"}}, "session_config="),
    ({"providers": ["/tmp/libevil.so"]}, "providers="),
    ({"graph_optimization_level": "turbo"}, "graph_optimization_level='turbo'"),
    ({"threads": 0}, "threads='0'"),
])
def test_engine_options_outside_the_allow_list_are_refused(bundle: Path, options: dict, needle: str) -> None:
    _with_options(bundle, options)
    with pytest.raises(er.BundleError) as exc:
        er.load(bundle)
    assert exc.value.exit_code == 12 and needle in exc.value.message and "may set only" in exc.value.hint


def test_allow_listed_runtime_settings_reach_the_engine(bundle: Path) -> None:
    _with_options(bundle, {"threads": 1, "graph_optimization_level": "basic", "execution_mode": "parallel",
                           "providers": ["CPUExecutionProvider"], "session_config": {"session.x64quantprecision": "1"}})
    with er.load(bundle) as model:
        assert model.threads == 1 and model.accelerator == "CPUExecutionProvider"
        assert model.run({"x": [[0.0] * 16]})["y"].shape == (1, 4)
    with er.load(bundle, threads=2) as model:  # the caller's explicit threads win over the bundle's
        assert model.threads == 2
