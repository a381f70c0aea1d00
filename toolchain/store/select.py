"""What users type to pick results, resolved to store filters: target aliases through the registry, bundle paths
to manifest digests, ``--since 3d``, result references (id, tag, bundle digest or path) and the "matched
nothing" message that says what the store does hold."""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeify.errors import ConfigError, TargetError
from edgeify.targets import load_registry
from edgeify_runtime.identity import manifest_identity

from ..errors import UsageError
from .errors import ResultNotFoundError

_HEX = re.compile(r"^[0-9a-fA-F]{4,64}$")
_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: a reference made of digits only and at most this long is a result id (a digest prefix is longer or has a-f)
_ID_DIGITS = 9


@dataclass(frozen=True)
class Filters:
    """Store filters as the CLI gave them (``given``) and resolved (the rest): pass ``as_query()`` to the store."""

    device: str | None = None
    target: tuple[str, ...] | None = None
    bundle: str | None = None
    run_id: str | None = None
    since: _dt.datetime | None = None
    given: dict[str, str] = field(default_factory=dict)

    def as_query(self) -> dict[str, Any]:
        return {"device": self.device, "target": None if self.target is None else list(self.target),
                "bundle": self.bundle, "run_id": self.run_id, "since": self.since}

    def describe(self) -> str:
        return " ".join(f"--{k} {v}" for k, v in self.given.items())


def target_names(name: str, target_files: Iterable[str] = ()) -> tuple[str, ...]:
    """A board name -> itself; a family alias (``x86``) -> every board of that family. A name the registry does not
    know is kept as it is (the store may hold results of a target file that is gone)."""

    try:
        reg = load_registry(list(target_files))
    except ConfigError:
        return (name,)
    if name in reg.targets:
        return (name,)
    if name in reg.families:
        return tuple(sorted(s.name for s in reg if s.family == name)) or (reg.families[name].default,)
    try:
        return (reg.get(name).name,)
    except TargetError:
        return (name,)


def bundle_digest(value: str) -> str:
    """A bundle directory (its identity: files, engine, precision and engine options, see
    ``edgeify_runtime.identity``) or an identity / digest prefix (hex, at least 4 characters)."""

    path = Path(value).expanduser()
    if path.is_dir():
        manifest = path / "manifest.json"
        try:
            raw = json.loads(manifest.read_text(encoding="utf-8"))
            digest = raw.get("bundle_digest")
        except (OSError, ValueError, AttributeError) as exc:
            raise UsageError(f"--bundle {value}: a directory without a readable manifest.json ({exc})",
                             hint="give a bundle directory that `edgeify build` wrote, or a bundle digest") from exc
        if not digest:
            raise UsageError(f"--bundle {value}: its manifest has no bundle_digest", hint="rebuild the bundle")
        return manifest_identity(raw)
    if _HEX.match(value):
        return value.lower()
    raise UsageError(f"--bundle {value}: no such bundle directory, and not a bundle digest",
                     hint="give a bundle directory (build/digits-x86) or a digest prefix from `edgeify results`")


def parse_since(value: str, *, now: _dt.datetime | None = None) -> _dt.datetime:
    """``3d``, ``12h``, ``30m``, ``2w`` (that long ago) or an ISO date/time (UTC unless it says otherwise)."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    m = _AGO.match(value.strip())
    if m:
        try:
            return now - _dt.timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
        except OverflowError:  # e.g. 1000000d: before year 1
            raise UsageError(f"--since {value}: too long ago", hint="e.g. --since 3d, --since 12h or --since "
                                                                    "2026-12-01") from None
    try:
        when = _dt.datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise UsageError(f"--since {value}: not a time", hint="e.g. --since 3d, --since 12h or --since 2026-12-01") \
            from exc
    return when if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc)


def make_filters(*, device: str | None = None, target: str | None = None, bundle: str | None = None,
                 run_id: str | None = None, since: str | None = None,
                 target_files: Iterable[str] = ()) -> Filters:
    given = {k: v for k, v in (("device", device), ("target", target), ("bundle", bundle), ("run", run_id),
                               ("since", since)) if v}
    return Filters(device=device, target=target_names(target, target_files) if target else None,
                   bundle=bundle_digest(bundle) if bundle else None, run_id=run_id,
                   since=parse_since(since) if since else None, given=given)


def nothing_matched(store: Any, filters: Filters) -> str:
    """The message for an empty answer: an empty store, or which filter matched nothing and what exists."""
    total = store.count()
    if total == 0:
        return f"no results yet in {store.location}; run `edgeify bench BUNDLE`"
    parts = []
    if filters.device is not None:
        parts.append("devices: " + _few(store.distinct("device")))
    if filters.target is not None:
        parts.append("targets: " + _few(store.distinct("target")))
    if filters.bundle is not None:
        parts.append("bundles: " + _few([d[:12] for d in store.distinct("bundle_id")]))
    if filters.run_id is not None:
        parts.append("runs: " + _few(store.distinct("run_id")))
    resolved = ""
    if filters.target is not None and tuple(filters.given.get("target", "").split(",")) != filters.target:
        resolved = f" (target {filters.given['target']} = {', '.join(filters.target)})"
    if filters.bundle is not None and filters.given.get("bundle", "").lower() != filters.bundle:
        resolved += f" (bundle {filters.bundle[:12]})"
    return (f"no result matches {filters.describe()}{resolved}; the store {store.location} holds {total} "
            f"result(s)" + (": " + "; ".join(parts) if parts else ""))


def _few(values: Sequence[str], n: int = 8) -> str:
    shown = ", ".join(values[:n])
    return (shown + f", … ({len(values)} in all)") if len(values) > n else (shown or "none")


# -- references (compare, gate) ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """What a reference named: its results (one, or a tag's set) and how it was read."""

    ref: str
    kind: str  # "id" | "tag" | "bundle"
    results: tuple[Any, ...]

    @property
    def ids(self) -> list[int]:
        return [int(r.result_id) for r in self.results]


def select(store: Any, ref: str, *, runs: int | None = None) -> Selection:
    """A result id (``41``, ``#41``), a tag (``baseline-main``), a bundle identity / digest prefix or a bundle
    directory: its latest result, or with ``runs`` its ``runs`` newest results (one per run, for run-level
    statistics)."""
    text = str(ref).strip().lstrip("#")
    if text.isdigit() and len(text) <= _ID_DIGITS:
        return Selection(ref, "id", (store.get(int(text)),))
    tagged = store.tagged(text)
    if tagged:
        return Selection(ref, "tag", tuple(store.query(ids=tagged, limit=None)))
    if Path(text).expanduser().is_dir() or _HEX.match(text):
        digest = bundle_digest(text)
        latest = store.query(bundle=digest, limit=runs or 1)
        series = (latest[0].series or {}).get("id") if latest and runs is None else None
        if series:  # the latest run belongs to an interleaved series (bench --repeat): all its runs of this bundle
            latest = store.query(bundle=digest, series=str(series), limit=None)
        if not latest:
            raise ResultNotFoundError(f"no result of bundle {digest[:12]} in {store.location}",
                                      hint=f"benchmark it first: `edgeify bench {text}`")
        return Selection(ref, "bundle", tuple(latest))
    tags = sorted(store.tags())
    raise ResultNotFoundError(f"{ref!r} is not a result id, a tag or a bundle digest in {store.location}",
                              hint="result ids: `edgeify results`; tags: " + (_few(tags) if tags else
                                   "none yet (`edgeify results tag ID NAME`)"))


__all__ = ["Filters", "Selection", "bundle_digest", "make_filters", "nothing_matched", "parse_since", "select",
           "target_names"]
