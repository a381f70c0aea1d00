"""The target registry: built-in spec files, user spec files and entry points, validated into one immutable map.

Spec file format (TOML)::

    [families.x86]                 # a family name is an alias for its default board
    default = "x86-avx2"
    description = "Generic x86-64 CPUs"

    [templates.x86-cpu]            # a family helper: fields shared by boards that `extends` it
    family = "x86"
    arch = "x86_64"
    ...

    [[targets]]                    # one entry per board
    name = "x86-avx2"
    extends = "x86-cpu"
    ...

    [engines.NAME]                 # an engine for boards defined elsewhere (an engine plugin's target file)
    families = ["rpi", "x86"]      # every board of these families gets it (fields as a board's engines.NAME)
    runtime = "NAME"
    ...

``extends`` deep-merges the template under the board: tables merge key by key, and lists of tables that carry an
``id`` (pipelines) merge entry by entry, so a board can change one step's config without restating the pipeline.

Sources, in load order: the built-in files shipped in ``edgeify/targets/builtin``, files registered by
installed packages under the entry-point group ``edgeify.targets`` (the entry point resolves to a path, a parsed
dict, or a callable returning either), ``*.toml`` in the user's config dir (``edgeify.paths.user_targets_dir``),
and files passed with ``--target-file``. A name defined twice is an error naming both places.
"""

from __future__ import annotations

import copy
import difflib
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edgeify.errors import ConfigError, TargetError
from edgeify.paths import user_targets_dir
from edgeify.pipeline import validate_spec_steps
from pydantic import ValidationError

from .spec import EngineSpec, TargetSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENTRY_POINT_GROUP = "edgeify.targets"


def _config_error(message: str, hint: str = ""):
    return ConfigError(message, hint=hint)


def _target_error(message: str, hint: str = ""):
    return TargetError(message, hint=hint)


@dataclass(frozen=True)
class Family:
    name: str
    default: str
    description: str
    source: str


class Registry:
    """Immutable: ``targets`` and ``families`` are read-only mappings. Build a new one to add specs."""

    def __init__(self, targets: Mapping[str, TargetSpec], families: Mapping[str, Family],
                 templates: Mapping[str, str] | None = None) -> None:
        self.targets: Mapping[str, TargetSpec] = MappingProxyType(dict(targets))
        self.families: Mapping[str, Family] = MappingProxyType(dict(families))
        #: template name -> the file defining it (what a target file's ``extends`` may name)
        self.templates: Mapping[str, str] = MappingProxyType(dict(templates or {}))

    def __iter__(self):
        return iter(self.targets.values())

    def __len__(self) -> int:
        return len(self.targets)

    def resolve(self, name: str) -> tuple[TargetSpec, str | None]:
        """Return (spec, family) for a board or family name; family is set when an alias was used."""
        if name in self.targets:
            return self.targets[name], None
        if name in self.families:
            fam = self.families[name]
            return self.targets[fam.default], name
        choices = list(self.targets) + list(self.families)
        close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise _target_error(f"unknown target {name!r}",
                            hint=f"{hint}`edgeify targets` lists the {len(self.targets)} known targets")

    def get(self, name: str) -> TargetSpec:
        return self.resolve(name)[0]


# -- loading --------------------------------------------------------------------------------------------


@dataclass
class _Doc:
    data: dict[str, Any]
    source: str


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if (isinstance(base, list) and isinstance(over, list) and base and over
            and all(isinstance(x, dict) and "id" in x for x in base + over)):
        out_list = [copy.deepcopy(x) for x in base]
        index = {x["id"]: i for i, x in enumerate(out_list)}
        for item in over:
            if item["id"] in index:
                out_list[index[item["id"]]] = _merge(out_list[index[item["id"]]], item)
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(over)


