"""The HTTP inference service for one bundle: ``python -m edgeify_runtime.serve --bundle DIR``.

Dynamic micro-batching, ``/healthz``, ``/v1/model``, ``/v1/predict``, Prometheus ``/metrics`` and the Open
Inference Protocol (``/v2``). It needs the ``serve`` extra (``pip install edgeify-runtime[serve]``: starlette,
uvicorn, prometheus-client); this package itself imports none of them until the service starts, so the host
can read :data:`REQUIREMENTS` without them.

Modules: ``codec`` (bodies <-> arrays), ``batcher`` (the micro-batcher), ``service`` (model + signature checks
+ metrics), ``http`` (routes, token, body limits), ``oip`` (the /v2 routes), ``cli`` (arguments, startup,
shutdown). The command line reference is ``python -m edgeify_runtime.serve --help`` and
``examples/apps/README.md``.
"""

from __future__ import annotations

#: what the service needs besides edgeify-runtime and an engine (the ``serve`` extra; lower bounds only)
REQUIREMENTS = ("starlette>=0.27", "uvicorn>=0.22", "prometheus-client>=0.16")

__all__ = ["REQUIREMENTS"]
