"""Request bodies to arrays and arrays to response bodies; pure functions (no web framework, no event loop).

``decode_request`` runs in the event loop's process for small bodies and in a worker process for large ones
(``json.loads`` of a 32 MiB body holds the interpreter lock for about a second: in a thread it would still
stall every other request, ``/healthz`` included). It returns numpy arrays, which cross the process boundary
as raw buffers.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import numpy as np

#: numbers in a nested list deeper than this are refused before numpy sees them (numpy allows 32 dimensions)
MAX_DEPTH = 32


class HTTPError(Exception):
    """An error answered to the client: status code, error type and a message that says what to fix."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = headers or {}

    def __reduce__(self) -> Any:  # picklable: it crosses the decode worker's process boundary
        return (HTTPError, (self.status, self.kind, self.message, self.headers))


def bad(message: str) -> HTTPError:
    return HTTPError(400, "bad_request", message)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (non-finite numbers cannot travel as JSON numbers)")


def loads(body: bytes) -> Any:
    """Strict JSON (``NaN``, ``Infinity`` refused), or a 400 (not JSON, not UTF-8, nested too deeply)."""
    try:
        return json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise bad("the body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad(f"the body is not valid JSON: {exc}") from None


def _numeric(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise bad(f"{where}: expected numbers, got {arr.dtype.name} values")
    return arr


def dumps(doc: Any) -> bytes:
    """A JSON document, never with the non-JSON ``NaN``/``Infinity`` (ValueError, which callers turn into a
    clear error before this point)."""
    return json.dumps(doc, allow_nan=False).encode()


def non_finite(arr: np.ndarray) -> bool:
    """Does a float array hold NaN or an infinity?"""
    return arr.dtype.kind in "fc" and arr.size > 0 and not bool(np.isfinite(arr).all())


def non_finite_error(names: list[str], how: str) -> HTTPError:
    """The answer when outputs that must be rendered as JSON numbers hold NaN or infinities (JSON has no such
    numbers): a 500 that names them and ``how`` to receive them as raw bytes instead."""
    return HTTPError(500, "non_finite_output", f"the model's output(s) {', '.join(repr(n) for n in names)} hold "
                                               f"NaN or infinite values, which JSON cannot carry; {how}")


def _depth(value: Any, limit: int) -> int:
    """The nesting depth of the first element chain of a nested list (raises 400 above ``limit``)."""
    depth = 0
    while isinstance(value, list):
        depth += 1
        if depth > limit:
            raise bad(f"arrays are nested {depth}+ levels deep; at most {limit} dimensions")
        value = value[0] if value else None
    return depth


def shape_of(value: Any, where: str) -> list[int]:
    """A tensor shape from a request: a list of non-negative ints (not bools)."""
    if not isinstance(value, list) or len(value) > MAX_DEPTH or \
            not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise bad(f"{where}: shape must be a list of at most {MAX_DEPTH} non-negative ints, not "
                  f"{str(value)[:80]}")
    return value


def decode_b64(value: dict[str, Any], where: str) -> np.ndarray:
    missing = [k for k in ("b64", "dtype", "shape") if k not in value]
    if missing:
        raise bad(f"{where}: an encoded tensor needs the keys b64, dtype and shape (missing {', '.join(missing)})")
    try:
        dtype = np.dtype(str(value["dtype"])).newbyteorder("<")
    except TypeError:
        raise bad(f"{where}: unknown dtype {str(value['dtype'])[:40]!r}") from None
    if dtype.kind not in "biuf" or dtype.itemsize == 0:  # e.g. "object" (no raw bytes can hold it; fuzzing found it)
        raise bad(f"{where}: dtype {dtype.name} is not a number type (bool, int, uint, float)")
    shape = shape_of(value["shape"], where)
    try:
        raw = base64.b64decode(str(value["b64"]), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad(f"{where}: b64 is not valid base64 ({exc})") from None
    want = math.prod(shape) * dtype.itemsize  # Python ints: a huge shape cannot overflow into a small number
    if len(raw) != want:
        raise bad(f"{where}: b64 holds {len(raw)} bytes; dtype {dtype.name} and shape {shape} need {want}")
    return _numeric(np.frombuffer(raw, dtype=dtype).reshape(shape), where)


def decode_array(value: Any, where: str) -> np.ndarray:
    """A nested list of numbers, or ``{"b64", "dtype", "shape"}`` (raw little-endian bytes), as an array."""
    if isinstance(value, dict):
        return decode_b64(value, where)
    if not isinstance(value, (list, int, float)) or isinstance(value, bool):
        raise bad(f"{where}: expected a (nested) list of numbers, not {type(value).__name__}")
    _depth(value, MAX_DEPTH)
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, RecursionError) as exc:
        raise bad(f"{where}: not a rectangular array (ragged nested lists?): {exc}") from None
    arr = _numeric(arr, where)
    if non_finite(arr):  # a literal like 1e400: json reads it as inf
        raise bad(f"{where}: a number is out of range (over 1.8e308, read as infinity)")
    return arr


def decode_request(body: bytes, names: list[str]) -> tuple[dict[str, np.ndarray], str]:
    """A ``/v1/predict`` body: ({input name: array}, encoding). Raises HTTPError (400/422)."""
    doc = loads(body)
    if not isinstance(doc, dict) or "inputs" not in doc:
        raise bad('expected a JSON object {"inputs": {name: array, ...}}')
    encoding = doc.get("encoding", "json")
    if encoding not in ("json", "b64"):
        raise bad(f'"encoding" must be "json" or "b64", not {str(encoding)[:40]!r}')
    raw = doc["inputs"]
    single = not isinstance(raw, dict) or ("b64" in raw and "b64" not in names)  # one tensor, not a map
    if single:
        if len(names) != 1:
            raise HTTPError(422, "signature_mismatch", f"this model has {len(names)} inputs; pass \"inputs\" as an "
                                                       "object {name: array}")
        raw = {names[0]: raw}
    unknown = [str(k)[:64] for k in raw if k not in names]
    missing = [n for n in names if n not in raw]
    if unknown or missing:
        parts = ([f"unknown input(s) {unknown}"] if unknown else []) + \
                ([f"missing input(s) {missing}"] if missing else [])
        raise HTTPError(422, "signature_mismatch", "; ".join(parts))
    return {n: decode_array(raw[n], f"input {n!r}") for n in names}, encoding


def encode_array(arr: np.ndarray, b64: bool) -> Any:
    if b64:
        a = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        return {"b64": base64.b64encode(a.tobytes()).decode("ascii"), "dtype": a.dtype.name, "shape": list(a.shape)}
    return arr.tolist()


def render(outputs: dict[str, np.ndarray], meta: dict[str, Any], b64: bool,
           labels: list[str] | None) -> dict[str, Any]:
    """The /v1/predict response document: outputs, predictions (when labels name a (batch, classes) output)."""
    doc: dict[str, Any] = {"outputs": {k: encode_array(v, b64) for k, v in outputs.items()}}
    if labels and len(outputs) == 1:
        out = next(iter(outputs.values()))
        if out.ndim == 2 and out.shape[1] == len(labels):
            preds = []
            for row in out:
                if non_finite(row):  # no class to name (the raw row travels b64; JSON outputs were refused)
                    preds.append(None)
                    continue
                s = scores_of(row)
                i = int(np.argmax(s))
                preds.append({"index": i, "label": labels[i], "score": round(float(s[i]), 6)})
            doc["predictions"] = preds
    doc["batch"] = meta
    return doc


def render_bytes(outputs: dict[str, np.ndarray], meta: dict[str, Any], b64: bool,
                 labels: list[str] | None) -> bytes:
    """:func:`render` as the JSON body (what a decode worker sends back for a large response). Outputs that hold
    NaN or infinities are a :func:`non_finite_error` unless ``b64`` (raw bytes carry them)."""
    bad_outputs = [k for k, v in outputs.items() if non_finite(v)]
    if bad_outputs and not b64:
        raise non_finite_error(bad_outputs, 'send the request with "encoding": "b64" to receive the raw values')
    return dumps(render(outputs, meta, b64, labels))


def scores_of(row: np.ndarray) -> np.ndarray:
    """Class scores of one output row: the row itself when it already is a distribution, else its softmax."""
    row = row.astype(np.float64, copy=False)
    if row.size and row.min() >= 0.0 and abs(float(row.sum()) - 1.0) <= 1e-3:
        return row
    e = np.exp(row - row.max())
    return e / e.sum()


__all__ = ["MAX_DEPTH", "HTTPError", "bad", "decode_array", "decode_b64", "decode_request", "dumps", "encode_array",
           "loads", "non_finite", "non_finite_error", "render", "render_bytes", "scores_of", "shape_of"]
