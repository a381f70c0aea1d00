"""Which source module (``features.3.conv.1`` / ``nn.Conv2d``) an engine's operator came from.

The build records, in the manifest's ``facts.source_modules`` (written by the ``onnx-export`` step from the
exporter's node metadata), the PyTorch module path of every ONNX node and of every tensor a node writes::

    {"origin": "...", "modules": [[path, type, at], ...], "names": {node or tensor name: index into modules}}

Engines rename what they run: ONNX Runtime fuses (``fused node_linear``, ``relu_1_nchwc``,
``node_Conv_38_token_1``), OpenVINO names layers by output tensor (``output``) or adds suffixes
(``node_linear/WithoutBiases/DequantizationMultiply``), reorders carry both ends (``x_abcd_acdb_node_Conv_38``).
:meth:`SourceMap.lookup` finds the recorded name inside the engine's: the whole name (a ``/`` name: its first
part), else the longest recorded name that sits between separators (on a tie, the rightmost: a reorder belongs to the
op it feeds). litert-torch writes the module scope into the TFLite op's own name
(``Net/Block_stem/torch.nn.modules.conv.Conv2d_conv;1``, fused ops joined by ``;;``): that name is read directly,
the last location (the conv a ReLU and BatchNorm were fused into) naming the op, with or without a recorded map.
Standard library only (the device reads the manifest's JSON; no torch, no onnx).

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
_INDEX = re.compile(r"^#\d+ ")  # the LiteRT profile's "#3 " before a TFLite op name
_SCOPE_PART = re.compile(r"^(?P<cls>(?:[A-Za-z_]\w*\.)*[A-Z][A-Za-z0-9]*)_(?P<attr>\w+)$")
_SCOPE_ROOT = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*$")


def short_type(cls: str) -> str:
    """``torch.nn.modules.conv.Conv2d`` -> ``nn.Conv2d``; other classes as the exporter wrote them."""
    if cls.startswith("torch.nn.modules."):
        return "nn." + cls.rsplit(".", 1)[-1]
    return cls


def litert_torch_module(name: str) -> SourceModule | None:
    """The module of a litert-torch TFLite op name (``Net/torch.nn.modules.container.Sequential_blocks/
    pkg.Block_0/torch.nn.modules.conv.Conv2d_conv;2``: ``blocks.0.conv``, ``nn.Conv2d``); None otherwise."""
    locs = [re.sub(r";\d+$", "", loc) for loc in _INDEX.sub("", name).split(";;")]
    for loc in reversed(locs):
        parts = loc.split("/")
        if len(parts) < 2 or not _SCOPE_ROOT.match(parts[0]):
            continue
        path, cls = [], ""
        for part in parts[1:]:
            m = _SCOPE_PART.match(part)
            if m is None:
                path = []
                break
            path.append(m.group("attr"))
            cls = m.group("cls")
        if path:
            return SourceModule(".".join(path), short_type(cls))
    return None


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
            m = [*m, "", "", ""]
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
        if not name:
            return None
        scoped = litert_torch_module(name) if "/" in name and "." in name else None
        if scoped is not None:  # litert-torch's own scope name; the recorded entry adds the user's line
            known = next((m for m in self.modules if m.path == scoped.path), None)
            return known or scoped
        if not self._names:
            return None
        name = _INDEX.sub("", name)
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
        ends = [*seps, len(name)]
        best: tuple[int, int, int] | None = None  # (length, start, index)
        for s in starts:
            for e in ends:
                if e <= s or (best is not None and e - s < best[0]):
                    continue
                idx = self._names.get(name[s:e])
                if idx is not None and (best is None or (e - s, s) > best[:2]):
                    best = (e - s, s, idx)
        return None if best is None else best[2]


__all__ = ["NAMESPACE", "SourceMap", "SourceModule", "litert_torch_module", "short_type"]
