"""The CI=true rule (tests/_ci_skips.py) in a real pytest run of its own on tiny test files: run-time skips,
module-level `importorskip` at collection, and a parametrize id called "device" all fail under CI=true; only the
`device` marker may skip, and only at run time. Without CI the same skips stay skips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _kit import REPO

FILES = {
    "conftest.py": "from _ci_skips import pytest_make_collect_report, pytest_runtest_makereport  # noqa\n",
    "test_module_skip.py": "import pytest\npytest.importorskip('no_such_module_edgeify')\n\n"
                           "def test_never_runs():\n    pass\n",
    "test_runtime_skip.py": "import pytest\n\ndef test_skips():\n    pytest.skip('needs a thing')\n",
    "test_param_id.py": "import pytest\n\n@pytest.mark.parametrize('where', ['device', 'host'])\n"
                        "def test_id(where):\n    pytest.skip('skipped ' + where)\n",
    "test_marked.py": "import pytest\n\n@pytest.mark.device\ndef test_hardware():\n    pytest.skip('no board')\n",
    "test_marked_module.py": "import pytest\npytestmark = pytest.mark.device\n"
                             "pytest.importorskip('no_such_module_edgeify')\n\ndef test_x():\n    pass\n",
}


def _run(tmp_path: Path, ci: bool, *files: str) -> subprocess.CompletedProcess[str]:
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), env.get("PYTHONPATH", "")])
    if ci:
        env["CI"] = "true"
    cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "--continue-on-collection-errors",
           "-m", "", "--rootdir", str(tmp_path), "-c", os.devnull, "--strict-markers", "-o",
           "markers=device", *files]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("ci", [True, False], ids=["CI", "local"])
def test_ci_turns_every_unmarked_skip_into_a_failure(tmp_path: Path, ci: bool) -> None:
    proc = _run(tmp_path, ci, *[n for n in FILES if n.startswith("test_")])
    out = proc.stdout
    if ci:
        assert proc.returncode == 1, out
        assert "ERROR test_module_skip.py" in out and "was skipped at collection" in out, out
        assert "FAILED test_runtime_skip.py::test_skips" in out, out
        # the id "device" is no exemption: both parametrized cases fail
        assert "FAILED test_param_id.py::test_id[device]" in out and "FAILED test_param_id.py::test_id[host]" in out
        # the marker is: a marked test and a marked module may skip
        assert "SKIPPED" in out and "test_marked.py" in out.split("SKIPPED", 1)[1], out
        assert "FAILED test_marked" not in out, out
        # a module that skips at import has no markers yet: collection-time skips fail even with a device mark
        assert "ERROR test_marked_module.py" in out, out
        assert "3 failed" in out and "2 errors" in out and "1 skipped" in out, out
    else:
        assert proc.returncode == 0, out
        assert "failed" not in out and "error" not in out.lower().replace("errors", ""), out
