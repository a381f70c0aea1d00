"""Engine registry, lazy imports, version checks, and the package's import hygiene."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import edgeify_runtime as er
import pytest
from edgeify_runtime import engines
from edgeify_runtime.engines.base import EngineInfo, check_min_version, version_at_least, version_tuple

RUNTIME_PKG = Path(__file__).resolve().parents[2] / "runtimes" / "edgeify_runtime"


@pytest.mark.parametrize(("version", "expected"), [
    ("1.32.0", (1, 32)), ("1.17", (1, 17)), ("2024.4.1-16618-abc", (2024, 4, 1)), ("1.18.0rc1", (1, 18)),
    ("1.19.dev20240101", (1, 19)), ("v2.3.0", (2, 3)), ("10", (10,)), ("0.0.0", ()), ("", ()),
    ("2026.4.1-22982-e213a147257-releases/2026/4", (2026, 4, 1)),
])
def test_version_tuple(version, expected):
    assert version_tuple(version) == expected


@pytest.mark.parametrize(("installed", "minimum", "ok"), [
    ("1.32.0", "1.17.0", True), ("1.17.0", "1.17", True),
    ("1.9.0", "1.17.0", False),  # numeric, not string order
    ("2024.4.1", "2024.4", True), ("2023.3.0", "2024.0", False), ("1.18.0rc1", "1.18.0", True),
    ("2.10", "2.9.9", True), ("10.0", "9.99", True),
])
def test_version_at_least(installed, minimum, ok):
    assert version_at_least(installed, minimum) is ok


def test_check_min_version_messages():
    info = EngineInfo("onnxruntime", "x:Y", ("onnxruntime",), ("onnxruntime",), "onnxruntime")
    check_min_version(info, "1.32.0", None)
    check_min_version(info, None, "1.17")  # unknown installed version: the load itself will tell
    with pytest.raises(er.EngineMissingError, match=r"needs onnxruntime >= 1\.40, but 1\.32\.0 is installed"):
        check_min_version(info, "1.32.0", "1.40")
    with pytest.raises(er.BundleError, match="not a version"):
        check_min_version(info, "1.32.0", "latest")


def test_registry_is_read_only_and_names_pip_packages():
    assert set(engines.ENGINES) >= {"onnxruntime", "openvino"}
    assert engines.engine_info("onnxruntime").install_command == "pip install onnxruntime"
    assert engines.engine_info("openvino").install_command == "pip install openvino"
    with pytest.raises(TypeError):
        engines.ENGINES["x"] = engines.ENGINES["onnxruntime"]  # type: ignore[index]
    with pytest.raises(ValueError, match="registered twice"):
        engines._build_registry((engines.ENGINES["openvino"], engines.ENGINES["openvino"]))
    with pytest.raises(er.EngineMissingError, match="Did you mean 'openvino'"):
        engines.engine_info("openvin")


def test_available_engines_reports_versions():
    import onnxruntime

    found = er.available_engines()
    assert found["onnxruntime"] == onnxruntime.__version__
    if "openvino" in found:
        import openvino

        assert version_tuple(found["openvino"]) == version_tuple(openvino.__version__)


def test_missing_engine_names_the_pip_package(monkeypatch):
    """An engine whose modules cannot be found: EngineMissingError with the exact pip command."""
    fake = EngineInfo("openvino", "edgeify_runtime.engines.openvino:OpenVINOAdapter",
                      ("no_such_module_for_edgeify_tests",), ("no-such-dist-for-edgeify-tests",), "openvino")
    monkeypatch.setattr(engines, "ENGINES", engines._build_registry((fake,)))
    with pytest.raises(er.EngineMissingError) as info:
        engines.create_adapter("openvino")
    assert "pip install openvino" in str(info.value) and info.value.hint == "pip install openvino"
    assert engines.available_engines() == {}


def test_import_is_light_and_engine_discovery_imports_nothing():
    """Importing the package, listing engines and fingerprinting import no engine and no host library."""
    code = (
        "import json, sys\n"
        "import edgeify_runtime as er\n"
        "er.available_engines(); er.device_fingerprint()\n"
        "heavy = ('onnxruntime', 'openvino', 'torch', 'onnx', 'tensorflow', 'edgeify', 'pydantic')\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(heavy))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=120)
    assert json.loads(out.stdout) == []


def test_loading_imports_only_the_bundle_engine(kit):
    bundle = kit.ort_bundle("gemm")
    code = (
        "import json, sys\n"
        "import edgeify_runtime as er\n"
        f"m = er.load({str(bundle)!r}); m.run({{'x': [[0.0] * 8]}}); m.close()\n"
        "engines = {'onnxruntime', 'openvino', 'onnx'}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & engines)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=120)
    assert json.loads(out.stdout) == ["onnxruntime"]


def test_runtime_sources_import_no_forbidden_package():
    """Static check of every runtime module: no torch/onnx/tensorflow/pydantic/edgeify import anywhere."""
    import ast

    forbidden = {"torch", "onnx", "tensorflow", "pydantic", "edgeify"}
    offenders = []
    for path in RUNTIME_PKG.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 8))  # also: Python 3.8 syntax
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in forbidden]
        first = next((n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))), None)
        if first is not None:
            assert isinstance(first, ast.ImportFrom) and first.module == "__future__", \
                f"{path.name}: needs `from __future__ import annotations` (Python 3.8 support)"
    assert offenders == []


def test_version_matches_pyproject():
    import tomllib

    meta = tomllib.loads((RUNTIME_PKG.parent / "pyproject.toml").read_text(encoding="utf-8"))
    assert er.__version__ == meta["project"]["version"]


def test_public_api():
    assert set(er.__all__) >= {"load", "Model", "TensorSpec", "Manifest", "available_engines",
                               "device_fingerprint", "BundleError", "EngineMissingError",
                               "InputSignatureError", "EdgeifyRuntimeError", "__version__"}
    for name in er.__all__:
        assert hasattr(er, name), name
    import edgeify_runtime.fingerprint as fp_module  # the module, not shadowed by a function

    assert callable(fp_module.fingerprint) and fp_module.fingerprint is er.device_fingerprint
