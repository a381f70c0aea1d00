"""Finding build steps: every step, built-in or third-party, registers in the entry-point group ``edgeify.steps``
(``kind = "module:Class"``, in its distribution's ``pyproject.toml``). The table is read once (cached, immutable):
no mutable global registry, no import of a step module until that step is used. Two distributions registering
one kind is a ``ConfigError`` naming both; an unknown kind is a ``ConfigError`` with a did-you-mean.

>>> "check" in step_table() and step_class("check").kind == "check"
True
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from edgeify.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

STEP_ENTRY_POINT_GROUP = "edgeify.steps"


@dataclass(frozen=True)
class StepEntry:
    """One registered step: its kind, ``module:Class`` and the distribution that registered it."""

    kind: str
    value: str
    distribution: str


def _dist_name(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return str(getattr(dist, "name", None) or getattr(dist, "metadata", {}).get("Name", "") or "unknown")


@cache
def step_table() -> Mapping[str, StepEntry]:
    """Every registered step kind (read-only). Raises ``ConfigError`` when two distributions claim one kind."""
    from importlib.metadata import entry_points

    table: dict[str, StepEntry] = {}
    for ep in entry_points(group=STEP_ENTRY_POINT_GROUP):
        entry = StepEntry(ep.name, ep.value, _dist_name(ep))
        seen = table.get(ep.name)
        if seen is not None and (seen.value, seen.distribution) != (entry.value, entry.distribution):
            raise ConfigError(
                f"step kind {ep.name!r} is registered twice: by {seen.distribution} ({seen.value}) and by "
                f"{entry.distribution} ({entry.value})",
                hint=f"uninstall one of {seen.distribution} and {entry.distribution}, or rename one step kind")
        table[ep.name] = entry
    if not table:
        raise ConfigError(f"no build steps are registered (entry-point group {STEP_ENTRY_POINT_GROUP!r} is empty)",
                          hint="reinstall edgeify: pip install -e . (its pyproject.toml registers the steps)")
    return MappingProxyType(dict(sorted(table.items())))


@cache
def step_class(kind: str) -> Any:  # a steps.base.Step subclass (not imported here: base reads facts via this module)
    """The class registered for ``kind`` (imported on first use). It must be a ``steps.base.Step`` subclass (checked
    by its declarations, so this module does not import the contract it serves) whose ``kind`` is ``kind``."""
    table = step_table()
    if kind not in table:
        import difflib

        close = difflib.get_close_matches(kind, list(table), n=1)
        raise ConfigError(f"unknown step kind {kind!r}",
                          hint=(f"did you mean {close[0]!r}? " if close else "") + f"known: {', '.join(table)}")
    entry = table[kind]
    module, _, attr = entry.value.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"step kind {kind!r} ({entry.value}, from {entry.distribution}) cannot be loaded: {exc}",
                          hint=f"reinstall {entry.distribution}") from None
    is_step = isinstance(cls, type) and all(hasattr(cls, a) for a in ("run", "Config", "consumes", "produces", "facts",
                                                                         "search_space", "cache_key"))
    if not is_step or getattr(cls, "kind", None) != kind:
        raise ConfigError(f"entry point {kind} = {entry.value!r} ({entry.distribution}) is not a Step subclass whose "
                          f"kind is {kind!r}", hint=f"fix the [project.entry-points.\"{STEP_ENTRY_POINT_GROUP}\"] "
                                                    f"table of {entry.distribution}")
    return cls


@cache
def facts_records() -> Mapping[str, type]:
    """Namespace -> facts record class, from every registered step's ``facts`` declaration (for reading an
    artifact's or a manifest's ``facts``). Two different classes for one namespace are a ``ConfigError``."""
    out: dict[str, tuple[type, str]] = {}
    for kind in step_table():
        for rec in step_class(kind).facts:
            ns = rec.namespace
            if ns in out and out[ns][0] is not rec:
                raise ConfigError(f"facts namespace {ns!r} is declared by step {out[ns][1]!r} "
                                  f"({out[ns][0].__qualname__}) and by step {kind!r} ({rec.__qualname__})",
                                  hint="give the new facts record its own namespace")
            out.setdefault(ns, (rec, kind))
    return MappingProxyType({ns: rec for ns, (rec, _) in out.items()})


__all__ = ["STEP_ENTRY_POINT_GROUP", "StepEntry", "facts_records", "step_class", "step_table"]
