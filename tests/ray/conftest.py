"""One real Ray cluster (raylab.py) for every test in tests/ray: `ray start` is slow, so the head node is started
once per session; each test adds the worker node it needs and kills it at its end."""

from __future__ import annotations

from pathlib import Path

import pytest
from raylab import RayLab


@pytest.fixture(scope="session")
def lab():
    lab = RayLab().start()
    try:
        yield lab
    finally:
        lab.stop()
    assert not Path(f"/run/netns/{lab.netns}").exists()
