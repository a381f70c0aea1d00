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


class ResultNotFoundError(UsageError):
    """A result id, tag or bundle digest that the store does not hold (a usage error: exit 2)."""

    hint = "`edgeify results` lists the stored results with their ids"


__all__ = ["ResultNotFoundError", "StoreError", "StoreSchemaError"]
