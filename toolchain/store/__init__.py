"""The results store: every benchmark result, whole, on SQLite (the zero-setup default) or PostgreSQL (a team).

>>> import tempfile, os
>>> from edgeify_runtime.result import BenchResult
>>> with tempfile.TemporaryDirectory() as d, open_store(f"sqlite:///{d}/r.sqlite") as store:
...     rid = store.add(BenchResult(bundle_digest="ab" * 32, device="pi5", samples_ms=(1.0, 2.0)))
...     got = store.get(rid)
...     (got.result_id == rid, got.device, got.samples_ms, [r.result_id for r in store.query(device="pi5")] == [rid])
(True, 'pi5', (1.0, 2.0), True)

Where it lives (first that is set): ``EDGEIFY_RESULTS_URL`` (``sqlite:///path`` or ``postgresql://user@host/db``),
``url`` under ``[results]`` in ``config.toml`` in the config directory, ``EDGEIFY_RESULTS_DB`` (a SQLite file),
``results.sqlite`` in the data directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from ..paths import config_dir, results_db
from .errors import ResultNotFoundError, StoreError, StoreSchemaError

#: the config file's table and key for the store URL
CONFIG_FILE = "config.toml"


def _config_url() -> str | None:
    path = config_dir() / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}", hint="fix the file (TOML: [results] url = \"postgresql://...\")") from exc
    url = (doc.get("results") or {}).get("url")
    if url is not None and not isinstance(url, str):
        raise ConfigError(f"{path}: [results] url must be a string", hint='e.g. url = "postgresql://host/edgeify"')
    return url or None


def store_url() -> str:
    """The URL :func:`open_store` uses with no argument (see the module docstring for the order)."""

    url = os.environ.get("EDGEIFY_RESULTS_URL") or _config_url()
    return normalize_url(url) if url else f"sqlite:///{Path(results_db())}"


def normalize_url(url: str) -> str:
    """``postgresql://`` -> the psycopg 3 driver (SQLAlchemy would pick psycopg2); refuse other schemes."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if not url.startswith(("sqlite://", "postgresql+psycopg://")):
        raise StoreError(f"results store URL {url.split('://')[0]}://... is not a store edgeify knows",
                         hint="use sqlite:///path/results.sqlite or postgresql://user@host/db")
    return url


def open_store(url: str | os.PathLike[str] | None = None):  # -> ResultStore (imported lazily: SQLAlchemy)
    """The results store at ``url`` (a URL or a SQLite file path), else the configured one."""
    from .sql import ResultStore

    if url is None:
        url = store_url()
    elif not isinstance(url, str) or "://" not in url:
        url = f"sqlite:///{Path(url)}"
    return ResultStore(normalize_url(url))


__all__ = ["ResultNotFoundError", "StoreError", "StoreSchemaError", "normalize_url", "open_store", "store_url"]
