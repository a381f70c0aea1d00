"""The host package's public API as the package docstring shows it (issue 17 item 2)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CASES = [
    "from edgeify import build; assert callable(build) and build.__name__ == 'build', build",
    "from edgeify import BuildResult; assert isinstance(BuildResult, type)",
    "import edgeify.build, edgeify; assert callable(edgeify.build) and edgeify.build.__name__ == 'build'",
    "from edgeify.build import build, BuildResult; import edgeify; assert edgeify.build is build",
    "from edgeify import load_registry, Registry, TargetSpec; assert load_registry().resolve('x86')",
    "import edgeify, sys; assert 'torch' not in sys.modules and 'onnx' not in sys.modules",
    "from edgeify import deploy, Outcome, AppSettings; assert callable(deploy) and deploy.__name__ == 'deploy'",
    "import edgeify.deploy.inventory, edgeify; assert callable(edgeify.deploy) and edgeify.deploy.__name__ == 'deploy'",
    "from edgeify.deploy.inventory import Device; import edgeify; assert edgeify.deploy.__module__ == "
    "'edgeify.deploy.fleet'",
    "import edgeify, sys; assert 'paramiko' not in sys.modules and 'edgeify.deploy.deployer' not in sys.modules",
    # `import edgeify` loads none of its modules (PEP 562); a patched public function is kept, then restored
    "import edgeify, sys; assert not [m for m in sys.modules if m.startswith('edgeify.') and m != 'edgeify.version']"
    " and 'pydantic' not in sys.modules and 'numpy' not in sys.modules",
    "import edgeify, unittest.mock as m; f = edgeify.build\n"
    "with m.patch('edgeify.build', len): assert edgeify.build is len\n"
    "assert edgeify.build is f and edgeify.targets.load_registry",
]


@pytest.mark.parametrize("code", CASES)
def test_public_api_in_a_fresh_interpreter(code: str) -> None:
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
