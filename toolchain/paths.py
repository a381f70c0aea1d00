"""Where edgeify keeps state: XDG base directories, or everything under ``EDGEIFY_HOME`` when set."""

from __future__ import annotations

import os
from pathlib import Path


def _xdg(var: str, default: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / default)


def _home() -> Path | None:
    h = os.environ.get("EDGEIFY_HOME")
    return Path(h).expanduser() if h else None


def config_dir() -> Path:
    """Devices file, user target specs (``targets/*.toml``)."""
    h = _home()
    return h / "config" if h else _xdg("XDG_CONFIG_HOME", ".config") / "edgeify"


def data_dir() -> Path:
    """Results store."""
    h = _home()
    return h / "data" if h else _xdg("XDG_DATA_HOME", ".local/share") / "edgeify"


def cache_dir() -> Path:
    """Per-step conversion cache (safe to delete)."""
    h = _home()
    return h / "cache" if h else _xdg("XDG_CACHE_HOME", ".cache") / "edgeify"


def user_targets_dir() -> Path:
    return config_dir() / "targets"


def results_db() -> Path:
    override = os.environ.get("EDGEIFY_RESULTS_DB")
    return Path(override) if override else data_dir() / "results.sqlite"
