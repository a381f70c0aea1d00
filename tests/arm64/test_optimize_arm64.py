"""``edgeify optimize --device`` end to end on the emulated aarch64 device (a Raspberry Pi 5 stand-in, over SSH):
every candidate built on this host, deployed and benchmarked there by the real agent, the results stored under the
run id with the device's own fingerprint. Emulated latencies (qemu-user, about 100x slower than a Pi) prove the
path, not the speed. The search is bounded by ``max_time_s`` (about 25 s per screening under emulation): the full
run (fp32 + int8 with settings and the full protocol, about 3 minutes) is ``benchmarks/optimize_arm64.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.arm64  # every test here starts the emulated arm64 device


def test_optimize_on_emulated_arm64(arm64_device, digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import edgeify
    from edgeify.deploy.inventory import Inventory
    from edgeify.results import open_store

    monkeypatch.setenv("EDGEIFY_HOME", str(tmp_path / "home"))  # its own devices file (and step cache)
    inv = Inventory()
    inv.add(arm64_device)
    inv.save()
    out = tmp_path / "best"
    res = edgeify.optimize(digits["model"], target="rpi5", device=arm64_device.name, calib=digits["calib"],
                           eval=digits["eval"], engines=["onnxruntime"], precisions=["fp32", "int8"],
                           max_time_s=45, out=out, progress=lambda m: print(f"optimize: {m}"))
    # --max-time bounds the emulated run (~25 s per screening there): the path end to end, the best so far chosen
    assert res.device == arm64_device.name and res.target == "rpi5" and res.chosen is not None
    assert res.candidates[0].precision == "fp32" and (not res.stopped or "--max-time" in res.stopped)
    measured = [c for c in res.candidates if c.latency_ms or c.screen_latency_ms]
    assert measured and all(c.result_ids for c in measured)
    with open_store() as st:
        stored = st.query(run_id=res.run_id, limit=100)
    assert len(stored) == sum(len(c.result_ids) for c in res.candidates)
    assert {r.device for r in stored} == {arm64_device.name}
    assert all(r.to_dict()["fingerprint"]["arch"] == "aarch64" for r in stored)  # measured there, not here
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["optimize"]["device"] == arm64_device.name and manifest["target"]["name"] == "rpi5"
    print(json.dumps({"chosen": f"{res.chosen.engine} {res.chosen.precision} {res.chosen.settings}",
                      "p50_ms_emulated": res.chosen.latency_ms.get("p50"), "candidates": len(res.candidates),
                      "wall_s": res.wall_s, "stopped": res.stopped}))
