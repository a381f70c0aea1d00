"""The open, namespaced facts a step records about its artifact.

A step declares the records it writes (``Step.facts``); each record class names its ``namespace``. The artifact
carries them as ``Artifact.facts`` (namespace -> record), the step cache stores them, and the bundle writer puts
them, generically, into the manifest's ``facts`` object (``{"namespace": {...}}``); readers validate each
namespace with the record class the registered steps declare for it. A new step therefore adds its own record in
its own module and edits neither the closed records (``records.py``), the manifest schema, the bundle writer nor
the report.

A new record subclasses ``StepFacts`` (a frozen pydantic model)::

    class PruneFacts(StepFacts):
        namespace: ClassVar[str] = "prune"
        sparsity: float = Field(description="fraction of weights set to zero")

The built-in records of ``records.py`` (``ExportFacts``, ``GraphFacts``, ``TfliteFacts``) are frozen dataclasses
with the same two methods (``to_dict`` / ``from_dict``) and a ``namespace``.

>>> class Demo(StepFacts):
...     namespace: ClassVar[str] = "demo"
...     ratio: float
>>> Demo.from_dict(Demo(ratio=0.5).to_dict()) == Demo(ratio=0.5)
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

from edgeify_runtime.errors import BundleError
from pydantic import BaseModel, ConfigDict, ValidationError

from .registry import facts_records


@runtime_checkable
class FactsRecord(Protocol):
    """What a facts record offers: its namespace and one JSON serialization."""

    namespace: ClassVar[str]

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any: ...


class StepFacts(BaseModel):
    """Base of a step's typed facts record (frozen; unknown keys are refused on read)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    namespace: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StepFacts:
        return cls.model_validate(dict(d))


class UnknownFacts:
    """A namespace no installed step declares (its plugin is not installed here): kept as read, never lost."""

    def __init__(self, namespace: str, data: Mapping[str, Any]) -> None:
        self.namespace_name = namespace
        self.data = dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnknownFacts) and (other.namespace_name, other.data) == (self.namespace_name,
                                                                                        self.data)

    def __repr__(self) -> str:
        return f"UnknownFacts({self.namespace_name!r}, {self.data!r})"


def read_facts(raw: Mapping[str, Any] | None, *, where: str = "facts") -> dict[str, Any]:
    """``{namespace: dict}`` -> ``{namespace: record}``, each validated by its declared record class. A malformed
    record is a ``BundleError`` naming the namespace; an undeclared namespace stays an ``UnknownFacts``."""

    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise BundleError(f"{where}: expected an object of namespaces, got {type(raw).__name__}")
    known = facts_records()
    out: dict[str, Any] = {}
    for ns, data in raw.items():
        cls = known.get(ns)
        if cls is None:
            out[ns] = UnknownFacts(ns, data if isinstance(data, Mapping) else {"value": data})
            continue
        try:
            out[ns] = cls.from_dict(data)
        except (KeyError, TypeError, ValueError, ValidationError) as exc:
            raise BundleError(f"{where}.{ns}: malformed {cls.__name__} record: {exc}") from exc
    return out


def write_facts(facts: Mapping[str, Any]) -> dict[str, Any]:
    """``{namespace: record}`` -> the JSON form (sorted by namespace)."""
    return {ns: facts[ns].to_dict() for ns in sorted(facts)}


def facts_of(manifest: Any, record: type) -> Any:
    """A bundle manifest's record of ``record``'s namespace, validated (None: the bundle has none)."""
    raw = (getattr(manifest, "facts", None) or {}).get(record.namespace)
    if raw is None:
        return None
    try:
        return record.from_dict(raw)
    except (KeyError, TypeError, ValueError, ValidationError) as exc:
        raise BundleError(f"manifest facts.{record.namespace}: malformed {record.__name__} record: {exc}") from exc


__all__ = ["FactsRecord", "StepFacts", "UnknownFacts", "facts_of", "read_facts", "write_facts"]
