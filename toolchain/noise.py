"""Keep the libraries' chatter out of what a user reads: one place that knows the noise and silences it.

* Python loggers: torch's ONNX exporter warns ``torchvision is not installed. Skipping torchvision::...`` four
  times per export (edgeify never uses torchvision ops); NNCF draws progress bars from its Python API.
* Native stderr: TensorFlow/LiteRT write INFO lines from C++ (``oneDNN custom operations are on``, absl's
  ``All log messages before absl::InitializeLog()``, ``Created TensorFlow Lite XNNPACK delegate for CPU``) that
  no environment variable turns off in TF 2.21. :func:`native_stderr_filter` passes file descriptor 2 through a
  pipe and drops only those lines; everything else (real errors) reaches the terminal unchanged and at once.

What is kept off the terminal is not thrown away: the dropped native lines, the Python warnings and warning-level
log records captured around converters and exporters (:func:`captured_warnings`, :func:`captured_logging`, the
quieted loggers) and a failed converter's whole output are appended to one log per run (:func:`keep`), under
``paths.logs_dir()`` (the last :data:`KEEP_LOGS` runs, each cut at :data:`MAX_LOG_BYTES`, mode 0600, values of
token/password/secret-like keys masked). The CLI names that file under a failed command's ``fix:`` line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from .paths import logs_dir

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


#: the environment variable naming this run's log: child processes (converter workers) append to the same file
LOG_ENV = "EDGEIFY_NOISE_LOG"
KEEP_LOGS = 20
MAX_LOG_BYTES = 1_000_000
_MAX_LINE = 2000
_SECRET = re.compile(r"(?i)(\bbearer\s+|\b[\w.-]*(?:token|secret|passw(?:or)?d|api[_-]?key|authorization|credential)"
                     r"[\w.-]*[\"']?\s*[:=]\s*[\"']?)((?:bearer\s+)?[^\s\"',;]+)")
_log_lock = threading.Lock()


def redact(line: str) -> str:
    """``line`` with the values of token/password/secret-like keys (and bearer tokens) masked."""
    return _SECRET.sub(lambda m: m.group(1) + "***", line)


def begin_log() -> Path | None:
    """A fresh log for this run (the CLI calls it once per command); its path goes to :data:`LOG_ENV` so child
    processes append to it. The file is created at the first line kept. None (no log) without a home directory."""
    try:
        path = logs_dir() / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    except (RuntimeError, OSError, KeyError):  # Path.home() without HOME or a passwd entry
        return None
    os.environ[LOG_ENV] = str(path)
    return path


def log_path() -> Path | None:
    """This run's log file (it may not exist yet), or None before :func:`begin_log`/:func:`keep`."""
    p = os.environ.get(LOG_ENV)
    return Path(p) if p else None


def log_with_content() -> Path | None:
    """This run's log when something was kept in it (what an error message points to), else None."""
    path = log_path()
    try:
        return path if path is not None and path.stat().st_size > 0 else None
    except OSError:
        return None


def log_note() -> str | None:
    """The line a failed command prints under its ``fix:`` line, naming this run's log; None when it is empty."""
    log = log_with_content()
    return None if log is None else f"log: library messages of this run (kept off the terminal): {log}"


def _rotate(directory: Path) -> None:
    """Keep the newest ``KEEP_LOGS - 1`` logs (the one being created makes KEEP_LOGS)."""
    logs = sorted(directory.glob("*.log"), key=lambda p: p.stat().st_mtime if p.exists() else 0.0)
    for old in logs[:max(0, len(logs) - (KEEP_LOGS - 1))]:
        with contextlib.suppress(OSError):
            old.unlink()


def keep(source: str, text: str, *, last: int = 400) -> None:
    """Append ``text`` (its last ``last`` non-blank lines, secrets masked, each line tagged with time and
    ``source``) to this run's log. Never raises: a log that cannot be written must not fail a build."""
    lines = [ln.rstrip() for ln in str(text).splitlines() if ln.strip()][-last:]
    if not lines:
        return
    stamp = time.strftime("%H:%M:%S")
    body = "".join(f"{stamp} [{source}] {redact(ln if len(ln) <= _MAX_LINE else ln[:_MAX_LINE] + ' …')}\n"
                   for ln in lines).encode("utf-8", "replace")
    with _log_lock, contextlib.suppress(OSError):
        path = log_path() or begin_log()
        if path is None:
            return
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            _rotate(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size < MAX_LOG_BYTES:
                if size + len(body) > MAX_LOG_BYTES:
                    body = body[:MAX_LOG_BYTES - size] + f"\n… (log cut at {human_size(MAX_LOG_BYTES)})\n".encode()
                os.write(fd, body)
        finally:
            os.close(fd)


class _KeepHandler(logging.Handler):
    """Log records into this run's log; errors also still reach stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            keep(record.name, f"{record.levelname}: {record.getMessage()}")
            if record.levelno >= logging.ERROR:
                sys.stderr.write(f"{record.name}: {record.getMessage()}\n")


@contextlib.contextmanager
def captured_warnings(source: str = "warning") -> Iterator[None]:
    """Python warnings raised inside go to this run's log instead of the terminal."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            keep(source, "\n".join(dict.fromkeys(
                f"{w.category.__name__}: {w.message} ({Path(w.filename).name}:{w.lineno})" for w in seen)))


@contextlib.contextmanager
def captured_logging(below: int = logging.ERROR) -> Iterator[None]:
    """Log records under ``below`` (from any logger, whatever its handlers) go to this run's log instead of
    the terminal while inside; errors pass as before. In-process and global, as ``logging.disable`` is."""
    original = logging.Logger.callHandlers

    def call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:
        if record.levelno >= below:
            original(self, record)
        else:
            with contextlib.suppress(Exception):
                keep(record.name, f"{record.levelname}: {record.getMessage()}")

    logging.Logger.callHandlers = call_handlers  # type: ignore[method-assign]
    try:
        yield
    finally:
        logging.Logger.callHandlers = original  # type: ignore[method-assign]


def quiet_python_loggers() -> None:
    """Keep Python-level chatter off the terminal (idempotent, imports nothing): torch exporter registration
    warnings go to this run's log."""
    for name in _TORCH_NOISY_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        logger.propagate = False
        if not any(isinstance(h, _KeepHandler) for h in logger.handlers):
            logger.addHandler(_KeepHandler())
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
    """File descriptor 2 through a filter that moves :data:`NATIVE_NOISE` lines to this run's log (live, line
    by line); every other line reaches the terminal at once."""
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
                line = raw.decode("utf-8", "replace")
                if is_noise(line):
                    keep("native stderr", line)
                else:
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
