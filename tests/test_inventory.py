"""The devices file under concurrency and hand edits (issue 11.6): real ``edgeify devices add`` processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edgeify.deploy.inventory import Inventory, make_device

HAND_EDITED = """\
# my lab: keep this comment
[devices.pi-01]
host = "192.168.1.50"   # the pi on the bench
target = "rpi5"
tags = ["pi", "lab"]
"""


def _cli(home: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "EDGEIFY_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "edgeify", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_ten_parallel_devices_add_keep_all_ten_and_the_comments(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = home / "config" / "devices.toml"
    path.parent.mkdir(parents=True)
    path.write_text(HAND_EDITED)
    procs = [_cli(home, "devices", "add", f"dev-{i}", "--host", f"10.200.0.{i + 1}", "--target", "x86-avx2",
                  "--tag", "fleet") for i in range(10)]
    for p in procs:
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    inv = Inventory(path)
    assert sorted(d.name for d in inv) == sorted(["pi-01", *(f"dev-{i}" for i in range(10))])
    assert [d.host for d in inv.select("tag:fleet")] == [f"10.200.0.{i + 1}" for i in range(10)]
    text = path.read_text()
    assert "# my lab: keep this comment" in text and "# the pi on the bench" in text  # hand edits survive
    assert not list(path.parent.glob(".devices-*"))  # no temporary file left behind

    # remove one from another process while this Inventory holds a stale view: both edits land
    stale = Inventory(path)
    rm = _cli(home, "devices", "remove", "dev-3")
    assert rm.wait(timeout=60) == 0
    stale.add(make_device("late", host="10.200.0.99", target="x86-avx2"))
    stale.save()
    names = {d.name for d in Inventory(path)}
    assert "late" in names and "dev-3" not in names and len(names) == 11
    assert "# the pi on the bench" in path.read_text()
