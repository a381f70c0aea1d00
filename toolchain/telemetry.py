"""edgeify sends no usage data, and does not let the tools it drives send theirs.

OpenVINO's converter (``openvino.convert_model``) and NNCF post usage events to an analytics service through
``openvino_telemetry`` unless the user has opted out or the process looks like a CI job. A build is no place for
that: it is traffic off the machine that nobody asked for, and offline the sender's child process hangs, so the
build's process (or a test run) waits for it at exit. :func:`vendor_telemetry_off` declines it for the duration
of the call through the switches those libraries read themselves: ``NNCF_CI`` (NNCF drops its telemetry object
when it is set at import) and ``CI=true`` (``openvino_telemetry``'s own "running in CI" check, made each time the
telemetry object is initialised, which ``convert_model`` does on every call). A user's own opt-in file
(``~/intel/openvino_telemetry``) is neither read nor changed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

#: the variables the vendors' telemetry checks, and the value that declines it
DECLINE = {"NNCF_CI": "1", "CI": "true"}


@contextlib.contextmanager
def vendor_telemetry_off() -> Iterator[None]:
    """Run the block with OpenVINO's and NNCF's telemetry declined; the environment is restored afterwards."""
    saved = {k: os.environ.get(k) for k in DECLINE}
    os.environ.update(DECLINE)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
