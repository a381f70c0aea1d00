"""Bundles checked before they reach a device (issue 24, items 6 and 7), over LocalTransport (this machine as the
device, the same deployer and device-side programs as over SSH): a manifest the runtime would refuse at load
time (an engine name that is a path, an engine option off the allow-list, a malformed signature) is refused on
the host with exit 12 before anything is sent; a deploy the device refuses leaves no trace in ``bundles/``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "ssh"))
import sshlab


def _site(tmp: Path) -> Any:
    from edgeify.deploy.local import LocalTransport
    from edgeify.deploy.site import DeviceSite

    # runtime_path None: the runtime zip goes into the work directory, as on a remote device
    return DeviceSite(LocalTransport("dev"), name="dev", python=[sys.executable], workdir=str(tmp / "device"))


def _edit_manifest(bundle: Path, edit: Any) -> None:
    path = bundle / "manifest.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))  # the files table (and so bundle_digest) is unchanged


def _set(section: str, key: str, value: Any) -> Any:
    return lambda doc: doc[section].__setitem__(key, value)


@pytest.mark.parametrize(("edit", "needle"), [
    (_set("engine", "name", "../../../tmp/x"), "engine name"),
    (_set("engine", "options", {"session_config": {"session.optimized_model_filepath": "/tmp/x"}}),
     "session.optimized_model_filepath"),
    (_set("engine", "options", {"providers": ["CPUExecutionProvider; rm -rf /"]}), "providers"),
    (_set("engine", "options", {"threads": "all"}), "threads"),
    (lambda doc: doc["inputs"][0].__setitem__("dtype", "evil"), "dtype"),
    (lambda doc: doc["inputs"][0].__setitem__("shape", [-3, 16]), "shape"),
    (lambda doc: doc.__setitem__("inputs", []), "inputs"),
])
def test_a_manifest_the_runtime_refuses_is_refused_before_anything_is_sent(tmp_path: Path, edit: Any,
                                                                          needle: str) -> None:
    from edgeify.deploy.deployer import deploy
    from edgeify.errors import BundleError

    bundle = sshlab.make_bundle(tmp_path / "b", seed=3)
    _edit_manifest(bundle, edit)
    with pytest.raises(BundleError) as info:
        deploy(_site(tmp_path), bundle, name="evil")
    assert info.value.exit_code == 12
    assert needle in info.value.message, info.value.message
    assert not (tmp_path / "device").exists()  # nothing was sent: not even the runtime


def test_the_cli_refuses_it_with_exit_12(tmp_path: Path) -> None:
    import subprocess

    bundle = sshlab.make_bundle(tmp_path / "b", seed=3)
    _edit_manifest(bundle, _set("engine", "name", "../../../tmp/x"))
    (tmp_path / "home" / "config").mkdir(parents=True)
    # a device nobody can reach: the refusal must come before any connection is tried
    (tmp_path / "home" / "config" / "devices.toml").write_text(
        '[devices.dev]\nhost = "127.0.0.1"\nport = 9\nuser = "nobody"\ntarget = "x86-avx2"\n')
    run = subprocess.run([sys.executable, "-m", "edgeify", "deploy", str(bundle), "--device", "dev"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "EDGEIFY_HOME": str(tmp_path / "home")})
    assert run.returncode == 12, run.stdout + run.stderr
    assert "engine name" in run.stdout + run.stderr


def test_a_refused_deploy_leaves_no_lock_behind(tmp_path: Path) -> None:
    from edgeify.deploy.deployer import deploy, status
    from edgeify.errors import BundleError

    bundle = sshlab.make_bundle(tmp_path / "b", seed=4)
    model = bundle / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF  # same size, another sha256: the device refuses it at install
    model.write_bytes(bytes(data))
    site = _site(tmp_path)
    with pytest.raises(BundleError):
        deploy(site, bundle, name="gemm")
    bundles = tmp_path / "device" / "bundles"
    assert not (bundles / "gemm").exists(), sorted(p.name for p in (bundles / "gemm").iterdir())
    assert "gemm" not in status(site)["bundles"]
    # a good deploy of that name afterwards installs, and status shows it
    good = sshlab.make_bundle(tmp_path / "good", seed=4)
    assert deploy(site, good, name="gemm").status == "installed"
    assert status(site)["bundles"]["gemm"]["current"]["digest"]
