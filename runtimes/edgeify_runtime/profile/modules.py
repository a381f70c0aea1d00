"""Which source module (``features.3.conv.1`` / ``nn.Conv2d``) an engine's operator came from.

The build records, in the manifest's ``facts.source_modules`` (written by the ``onnx-export`` step from the
exporter's node metadata), the PyTorch module path of every ONNX node and of every tensor a node writes::

    {"origin": "...", "modules": [[path, type, at], ...], "names": {node or tensor name: index into modules}}

Engines rename what they run: ONNX Runtime fuses (``fused node_linear``, ``relu_1_nchwc``,
``node_Conv_38_token_1``), OpenVINO names layers by output tensor (``output``) or adds suffixes
(``node_linear/WithoutBiases/DequantizationMultiply``), reorders carry both ends (``x_abcd_acdb_node_Conv_38``).
:meth:`SourceMap.lookup` finds the recorded name inside the engine's: the whole name (a ``/`` name: its first
part), else the longest recorded name that sits between separators (on a tie, the rightmost: a reorder belongs to the
op it feeds). Standard library only (the device reads the manifest's JSON; no torch, no onnx).

>>> m = SourceMap({"modules": [["features.0", "nn.Conv2d", ""], ["classifier.3", "nn.Linear", ""]],
...                "names": {"node_Conv_38": 0, "getitem": 0, "node_linear_1": 1, "output": 1}})
>>> m.lookup("node_Conv_38_token_1").path, m.lookup("output_DequantizeLinear").type
('features.0', 'nn.Linear')
>>> m.lookup("ReorderOutput") is None
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

#: the manifest facts namespace the map lives in
NAMESPACE = "source_modules"
_SEP = re.compile(r"[^0-9A-Za-z]")
#: names longer than this are only looked up whole (the substring search is quadratic in separators)
_MAX_SEARCH = 256


@dataclass(frozen=True)
class SourceModule:
    """One module of the source model: its path from the root (``""``: the root itself), its class and, when
    the exporter recorded it, the innermost line of user code that called into it (``model.py:39``)."""

    path: str
    type: str
    at: str = ""

    @property
    def label(self) -> str:
        return self.path or "(root)"


class SourceMap:
    """The ``facts.source_modules`` record of a manifest, for looking up engine op names."""

    def __init__(self, raw: Mapping[str, Any] | None) -> None:
        raw = raw or {}
        mods = []
        for m in raw.get("modules") or ():
            m = list(m) + ["", "", ""]
            mods.append(SourceModule(str(m[0]), str(m[1]), str(m[2] or "")))
        self.modules: tuple[SourceModule, ...] = tuple(mods)
        self._names: dict[str, int] = {str(k): int(v) for k, v in (raw.get("names") or {}).items()
                                       if isinstance(v, int) and 0 <= v < len(mods)}

    @classmethod
    def from_manifest(cls, manifest: Any) -> SourceMap:
        facts = getattr(manifest, "facts", None) or {}
        raw = facts.get(NAMESPACE) if isinstance(facts, Mapping) else None
        return cls(raw if isinstance(raw, Mapping) else None)

    def __bool__(self) -> bool:
        return bool(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def get(self, name: str) -> SourceModule | None:
        """The module recorded for exactly this ONNX node or tensor name."""
        hit = self._names.get(name)
        return None if hit is None else self.modules[hit]

    def lookup(self, name: str | None) -> SourceModule | None:
        """The source module of an engine op (or tensor) called ``name``; None when nothing recorded fits."""
        if not name or not self._names:
            return None
        hit = self._names.get(name)
        if hit is None and name.startswith("fused "):
            name = name[len("fused "):]
            hit = self._names.get(name)
        if hit is None and "/" in name.strip("/"):  # OpenVINO: the owning op, then what it added (x/fq_output_0)
            name = name.strip("/").split("/")[0]
            hit = self._names.get(name)
        if hit is None and len(name) <= _MAX_SEARCH:
            hit = self._search(name)
        return None if hit is None else self.modules[hit]

    def _search(self, name: str) -> int | None:
        seps = [m.start() for m in _SEP.finditer(name)]
        starts = [0] + [i + 1 for i in seps]
        ends = seps + [len(name)]
        best: tuple[int, int, int] | None = None  # (length, start, index)
        for s in starts:
            for e in ends:
                if e <= s or (best is not None and e - s < best[0]):
                    continue
                idx = self._names.get(name[s:e])
                if idx is not None and (best is None or (e - s, s) > best[:2]):
                    best = (e - s, s, idx)
        return None if best is None else best[2]


__all__ = ["NAMESPACE", "SourceMap", "SourceModule"]
