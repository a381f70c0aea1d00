"""Every intermediate tensor of an ONNX model, run in ONNX Runtime, without the ``onnx`` package.

ONNX Runtime returns only graph outputs, so the model is rewritten with every node output added as a graph output
(``ModelProto.graph`` is field 7, ``GraphProto.node`` field 1, ``NodeProto.output`` field 2, ``GraphProto.output``
field 12, ``ValueInfoProto.name`` field 1): a few lines of protobuf wire format instead of a dependency the device
does not have. Graph optimizations are off so tensor names survive. Nodes inside subgraphs (If/Loop bodies) are
not exposed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _enc_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, field start, value start, value end) of every top-level field of a message."""
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, end = _varint(buf, pos)
            yield field, wire, start, pos, end
        elif wire == 2:
            size, pos = _varint(buf, pos)
            yield field, wire, start, pos, pos + size
            end = pos + size
        elif wire == 1:
            end = pos + 8
            yield field, wire, start, pos, end
        elif wire == 5:
            end = pos + 4
            yield field, wire, start, pos, end
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        pos = end


def _strings(buf: bytes, number: int) -> list[str]:
    return [buf[a:b].decode("utf-8", "replace") for f, w, _, a, b in _fields(buf) if f == number and w == 2]


def _len_field(number: int, payload: bytes) -> bytes:
    return _enc_varint(number << 3 | 2) + _enc_varint(len(payload)) + payload


def with_all_outputs(model: bytes) -> bytes:
    """``model`` (serialized ModelProto) with every node output of its main graph added as a graph output."""
    graph_field = None
    for f, w, start, a, b in _fields(model):
        if f == 7 and w == 2:
            graph_field = (start, a, b)
    if graph_field is None:
        raise ValueError("not an ONNX model: no graph")
    start, a, b = graph_field
    graph = model[a:b]
    have: set[str] = set()
    produced: list[str] = []
    for f, w, _, x, y in _fields(graph):
        if f == 12 and w == 2:
            have.update(_strings(graph[x:y], 1))
        elif f == 1 and w == 2:
            produced += _strings(graph[x:y], 2)
    extra = b"".join(_len_field(12, _len_field(1, n.encode("utf-8")))
                     for n in dict.fromkeys(produced) if n and n not in have)
    return model[:start] + _len_field(7, graph + extra) + model[b:]


def dump(ort: Any, path: Path, feeds: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``path`` once on ``feeds`` with every node output exposed: ``{tensor name: array}``."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    # external weights live beside the file; the session is made from bytes
    so.add_session_config_entry("session.model_external_initializers_file_folder_path", str(path.parent))
    sess = ort.InferenceSession(with_all_outputs(path.read_bytes()), so, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in sess.get_inputs()]
    by_order = dict(zip(inputs, feeds.values()))
    feed = {name: feeds[name] if name in feeds else by_order[name] for name in inputs}
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feed)))