def _read_toml(path: Path) -> _Doc:
    try:
        with open(path, "rb") as f:
            return _Doc(tomllib.load(f), str(path))
    except FileNotFoundError as exc:
        raise _config_error(f"target file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise _config_error(f"{path}: invalid TOML: {exc}") from exc


def _builtin_docs() -> list[_Doc]:
    docs = []
    root = resources.files("edgeify.targets") / "builtin"
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            docs.append(_Doc(tomllib.loads(entry.read_text(encoding="utf-8")), f"builtin:{entry.name}"))
    return docs


def _entry_point_docs() -> list[_Doc]:
    from importlib.metadata import entry_points

    docs = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {ep.name} = {ep.value}"
        try:
            obj = ep.load()
            if callable(obj):
                obj = obj()
        except Exception as exc:
            raise _config_error(f"{where}: failed to load: {exc}") from exc
        if isinstance(obj, Mapping):
            docs.append(_Doc(dict(obj), where))
        elif isinstance(obj, (str, os.PathLike)):
            d = _read_toml(Path(obj))
            docs.append(_Doc(d.data, f"{where} ({obj})"))
        else:
            raise _config_error(f"{where}: must give a TOML path, a dict, or a callable returning one")
    return docs


def _user_dir_docs(directory: Path) -> list[_Doc]:
    if not directory.is_dir():
        return []
    return [_read_toml(p) for p in sorted(directory.glob("*.toml"))]


def build_registry(docs: Iterable[_Doc]) -> Registry:
    docs = list(docs)
    known_top = {"schema", "families", "templates", "targets", "engines"}
    templates: dict[str, tuple[dict[str, Any], str]] = {}
    families: dict[str, Family] = {}
    for doc in docs:
        unknown = set(doc.data) - known_top
        if unknown:
            raise _config_error(f"{doc.source}: unknown top-level keys {sorted(unknown)}",
                                hint=f"a target file has only {sorted(known_top)}")
        for name, tpl in (doc.data.get("templates") or {}).items():
            if name in templates:
                raise _config_error(f"template {name!r} defined twice: {templates[name][1]} and {doc.source}")
            templates[name] = (tpl, doc.source)
        for name, fam in (doc.data.get("families") or {}).items():
            if name in families:
                raise _config_error(f"family {name!r} defined twice: {families[name].source} and {doc.source}")
            if not isinstance(fam, dict) or "default" not in fam:
                raise _config_error(f"{doc.source}: family {name!r} needs a `default` board")
            families[name] = Family(name, fam["default"], fam.get("description", ""), doc.source)

    def expand(raw: dict[str, Any], source: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
        parent = raw.get("extends")
        body = {k: v for k, v in raw.items() if k != "extends"}
        if parent is None:
            return body
        if not isinstance(parent, str):
            raise _config_error(f"{source}: extends must name a template, not {str(parent)[:40]!r}")
        if parent in seen:
            raise _config_error(f"{source}: template cycle {' -> '.join((*seen, parent))}")
        if parent not in templates:
            close = difflib.get_close_matches(parent, list(templates), n=1)
            raise _config_error(f"{source}: extends unknown template {parent!r}",
                                hint=f"did you mean {close[0]!r}?" if close else "")
        return _merge(expand(templates[parent][0], templates[parent][1], (*seen, parent)), body)

    added = _family_engines(docs)
    targets: dict[str, TargetSpec] = {}
    for doc in docs:
        for i, raw in enumerate(doc.data.get("targets") or []):
            label = raw.get("name", f"targets[{i}]") if isinstance(raw, dict) else f"targets[{i}]"
            if not isinstance(raw, dict):
                raise _config_error(f"{doc.source}: {label} is not a table")
            data = _with_family_engines(expand(raw, doc.source), added, doc.source)
            try:
                spec = TargetSpec.model_validate({**data, "source": doc.source})
            except ValidationError as exc:
                lines = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
                raise _config_error(f"{doc.source}: invalid target {label!r}: {lines}") from None
            if spec.name in targets:
                raise _config_error(
                    f"target {spec.name!r} is defined twice: {targets[spec.name].source} and {doc.source}",
                    hint="rename one of them; edgeify never lets one spec silently replace another")
            targets[spec.name] = spec
    for fam in families.values():
        if fam.name in targets:
            raise _config_error(f"family {fam.name!r} ({fam.source}) has the same name as a target")
        if fam.default not in targets:
            raise _config_error(f"family {fam.name!r} ({fam.source}): default board {fam.default!r} is not defined")
    _check_step_kinds(targets.values())
    return Registry(targets, families, {name: src for name, (_, src) in templates.items()})


def _family_engines(docs: list[_Doc]) -> dict[str, tuple[dict[str, Any], tuple[str, ...], str]]:
    """``[engines.NAME]`` tables (an engine plugin's target file): name -> (engine fields, families, source)."""
    out: dict[str, tuple[dict[str, Any], tuple[str, ...], str]] = {}
    for doc in docs:
        for name, raw in (doc.data.get("engines") or {}).items():
            if not isinstance(raw, dict) or not isinstance(raw.get("families"), list) or not raw["families"]:
                raise _config_error(f"{doc.source}: engines.{name} needs `families`, a list of target families")
            if name in out:
                raise _config_error(f"engine {name!r} is added to target families twice: {out[name][2]} and "
                                    f"{doc.source}")
            out[name] = ({k: v for k, v in raw.items() if k != "families"}, tuple(map(str, raw["families"])),
                         doc.source)
    return out


def _with_family_engines(data: dict[str, Any], added: Mapping[str, tuple[dict[str, Any], tuple[str, ...], str]],
                         source: str) -> dict[str, Any]:
    """A board's expanded fields with the added engines of its family (a board's own engine of that name is an
    error: one spec never silently replaces another)."""
    fam = data.get("family")
    mine = {n: e for n, (e, fams, _) in added.items() if fam in fams}
    if not mine:
        return data
    engines = dict(data.get("engines") or {})
    for name, eng in mine.items():
        if name in engines and _same_engine(engines[name], eng):
            continue  # the same definition (e.g. a target pasted from `edgeify targets show`): nothing to add
        if name in engines:
            raise _config_error(f"{source}: target {data.get('name')!r} already has an engine {name!r}; "
                                f"{added[name][2]} adds one to family {fam!r} too")
        engines[name] = copy.deepcopy(eng)
    return {**data, "engines": engines}


def _same_engine(a: Any, b: Any) -> bool:
    """Two engine tables that validate to the same EngineSpec (one resolved with its defaults, one not)."""
    try:
        return EngineSpec.model_validate(a) == EngineSpec.model_validate(b)
    except Exception:  # either is invalid: not the same; the registry reports the invalid one where it is used
        return False


def _check_step_kinds(specs: Iterable[TargetSpec]) -> None:
    for spec in specs:
        validate_spec_steps(spec)


def load_registry(target_files: Iterable[str | os.PathLike[str]] = (), *, user_dir: Path | None = None,
                  entry_points: bool = True) -> Registry:
    """Load built-in, entry-point, user-dir and explicit target files into one validated registry."""

    docs = _builtin_docs()
    if entry_points:
        docs += _entry_point_docs()
    docs += _user_dir_docs(user_dir if user_dir is not None else user_targets_dir())
    docs += [_read_toml(Path(p)) for p in target_files]
    try:
        return build_registry(docs)
    except (TypeError, AttributeError) as exc:  # a value of the wrong type where a table or list belongs (fuzzing)
        files = ", ".join(str(p) for p in target_files) or "the target spec files"
        raise _config_error(f"{files}: a field has the wrong type ({type(exc).__name__}: {exc})",
                            hint="compare with a built-in spec: targets/builtin/*.toml") from None
