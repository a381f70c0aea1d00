"""A symbolic link inside a bundle is refused wherever a bundle is read on this machine (issue 11 item 9):
``Manifest.read``, ``Manifest.verify_files``, ``edgeify_runtime.load`` (even with verify=False) and a local
``edgeify bench``, with exit 12. The bundle directory itself may be a link (a device's ``current``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import edgeify_runtime
import pytest
from _kit import make_gemm_onnx, run_cli
from edgeify import build
from edgeify_runtime.errors import BundleError
from edgeify_runtime.manifest import Manifest


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("symlinks")
    out = root / "bundle"
    build(make_gemm_onnx(root / "m.onnx"), target="x86", out=out, measure_latency=False)
    return out


def _linked_copy(good: Path, tmp_path: Path, where: str) -> Path:
    bundle = tmp_path / "linked"
    shutil.copytree(good, bundle)
    secret = tmp_path / "secret.key"
    if where == "model":  # same bytes, so every sha256 still matches: only the link gives it away
        shutil.copyfile(bundle / "model.onnx", secret)
        (bundle / "model.onnx").unlink()
        (bundle / "model.onnx").symlink_to(secret)
    else:
        secret.write_text("-----BEGIN PRIVATE KEY-----")
        (bundle / "extra").symlink_to(secret)
    return bundle


@pytest.mark.parametrize("where", ["model", "extra"])
def test_symlinks_inside_a_bundle_are_refused(good_bundle: Path, tmp_path: Path, where: str) -> None:
    bundle = _linked_copy(good_bundle, tmp_path, where)
    with pytest.raises(BundleError, match="symbolic link"):
        Manifest.read(bundle)
    manifest = Manifest.read(good_bundle)
    with pytest.raises(BundleError, match="symbolic link"):
        manifest.verify_files(bundle)
    for verify in (True, False):
        with pytest.raises(BundleError, match="symbolic link"):
            edgeify_runtime.load(bundle, verify=verify)
    res = run_cli("bench", str(bundle), "--runs", "1", "--min-duration", "0", "--no-store")
    assert res.returncode == 12, res.stderr
    assert "symbolic link" in res.stderr and "fix:" in res.stderr


def test_the_bundle_directory_itself_may_be_a_link(good_bundle: Path, tmp_path: Path) -> None:
    link = tmp_path / "current"
    link.symlink_to(good_bundle)
    with edgeify_runtime.load(link) as model:
        assert model.inputs[0].name == "input"


def test_integrity_failure_says_how_to_rebuild(good_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "damaged"
    shutil.copytree(good_bundle, bundle)
    (bundle / "model.onnx").write_bytes(b"x" * (bundle / "model.onnx").stat().st_size)
    with pytest.raises(BundleError) as exc:
        edgeify_runtime.load(bundle)
    assert "verify=False" not in exc.value.hint and "edgeify build" in exc.value.hint
