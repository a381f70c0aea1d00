"""edgeify lets neither OpenVINO's converter nor NNCF send usage telemetry (toolchain/telemetry.py).

Outside CI, with no opt-in file, ``openvino_telemetry`` treats silence as consent: ``convert_model`` creates
``~/intel/`` (a client id, stats) and posts an event. The build runs in a fresh HOME with ``CI`` and ``NNCF_CI``
unset, so only edgeify's own switch can decline it; the proof is that the telemetry object says it has no consent
and that nothing of the telemetry's was written to HOME.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from _kit import make_gemm_onnx

PROBE = r"""
import json, os, sys
import edgeify
res = edgeify.build(sys.argv[1], target="x86-avx2", engine="openvino", precision=sys.argv[3], out=sys.argv[2],
                    calib=sys.argv[4] if len(sys.argv) > 4 else None)
import openvino_telemetry
nncf_telemetry = type(sys.modules["nncf.telemetry.wrapper"].telemetry).__name__ if "nncf" in sys.modules else None
print(json.dumps({"consent": openvino_telemetry.Telemetry().consent, "nncf": nncf_telemetry,
                  "ci": os.environ.get("CI"), "nncf_ci": os.environ.get("NNCF_CI")}))
"""


def test_openvino_and_nncf_telemetry_is_declined_during_builds(tmp_path: Path) -> None:
    import numpy as np

    model = make_gemm_onnx(tmp_path / "m.onnx")
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32))
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NNCF_CI", "NNCF_DEV", "TF_BUILD", "JENKINS_URL")}
    env.update(HOME=str(home), EDGEIFY_HOME=str(tmp_path / "edgeify-home"), PYTHONPATH=str(Path(__file__).parent))
    for precision, extra in (("fp32", []), ("int8", [str(calib)])):
        out = subprocess.run([sys.executable, "-c", PROBE, str(model), str(tmp_path / f"b-{precision}"), precision,
                              *extra], capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        facts = json.loads(out.stdout.strip().splitlines()[-1])
        assert facts["consent"] is False, facts  # the converter's telemetry object was initialised, and declined
        # NNCF's stub (``NNCFTelemetryStub`` is a MagicMock) instead of its sender, wherever NNCF was imported
        assert facts["nncf"] in (("MagicMock",) if precision == "int8" else ("MagicMock", None)), facts
        assert facts["ci"] is None and facts["nncf_ci"] is None, facts  # the process environment is restored
        assert not (home / "intel").exists(), sorted(p.name for p in (home / "intel").iterdir())
