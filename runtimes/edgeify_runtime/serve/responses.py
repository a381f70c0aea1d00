"""JSON responses of the HTTP layer (``/v1``, ``/v2``, ``/healthz``): always strict JSON (``NaN`` and
``Infinity`` are never written; :func:`codec.dumps`). Shared by ``http`` and ``oip`` without either importing
the other."""

from __future__ import annotations

from typing import Any

from .codec import dumps


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import Response

    return Response(dumps(doc), status_code=status, media_type="application/json", headers=headers)


__all__ = ["json_response"]
