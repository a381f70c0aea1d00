"""Load a ``.pt2`` without full unpickling: every ``torch.load`` inside ``torch.export.load`` is forced to
``weights_only=True`` and the archive reader's raw ``pickle.loads`` / TorchScript-object unpickler refuse.

``torch.export.load`` itself falls back to ``torch.load(weights_only=False)`` (arbitrary code) when a part does
not load weights-only; archives written by ``torch.export.save`` from plain modules never need that.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class NeedsUnpickling(Exception):  # not a RuntimeError: torch.export.load swallows those
    """A part of the archive can only be loaded by full unpickling."""


class _Guard:
    def __init__(self) -> None:
        self.refused: list[str] = []

    def refuse(self, what: str) -> None:
        self.refused.append(what)
        raise NeedsUnpickling(what)

    def raise_if_refused(self) -> None:  # torch may have caught our exception and carried on
        if self.refused:
            raise NeedsUnpickling(self.refused[0])


@contextlib.contextmanager
def weights_only_loads() -> Iterator[_Guard]:
    import torch
    import torch.export.pt2_archive._package as package

    guard = _Guard()
    real_load, real_pickle, real_obj = torch.load, package.pickle, torch._C._pickle_load_obj

    def load(*args: Any, weights_only: Any = None, **kwargs: Any) -> Any:
        try:
            return real_load(*args, weights_only=True, **kwargs)
        except Exception as exc:
            if weights_only is False:
                lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
                why = next((ln for ln in lines if "GLOBAL" in ln), lines[-1] if lines else type(exc).__name__)
                guard.refuse(f"a part that does not load weights-only: {why[:160]}")
            raise

    class _NoPickle:
        def __getattr__(self, name: str) -> Any:
            if name in ("loads", "load", "Unpickler"):
                guard.refuse("a raw pickle (opaque object)")
            return getattr(real_pickle, name)

    def pickle_load_obj(*_: Any, **__: Any) -> Any:
        guard.refuse("a TorchScript object (torchbind)")

    torch.load, package.pickle, torch._C._pickle_load_obj = load, _NoPickle(), pickle_load_obj
    try:
        yield guard
    finally:
        torch.load, package.pickle, torch._C._pickle_load_obj = real_load, real_pickle, real_obj
