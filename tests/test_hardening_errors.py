"""Every failure a typed error (issue 24, items 8-12): each of these gave "internal error", exit 1, or a wrong
or noisy message. Real files, real filesystems (a 1 MiB tmpfs mounted by the test when it runs as root), the
real CLI where the exit code and stderr are the point."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "ssh"))
import sshlab


def edgeify(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeify", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={**os.environ, **(env or {})})


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` for the block (root only: mount(8)); always unmounted."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True, timeout=30)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, timeout=30)


# -- 8: an .npz holding an object array ------------------------------------------------------------------------
def test_npz_with_an_object_array_is_a_data_error(tmp_path: Path) -> None:
    from edgeify.data import load_dataset
    from edgeify.errors import DataError
    from edgeify_runtime.manifest import TensorSpec

    p = tmp_path / "calib.npz"
    np.savez(p, x=np.array([{"a": 1}, None], dtype=object))  # pickled inside the archive
    with pytest.raises(DataError) as info:
        load_dataset(p, [TensorSpec("x", ("batch", 2), "float32")])
    assert info.value.exit_code == 7 and "unpickl" in info.value.message and str(p) in info.value.message


# -- 9: a devices file that is not UTF-8 -----------------------------------------------------------------------
def test_devices_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    from edgeify.deploy.inventory import Inventory
    from edgeify.errors import ConfigError

    path = tmp_path / "devices.toml"
    path.write_bytes(b'[devices.pi]\ntarget = "rpi5"\nhost = "\xff\xfe"\n')
    with pytest.raises(ConfigError) as info:
        Inventory(path)
    assert str(path) in info.value.message and "UTF-8" in info.value.message
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "devices.toml").write_bytes(path.read_bytes())
    for args in (("devices", "list"), ("devices", "add", "pi-2", "--host", "10.0.0.2", "--target", "x86-avx2")):
        run = edgeify(*args, env={"EDGEIFY_HOME": str(home)})
        assert run.returncode == 4, run.stderr
        assert "devices.toml" in run.stderr and "internal error" not in run.stderr


# -- 10: --input-shape beyond the machine's memory -------------------------------------------------------------
def test_input_shape_beyond_memory_is_refused_with_the_number(tmp_path: Path) -> None:
    from edgeify.bench import parse_input_shapes
    from edgeify.errors import UsageError

    bundle = sshlab.make_bundle(tmp_path / "b")
    with pytest.raises(UsageError) as info:
        parse_input_shapes(["100000000000,16"], bundle)  # 6.4 TB of float32
    assert "6400000000000 bytes" in info.value.message and "input 'x'" in info.value.message, info.value.message
    assert parse_input_shapes(["4,16"], bundle) == {"x": [4, 16]}
    run = edgeify("bench", str(bundle), "--input-shape", "1000000000,16")  # 64 GB: over this machine's memory
    assert run.returncode == 2, run.stdout + run.stderr
    assert "GiB" in run.stderr and "MemoryError" not in run.stderr and "internal error" not in run.stderr


def test_build_input_shape_beyond_memory_is_refused_before_any_step(tmp_path: Path) -> None:
    bundle = sshlab.make_bundle(tmp_path / "src")  # model.onnx: x [batch, 16] float32
    run = edgeify("build", str(bundle / "model.onnx"), "--target", "x86", "--input-shape", "1000000000,16",
                  "-o", str(tmp_path / "out"))
    assert run.returncode == 2, run.stdout + run.stderr
    assert "64000000000 bytes" in run.stderr and "MemoryError" not in run.stderr, run.stderr
    assert not (tmp_path / "out").exists()


# -- 11: -o on a full filesystem -------------------------------------------------------------------------------
def test_build_onto_a_full_filesystem_is_a_no_space_error(tmp_path: Path) -> None:
    bundle = sshlab.make_bundle(tmp_path / "src", weight_mb=2)  # a 2 MB model.onnx
    with small_tmpfs(tmp_path / "full") as full:
        run = edgeify("build", str(bundle / "model.onnx"), "--target", "x86", "-o", str(full / "out"))
        left = sorted(p.name for p in full.iterdir())
    assert run.returncode == 15, run.stdout + run.stderr
    assert "no space" in run.stderr.lower() and str(full / "out") in run.stderr and "MiB" in run.stderr
    assert "internal error" not in run.stderr
    assert left == []  # the staging directory was removed


# -- 12: wording --------------------------------------------------------------------------------------------------
def test_a_fifo_as_the_model_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    run = edgeify("build", str(fifo), "--target", "x86", "-o", str(tmp_path / "out"))
    assert run.returncode == 6, run.stderr
    assert "not a regular file" in run.stderr and "not found" not in run.stderr


def test_a_fake_pt2_gives_the_typed_error_without_torch_noise(tmp_path: Path) -> None:
    fake = tmp_path / "model.pt2"
    fake.write_bytes(os.urandom(3000))
    run = edgeify("build", str(fake), "--target", "x86", "-o", str(tmp_path / "out"))
    assert run.returncode == 6, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    first = next(i for i, ln in enumerate(lines) if ln.startswith("error [6]"))
    assert "not a .pt2 archive" in lines[first], run.stderr
    # edgeify's own progress line at most: no torch log lines (glog style "W1206 21:43:14.308000 ... torch/...")
    assert not [ln for ln in lines[:first] if re.match(r"^[DIWEF]\d{4} ", ln) or "site-packages" in ln], run.stderr
    assert "Traceback" not in run.stderr and "torch/export" not in run.stderr, run.stderr


def test_a_corrupt_sqlite_store_gets_a_sqlite_fix(tmp_path: Path) -> None:
    from edgeify.store import StoreError, open_store

    db = tmp_path / "results.sqlite"
    db.write_bytes(os.urandom(8192))
    with pytest.raises(StoreError) as info:
        open_store(db)
    hint = info.value.hint or ""
    assert str(db) in hint and "EDGEIFY_RESULTS_URL" not in hint and "PostgreSQL" not in hint, hint
    run = edgeify("results", env={"EDGEIFY_RESULTS_DB": str(db)})
    assert run.returncode == 4 and str(db) in run.stderr and "EDGEIFY_RESULTS_URL" not in run.stderr, run.stderr


def test_a_full_sqlite_store_gets_a_space_fix(tmp_path: Path) -> None:
    from edgeify.store import StoreError, open_store

    with small_tmpfs(tmp_path / "full", "64k") as full:
        with contextlib.suppress(OSError):
            (full / "filler").write_bytes(b"\0" * (80 << 10))  # fill it up
        with pytest.raises(StoreError) as info, open_store(full / "results.sqlite"):
            pass
        hint = info.value.hint or ""
    assert "space" in hint and str(full) in hint and "EDGEIFY_RESULTS_URL" not in hint, (info.value.message, hint)
