"""Concurrent deploys to one device (issue 11.5): two real ``edgeify deploy`` processes install two bundles under
one name on one sshd device at once, while a watcher checks that ``current`` always names a complete, verified
version; and the staging GC, run for real on this machine, never removes an upload in progress."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sshlab
from edgeify_runtime.manifest import Manifest
from sshtest import run_cli

pytestmark = pytest.mark.ssh


def _digest(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["bundle_digest"]


def _watch(link: Path, stop: threading.Event, seen: set[str], problems: list[str]) -> None:
    """Until ``stop``: resolve ``current``, verify every file of that version; a failure counts only when
    ``current`` still points there afterwards (a version may be removed once it is neither current nor
    previous)."""
    while not stop.is_set():
        try:
            target = os.readlink(link)
        except OSError:
            time.sleep(0.005)
            continue
        version = link.parent / target
        try:
            m = Manifest.read(version)
            m.verify_files(version)
            seen.add(m.bundle_digest)
        except Exception as exc:
            with_target = os.readlink(link) if link.is_symlink() else None
            if with_target == target:
                problems.append(f"current -> {target} is not a complete version: {exc}")
        time.sleep(0.002)


def test_parallel_deploys_of_one_name_keep_current_complete(env, lab, workdir: Path, bundles) -> None:
    d = lab.devices["dev-a"]
    add = run_cli("devices", "add", "shared", "--host", d.address, "--port", str(d.port), "--user", "root",
                  "--python", sys.executable, "--workdir", str(workdir), "--target", "x86-avx2")
    assert add.returncode == 0, add.stderr
    first = run_cli("deploy", str(bundles["v1"]), "--device", "shared")  # runtime zip + a first version
    assert first.returncode == 0, first.stderr
    link = workdir / "bundles" / "model" / "current"
    stop, seen, problems = threading.Event(), set(), []
    watcher = threading.Thread(target=_watch, args=(link, stop, seen, problems), daemon=True)
    watcher.start()
    code = ("import sys\nfrom edgeify.cli import main as m\nm.main(sys.argv[1:])\n")
    results = []
    try:
        for _round in range(3):
            procs = [subprocess.Popen([sys.executable, "-c", code, "deploy", str(bundles[v]), "--device", "shared",
                                       "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=dict(os.environ)) for v in ("v2", "v1")]
            for p in procs:
                out, err = p.communicate(timeout=120)
                results.append((p.returncode, out, err))
    finally:
        stop.set()
        watcher.join(10)
    assert not problems, problems[:3]
    for rc, out, err in results:  # every command ends with a clear result: installed/unchanged, or a typed error
        assert rc == 0, err
        assert json.loads(out)["status"] in ("installed", "unchanged", "repaired")
    final = sshlab.installed(workdir, "model")
    assert final["intact"] and final["digest"] in (_digest(bundles["v1"]), _digest(bundles["v2"]))
    assert seen <= {_digest(bundles["v1"]), _digest(bundles["v2"])} and seen
    versions = [p for p in (workdir / "bundles" / "model").iterdir() if p.name.startswith("v-")]
    assert len(versions) <= 2, versions  # current + previous; the others were removed
    assert not any((workdir / "staging").iterdir()) or all(p.suffix == ".lock" for p in
                                                           (workdir / "staging").iterdir())


def _device_files(workdir: Path, op: str, request: dict) -> dict:
    proc = subprocess.run([sys.executable, "-m", "edgeify_runtime.device_files", op],
                          input=json.dumps({"workdir": str(workdir), **request}), capture_output=True, text=True,
                          timeout=60)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_staging_gc_spares_uploads_in_progress(tmp_path: Path) -> None:
    from edgeify_runtime.device_files import STALE_STAGING_S
    from edgeify_runtime.device_io import try_lock

    work = tmp_path / "work"
    staging = work / "staging"
    old = time.time() - STALE_STAGING_S - 60
    dirs = {}
    for name in ("dead", "writing", "installing"):
        d = staging / f"model-{name}"
        (d / "sub").mkdir(parents=True)
        f = d / "sub" / "model.onnx"
        f.write_bytes(b"x" * 1000)
        for p in (f, d / "sub", d):
            os.utime(p, (old, old))
        dirs[name] = d
    (dirs["writing"] / "sub" / "model.onnx").write_bytes(b"y" * 2000)  # an upload still writing: fresh mtime
    held = try_lock(str(dirs["installing"]) + ".lock")  # an install holds this one
    try:
        out = _device_files(work, "prepare", {})
    finally:
        os.close(held)
    assert out["ok"], out
    assert not dirs["dead"].exists()                             # interrupted long ago: removed
    assert dirs["writing"].exists() and dirs["installing"].exists()  # in progress: kept
    assert out["staging_bytes"] == 3000                           # and reported as held
