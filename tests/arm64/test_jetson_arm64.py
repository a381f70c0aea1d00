"""Jetson bundles on the emulated aarch64 device, over SSH with the real deployer.

1. The jetson-orin-nano bundle for ONNX Runtime (providers TensorRT -> CUDA -> CPU in fallback order) runs on the
   device's CPU provider and gives the host's answers.
2. The TensorRT engine's cache decisions, on a device whose identity says Jetson: the emulated root gets a real
   Jetson's /etc/nv_tegra_release and device-tree model (texts and their sources: tests/data/jetson). Without
   TensorRT, deploying fails with EngineMissingError (exit 11) naming what to install; with a stand-in trtexec that
   replays a REAL recorded trtexec log from an Orin (tests/data/trtexec, it builds nothing), the first deploy
   builds, the next reuses, and after a JetPack update (L4T R36.4.3 -> R36.4.7) the engine is rebuilt.
   No TensorRT engine is built or run here: there is no NVIDIA GPU.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import edgeify_runtime
import numpy as np
import pytest
from edgeify.bench import outputs_on_device
from edgeify.build import build
from edgeify.deploy.connect import open_site
from edgeify.deploy.deployer import deploy
from edgeify.errors import EngineMissingError

pytestmark = pytest.mark.arm64  # every test here starts the emulated arm64 device

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_onnxruntime_fallback_bundle_matches_host_on_arm64(jetson_device, digits, tmp_path: Path,
                                                           precision: str) -> None:
    bundle = tmp_path / f"jetson-ort-{precision}"
    res = build(digits["model"], target="jetson-orin-nano", engine="onnxruntime", precision=precision,
                calib=digits["calib"], out=bundle, measure_latency=False)
    assert res.manifest.engine.options["providers"][0] == "TensorrtExecutionProvider"
    with np.load(digits["eval"]) as z:
        x = z["x"][:64]
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, x=x)
    with open_site(jetson_device) as site:
        report = deploy(site, bundle, device=jetson_device)
        record, out_path = outputs_on_device(site, report, inputs, tmp_path / "fetched")
        result = record.to_dict()
    assert result["fingerprint"]["arch"] == "aarch64"
    assert result["engine"]["accelerator"] == "CPUExecutionProvider"  # TensorRT and CUDA providers skipped
    with np.load(out_path, allow_pickle=False) as z:
        got = z["output"]
    # the host reference: ORT with Q/DQ kept as ops (exact int8 arithmetic; x86's fused int8 kernels saturate)
    with edgeify_runtime.load(bundle, options={"graph_optimization_level": "basic"}) as model:
        ref = model.run({"x": x})["output"]
    diff = float(np.abs(got - ref).max())
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    print(json.dumps({"jetson ORT fallback": precision, "max_abs_host_vs_arm64": diff, "top1_agreement": agree}))
    if precision == "fp16":
        assert diff <= 1e-2 * float(np.abs(ref).max()) + 1e-5
    assert agree >= 0.98


def _write_identity(root: Path, release: str, mounts: list[Path]) -> None:
    shutil.copy(DATA / "jetson" / f"nv_tegra_release.{release}", root / "etc/nv_tegra_release")
    firmware = root / "sys/firmware"
    if firmware not in mounts:  # sysfs is read-only to us: a tmpfs over /sys/firmware holds the device tree
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(firmware)], check=True)
        mounts.append(firmware)
    dt = firmware / "devicetree/base"
    dt.mkdir(parents=True, exist_ok=True)
    (dt / "model").write_text((DATA / "jetson/device-tree-model.orin-nano-super").read_text().strip() + "\0")


def test_tensorrt_engine_cache_decisions_on_a_jetson_fingerprinted_device(arm64, jetson_device, digits,
                                                                         tmp_path: Path) -> None:
    bundle = tmp_path / "digits-trt-fp16"
    build(digits["model"], target="jetson-orin-nano", precision="fp16", out=bundle, measure_latency=False)
    root = arm64.device.root
    mounts: list[Path] = []
    trt_dir = root / "usr/src/tensorrt"
    try:
        _write_identity(root, "r36.4.3", mounts)
        with open_site(jetson_device) as site:
            with pytest.raises(EngineMissingError) as exc:  # no TensorRT on the device yet
                deploy(site, bundle, device=jetson_device)
            assert exc.value.exit_code == 11
            assert "TensorRT is not installed" in str(exc.value) and "nvidia-jetpack" in exc.value.hint

            (trt_dir / "bin").mkdir(parents=True)
            shutil.copy(DATA / "trtexec/replay_trtexec.sh", trt_dir / "bin/trtexec")
            shutil.copy(DATA / "trtexec/trt8.5.2_jetson-orin_int8_qdq_dumpprofile.log", trt_dir / "bin/replay.log")
            first = deploy(site, bundle, device=jetson_device).device_steps
            again = deploy(site, bundle, device=jetson_device).device_steps
            _write_identity(root, "r36.4.7", mounts)  # a JetPack update on the same board
            updated = deploy(site, bundle, device=jetson_device).device_steps
        (step,), (step2,), (step3,) = first, again, updated
        assert (step["uses"], step["decision"], step["reason"]) == ("tensorrt-engine", "built",
                                                                    "first use on this device")
        fp = step["meta"]["fingerprint"]
        assert (fp["l4t"], fp["jetpack"], fp["board"], fp["compute_capability"]) == (
            "36.4.3", "6.2", "jetson-orin-nano", "8.7")
        assert fp["tensorrt"] == "8.5.2" and "banner" in fp["tensorrt_source"]  # from the replayed banner
        assert fp["trtexec"] == "/usr/src/tensorrt/bin/trtexec"
        assert step["meta"]["trtexec"]["build_s"] == 320.636 and step["meta"]["builder"] == "trtexec"
        cmd = step["meta"]["command"]
        assert "--fp16" in cmd and "--skipInference" in cmd and any(a.startswith("--saveEngine=") for a in cmd)
        assert (step2["decision"], step2["key"]) == ("reused", step["key"])
        assert step3["decision"] == "rebuilt" and step3["key"] != step["key"]
        assert "l4t '36.4.3' -> '36.4.7'" in step3["reason"]
        assert step3["meta"]["fingerprint"]["jetpack"] is None  # 36.4.7 is not in the documented table
        calls = (trt_dir / "bin/calls.log").read_text().splitlines()
        assert sum(1 for c in calls if "--saveEngine=" in c) == 2  # built twice, reused once
        plan = Path(step3["plan"])
        assert (root / plan.relative_to("/")).is_file() and not (root / Path(step["plan"]).relative_to("/")).exists()
        print(json.dumps({"cache decisions": [s["decision"] for s in (step, step2, step3)],
                          "rebuild reason": step3["reason"]}))
    finally:
        (root / "etc/nv_tegra_release").unlink(missing_ok=True)
        shutil.rmtree(trt_dir, ignore_errors=True)
        for m in reversed(mounts):
            subprocess.run(["umount", "-l", str(m)], check=False)
