"""edgeify-runtime: run an edgeify bundle on a device, or inside your own app.

Depends on numpy only; each engine (onnxruntime, openvino, ...) is imported when a bundle needs it. The
embedding API, runnable as written after ``edgeify build examples/digits/model.pt2 --target x86 -o
build/digits-x86 ...`` (a test runs it with doctest's ELLIPSIS; ``...`` stands for what depends on the
engine)::

    >>> import numpy as np
    >>> import edgeify_runtime
    >>> with edgeify_runtime.load("build/digits-x86", threads=1) as model:   # checks every file's sha256
    ...     x = model.inputs[0]                                # the signature, from the manifest
    ...     print(x.name, x.shape, x.dtype, x.layout)
    ...     print(len(model.outputs), model.outputs[0].shape)
    ...     print(model.engine_name in edgeify_runtime.available_engines(), model.accelerator)
    ...     labels = model.labels or []                        # class names, when the build had them
    ...     prep = model.preprocessing or {}                   # how raw images became model inputs
    ...     batch = np.zeros((3, 1, 8, 8), np.float32)         # any batch size: the batch axis is dynamic
    ...     out = model.run({x.name: batch})                   # {output name: np.ndarray}
    ...     print(out[model.outputs[0].name].shape, len(labels) in (0, 10))
    x ('batch', 1, 8, 8) float32 NCHW
    1 ('batch', 10)
    True ...
    (3, 10) True
    >>> model.closed                                           # the with block closed it
    True

``load(bundle, engine=None, threads=None, verify=True, options=None, cpu_fallback=False)``: ``verify=False``
skips the sha256 check; ``options`` picks the accelerator in the engine's words (``{"providers":
["CUDAExecutionProvider"]}`` for ONNX Runtime, ``{"device": "GPU"}`` for OpenVINO), and a missing one is an
EngineMissingError unless ``cpu_fallback=True``, which loads on the CPU, warns (``CPUFallbackWarning``) and
sets ``model.fallback``. A bundle for an engine this device lacks, or needs a newer one than it has, is
refused with EngineMissingError naming the pip command; a damaged bundle with BundleError. Callers always
use the manifest's layouts (the NHWC of a TFLite artifact is transposed inside ``run``).

``python -m edgeify_runtime.bench`` is the benchmark agent; ``python -m edgeify_runtime.fingerprint`` prints
the device fingerprint (``device_fingerprint()`` returns it; the name leaves ``edgeify_runtime.fingerprint``
to the module). Example apps that embed this API (a folder classifier, an HTTP service with micro-batching)
are in the repository's ``examples/apps/``.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engines import available_engines
    from .errors import BundleError, EdgeifyRuntimeError, EngineMissingError, InputSignatureError
    from .fingerprint import fingerprint as device_fingerprint
    from .manifest import SCHEMA_VERSION, Manifest, TensorSpec
    from .session import CPUFallbackWarning, Model, load

#: keep equal to ``version`` in runtimes/pyproject.toml (a test checks); hard-coded so that a copied (not
#: installed) package still knows its version
__version__ = "0.1.0"

#: public name -> (module, attribute): found on first use (PEP 562), so that importing one module of the package
#: (``edgeify_runtime.errors``, ``.manifest``) does not load numpy and the session
_PUBLIC = {"available_engines": ("engines", "available_engines"), "BundleError": ("errors", "BundleError"),
           "EdgeifyRuntimeError": ("errors", "EdgeifyRuntimeError"),
           "EngineMissingError": ("errors", "EngineMissingError"),
           "InputSignatureError": ("errors", "InputSignatureError"),
           "device_fingerprint": ("fingerprint", "fingerprint"), "SCHEMA_VERSION": ("manifest", "SCHEMA_VERSION"),
           "Manifest": ("manifest", "Manifest"), "TensorSpec": ("manifest", "TensorSpec"),
           "CPUFallbackWarning": ("session", "CPUFallbackWarning"), "Model": ("session", "Model"),
           "load": ("session", "load")}


def __getattr__(name: str) -> Any:
    where = _PUBLIC.get(name)
    if where is None:
        return _submodule(name)
    return getattr(importlib.import_module(f"{__name__}.{where[0]}"), where[1])


def _submodule(name: str) -> Any:
    """``edgeify_runtime.session`` after a bare ``import edgeify_runtime``, as when the package imported it."""
    if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return importlib.import_module(f"{__name__}.{name}")


__all__ = [
    "SCHEMA_VERSION",
    "BundleError",
    "CPUFallbackWarning",
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
