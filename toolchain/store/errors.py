"""Errors of the results store (subclasses of the documented classes in ``edgeify.errors``)."""

from __future__ import annotations

from ..errors import ConfigError, UsageError


class StoreError(ConfigError):
    """The results store cannot be opened or written (bad URL, server down, unwritable file)."""

    hint = ("check EDGEIFY_RESULTS_URL / the [results] url in the config file (`edgeify results --help`), "
            "or unset it to use the local SQLite store")


class StoreSchemaError(StoreError):
    """The store was written by a newer edgeify (its schema version is above the one this edgeify reads)."""

    hint = "upgrade edgeify on this machine, or point EDGEIFY_RESULTS_URL at another store"


def sqlite_error(path: str, detail: str) -> StoreError:
    """A StoreError for the local SQLite file ``path``, with a fix about that file (not the server URL)."""
    low = detail.lower()
    if "full" in low or "no space" in low or "quota" in low:
        hint = (f"free space on the filesystem of {path} (df -h {_parent(path)}), or set EDGEIFY_RESULTS_DB to a "
                "file on another disk")
    elif "not a database" in low or "malformed" in low or "corrupt" in low:
        hint = (f"{path} is not a usable SQLite database: move it aside (mv {path} {path}.bad) and edgeify starts "
                "an empty store there, or set EDGEIFY_RESULTS_DB to another file")
    else:
        hint = (f"check that {path} is a SQLite file this user can read and write (and its directory too), or set "
                "EDGEIFY_RESULTS_DB to another file")
    return StoreError(f"results store {path}: {detail}", hint=hint)


def _parent(path: str) -> str:
    import os

    return os.path.dirname(os.path.abspath(path)) or "."


class ResultNotFoundError(UsageError):
    """A result id, tag or bundle digest that the store does not hold (a usage error: exit 2)."""

    hint = "`edgeify results` lists the stored results with their ids"


__all__ = ["ResultNotFoundError", "StoreError", "StoreSchemaError", "sqlite_error"]
