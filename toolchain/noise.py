"""Keep the libraries' chatter out of what a user reads: one place that knows the noise and silences it.

* Python loggers: torch's ONNX exporter warns ``torchvision is not installed. Skipping torchvision::...`` four
  times per export (edgeify never uses torchvision ops); NNCF draws progress bars from its Python API.
* Native stderr: TensorFlow/LiteRT write INFO lines from C++ (``oneDNN custom operations are on``, absl's
  ``All log messages before absl::InitializeLog()``, ``Created TensorFlow Lite XNNPACK delegate for CPU``) that
  no environment variable turns off in TF 2.21. :func:`native_stderr_filter` passes file descriptor 2 through a
  pipe and drops only those lines; everything else (real errors) reaches the terminal unchanged and at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator

#: lines (from native code) that carry no information for an edgeify user
NATIVE_NOISE = re.compile(
    r"oneDNN custom operations are on"
    r"|All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions: .* rebuild TensorFlow"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT"
    r"|cuda_executor\.cc.*could not open file to read NUMA node"
    r"|failed call to cuInit"
    r"|flatbuffer_export\.cc.*Estimated count of arithmetic ops"  # the TFLite converter, once per model
    # ai-edge-quantizer's report, printed on stdout after every quantization (edgeify's summary has the sizes)
    r"|Running Calibration::"  # its tqdm bar (tqdm reads TQDM_DISABLE only when imported)
    r"|^(Model name|Original model size|Quantized model size|Quantization Ratio|Total time): "
)

_TORCH_NOISY_LOGGERS = ("torch.onnx._internal.exporter._registration",)


def human_size(n: int | float) -> str:
    """Bytes as a person reads them: ``812 B``, ``46.3 kB``, ``14.2 MB`` (never ``0.000 MB``)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def is_noise(line: str) -> bool:
    return bool(NATIVE_NOISE.search(line))


def strip_noise(text: str) -> str:
    """``text`` without the noise lines (e.g. a converter log tail shown in an error)."""
    return "\n".join(ln for ln in text.splitlines() if not is_noise(ln))


def quiet_python_loggers() -> None:
    """Silence Python-level chatter (idempotent, imports nothing): torch exporter registration warnings."""
    for name in _TORCH_NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the TF C++ logs that still honour it


def quiet_nncf_progress() -> None:
    """NNCF's progress bars off (its ``track`` has no global switch: every instance gets ``disable=True``).
    Call after importing nncf; idempotent."""
    from nncf.common.logging.track_progress import track

    init = track.__init__
    if getattr(init, "_edgeify_quiet", False):
        return

    def quiet_init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs["disable"] = True
        init(self, *args, **kwargs)

    quiet_init._edgeify_quiet = True  # type: ignore[attr-defined]
    track.__init__ = quiet_init  # type: ignore[method-assign]


@contextlib.contextmanager
def native_stderr_filter() -> Iterator[None]:
    """File descriptor 2 through a filter that drops :data:`NATIVE_NOISE` lines (live, line by line)."""
    if os.environ.get("EDGEIFY_DEBUG"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    read_fd, write_fd = os.pipe()

    def pump() -> None:
        with os.fdopen(read_fd, "rb") as pipe:
            for raw in pipe:
                if not is_noise(raw.decode("utf-8", "replace")):
                    os.write(saved, raw)

    thread = threading.Thread(target=pump, name="edgeify-stderr-filter", daemon=True)
    thread.start()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the pump drains and stops
        thread.join(timeout=5)
        os.close(saved)
