"""edgeify-runtime: run an edgeify bundle on a device.

    import edgeify_runtime as er

    with er.load("bundle/") as model:   # verifies sha256, uses the bundle's engine, threads = physical cores
        outputs = model.run({"x": x})    # dict name -> np.ndarray, in the manifest's output order

Depends on numpy only; each engine (onnxruntime, openvino, ...) is imported when a bundle needs it.
``python -m edgeify_runtime.bench`` is the benchmark agent; ``python -m edgeify_runtime.fingerprint`` prints
the device fingerprint (``device_fingerprint()`` returns it; the name leaves ``edgeify_runtime.fingerprint``
to the module).
"""

from __future__ import annotations

from .engines import available_engines
from .errors import BundleError, EdgeifyRuntimeError, EngineMissingError, InputSignatureError
from .fingerprint import fingerprint as device_fingerprint
from .manifest import SCHEMA_VERSION, Manifest, TensorSpec
from .session import Model, load

#: keep equal to ``version`` in runtimes/pyproject.toml (a test checks); hard-coded so that a copied (not
#: installed) package still knows its version
__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "BundleError",
    "EdgeifyRuntimeError",
    "EngineMissingError",
    "InputSignatureError",
    "Manifest",
    "Model",
    "TensorSpec",
    "__version__",
    "available_engines",
    "device_fingerprint",
    "load",
]
