"""The results store's public entry (``from edgeify.results import open_store``); the code is in ``edgeify.store``.

``open_store().add(BenchResult) -> id``, ``get(id)``, ``query(...)``: typed records in and out.
"""

from __future__ import annotations

from .store import ResultNotFoundError, StoreError, StoreSchemaError, open_store, store_url

__all__ = ["ResultNotFoundError", "StoreError", "StoreSchemaError", "open_store", "store_url"]
