"""Where edgeify keeps state: XDG base directories, or everything under ``EDGEIFY_HOME`` when set."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError


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


def logs_dir() -> Path:
    """Per-run logs of library messages edgeify kept off the terminal (the last few runs; safe to delete)."""
    return cache_dir() / "logs"


def user_targets_dir() -> Path:
    return config_dir() / "targets"


def results_db() -> Path:
    override = os.environ.get("EDGEIFY_RESULTS_DB")
    return Path(override) if override else data_dir() / "results.sqlite"


def ensure_writable_dir(path: Path, what: str) -> Path:
    """Create ``path`` if needed and prove it is writable (a probe file), or raise ConfigError (exit 4) naming
    ``EDGEIFY_HOME``/XDG variable that put it there. Called before a build starts, not after it ran."""
    import tempfile

    var = "EDGEIFY_HOME" if _home() else "XDG_* / HOME"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".edgeify-probe-"):
            pass
    except OSError as exc:
        raise ConfigError(f"the {what} {path} is not writable ({exc.strerror or exc}); it comes from {var}",
                          hint="point EDGEIFY_HOME at a writable directory (e.g. export EDGEIFY_HOME=~/.edgeify)"
                               + (", or pass --no-cache" if what == "step cache" else "")) from None
    return path
