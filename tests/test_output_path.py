"""`edgeify build -o DIR`: only an earlier bundle or an empty directory is replaced; every other -o mistake is
refused before the build starts, and a publish interrupted by a crash never loses DIR (issue 11 item 1,
issue 17 item 5)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _kit import make_gemm_onnx, run_cli
from edgeify import bundle


@contextlib.contextmanager
def read_only_dir(path: Path) -> Iterator[Path]:
    """A directory nobody may write to: permissions for a normal user; a read-only tmpfs for root (root
    ignores permission bits)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def _build(model: Path, out: str, *extra: str, cwd: Path | None = None, env: dict[str, str] | None = None):
    return run_cli("build", str(model), "--target", "x86", "--no-latency", "-o", out, *extra, cwd=cwd, env=env)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _refused_before_building(res: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert res.returncode == code, res.stderr
    assert needle in res.stderr and "fix:" in res.stderr, res.stderr
    assert "✓" not in res.stderr, "a step ran before the refusal"
    assert "Traceback" not in res.stderr


def test_a_directory_with_other_things_is_never_replaced(tmp_path: Path) -> None:
    model = make_gemm_onnx(tmp_path / "m.onnx")
    models = tmp_path / "models"
    models.mkdir()
    (models / "thesis.txt").write_text("three years of work")
    ok = _build(model, str(models / "other-bundle"))
    assert ok.returncode == 0, ok.stderr
    before = _snapshot(models)
    res = _build(model, str(models))
    _refused_before_building(res, 2, "not one edgeify bundle")
    assert _snapshot(models) == before
    # an edgeify bundle with a user's file added is no longer only a bundle: kept too
    (models / "other-bundle" / "notes.md").write_text("mine")
    before = _snapshot(models)
    _refused_before_building(_build(model, str(models / "other-bundle")), 2, "notes.md")
    assert _snapshot(models) == before
    assert not list(tmp_path.rglob(".edgeify-*"))


@pytest.mark.parametrize("kind", ["file", "dot", "empty", "parent-is-file", "symlink"])
def test_output_path_mistakes_are_usage_errors(tmp_path: Path, kind: str) -> None:
    model = make_gemm_onnx(tmp_path / "m.onnx")
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("keep me")
    (work / "real").mkdir()
    (work / "link").symlink_to(work / "real")
    out, needle = {"file": ("notes.txt", "is a file"), "dot": (".", "current directory"),
                   "empty": ("", "current directory"), "parent-is-file": ("notes.txt/b", "is a file"),
                   "symlink": ("link", "symbolic link")}[kind]
    before = _snapshot(work)
    _refused_before_building(_build(model, out, cwd=work), 2, needle)
    assert _snapshot(work) == before and (work / "link").is_symlink()


def test_empty_name_from_the_python_api(tmp_path: Path) -> None:
    from edgeify import build
    from edgeify.errors import UsageError

    with pytest.raises(UsageError, match="empty"):
        build(make_gemm_onnx(tmp_path / "m.onnx"), target="x86", out="", measure_latency=False)


def test_read_only_output_and_read_only_home(tmp_path: Path) -> None:
    model = make_gemm_onnx(tmp_path / "m.onnx")
    with read_only_dir(tmp_path / "ro") as ro:
        _refused_before_building(_build(model, str(ro / "bundle")), 2, "cannot write in")
        home_res = _build(model, str(tmp_path / "b"), env={"EDGEIFY_HOME": str(ro / "home")})
        _refused_before_building(home_res, 4, "EDGEIFY_HOME")
        assert "--no-cache" in home_res.stderr
    assert not (tmp_path / "b").exists()


def test_an_earlier_bundle_and_an_empty_directory_are_replaced(tmp_path: Path, monkeypatch) -> None:
    model = make_gemm_onnx(tmp_path / "m.onnx")
    out = tmp_path / "out"
    out.mkdir()
    first = _build(model, str(out))
    assert first.returncode == 0, first.stderr
    digest = json.loads((out / "manifest.json").read_text())["bundle_digest"]
    other = make_gemm_onnx(tmp_path / "m2.onnx", seed=7)
    # the portable path (no renameat2): old aside, new in, old removed
    second = _build(other, str(out), env={"EDGEIFY_TEST_NO_RENAMEAT2": "1"})
    assert second.returncode == 0, second.stderr
    assert json.loads((out / "manifest.json").read_text())["bundle_digest"] != digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m2.onnx", "out"]


CRASH = """
import os, sys
from pathlib import Path
from edgeify import bundle
calls = []
real = os.rename
def rename(a, b):
    real(a, b)
    calls.append(b)
    if len(calls) == 1:
        os._exit(9)  # the process dies between 'old aside' and 'new in'
os.rename = rename
bundle.publish(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def test_a_crash_in_the_portable_publish_never_loses_the_bundle(tmp_path: Path) -> None:
    model = make_gemm_onnx(tmp_path / "m.onnx")
    out, new = tmp_path / "out", tmp_path / "new"
    for path in (out, new):
        assert _build(model, str(path)).returncode == 0
    before = _snapshot(out)
    env = {**os.environ, "EDGEIFY_TEST_NO_RENAMEAT2": "1"}
    crashed = subprocess.run([sys.executable, "-c", CRASH, str(new), str(out)], env=env, timeout=60)
    assert crashed.returncode == 9
    asides = list(tmp_path.glob(".edgeify-old-out-*"))
    assert not out.exists() and len(asides) == 1  # the crash window
    stranger = tmp_path / ".edgeify-old-out-0123abcd"
    stranger.mkdir()
    (stranger / "thesis.txt").write_text("not edgeify's")
    bundle.check_output(out)  # what the next build does first
    assert _snapshot(out) == before
    assert (stranger / "thesis.txt").read_text() == "not edgeify's"
    assert not asides[0].exists()
