"""The Open Inference Protocol (KServe v2) over REST, through the same micro-batcher as ``/v1``.

Endpoints (``{name}`` is the name the model is served under, ``--model-name``; the one version is ``"1"``)::

    GET  /v2                                   server metadata {"name", "version", "extensions"}
    GET  /v2/health/live | /v2/health/ready    200 while serving (ready: 503 while stopping)
    GET  /v2/models/{name}[/versions/1]        model metadata: inputs/outputs {name, datatype, shape (-1: dynamic)}
    GET  /v2/models/{name}[/versions/1]/ready  200 when the model is ready
    POST /v2/models/{name}[/versions/1]/infer  {"id"?, "inputs": [{"name", "shape", "datatype", "data"}],
                                                "outputs"?: [{"name", "parameters"?: {"binary_data": bool}}]}

Tensors are JSON (``data`` flat in row-major order, or nested) or, with the binary tensor data extension, raw
little-endian bytes after the JSON header (``Inference-Header-Content-Length``, ``parameters.binary_data_size``),
as tritonclient sends them by default. Errors are ``{"error": "<message>"}``: 400 for a malformed request or a
tensor that does not match the model (name, shape, datatype), 404 for an unknown model or version, 401 without the
bearer token (when one is set), 503 while stopping or when the queue is full.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from .. import __version__
from .codec import HTTPError, bad, dumps, loads, non_finite, non_finite_error, shape_of
from .responses import json_response

#: Open Inference Protocol datatype <-> numpy dtype
DATATYPES = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
             "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64", "FP16": "float16",
             "FP32": "float32", "FP64": "float64"}
NUMPY_TO_OIP = {v: k for k, v in DATATYPES.items()}
HEADER_LENGTH = "inference-header-content-length"
VERSION = "1"


def oip_datatype(dtype: str) -> str:
    return NUMPY_TO_OIP.get(str(np.dtype(dtype)), "BYTES")


def tensor_metadata(spec: Any) -> dict[str, Any]:
    return {"name": spec.name, "datatype": oip_datatype(spec.dtype),
            "shape": [d if isinstance(d, int) and d >= 0 else -1 for d in spec.shape]}


def _tensor(item: Any, where: str, blob: bytes | None) -> np.ndarray:
    if not isinstance(item, dict):
        raise bad(f"{where}: expected an object with name, shape, datatype and data")
    shape = shape_of(item.get("shape"), where)
    datatype = item.get("datatype")
    if datatype not in DATATYPES:
        raise bad(f"{where}: datatype {str(datatype)[:20]!r} is not supported (one of {', '.join(DATATYPES)})")
    dtype = np.dtype(DATATYPES[datatype]).newbyteorder("<")
    count = math.prod(shape)
    if blob is not None:
        if len(blob) != count * dtype.itemsize:
            raise bad(f"{where}: {len(blob)} bytes of binary data; datatype {datatype} and shape {shape} need "
                      f"{count * dtype.itemsize}")
        return np.frombuffer(blob, dtype=dtype).reshape(shape)
    data = item.get("data")
    if not isinstance(data, list):
        raise bad(f"{where}: data must be a list (flat, row-major) of {datatype} values")
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below, by its result
            arr = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise bad(f"{where}: data is not a list of {datatype} values: {exc}") from None
    if arr.size != count:
        raise bad(f"{where}: data holds {arr.size} values; shape {shape} needs {count}")
    if non_finite(arr):  # JSON numbers are finite (NaN/Infinity refused by loads): these overflowed the datatype
        raise bad(f"{where}: a value is out of the range of {datatype} (it would be infinite)")
    return arr.reshape(shape)


def decode_infer(body: bytes, header_length: int | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """An infer request: ({input name: array}, the request document without tensor data). Pure: it also runs in
    the decode worker processes for large bodies."""
    if header_length is not None and not 0 <= header_length <= len(body):
        raise bad(f"Inference-Header-Content-Length {header_length} is not within the body ({len(body)} bytes)")
    head = body if header_length is None else body[:header_length]
    doc = loads(head)
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise bad('expected {"inputs": [{"name", "shape", "datatype", "data"}, ...]}')
    offset = 0 if header_length is None else header_length
    feeds: dict[str, np.ndarray] = {}
    for i, item in enumerate(doc["inputs"]):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            raise bad(f"inputs[{i}]: needs a name")
        size = ((item.get("parameters") or {}).get("binary_data_size")) if isinstance(item, dict) else None
        blob = None
        if size is not None:
            if header_length is None or not isinstance(size, int) or isinstance(size, bool) or size < 0 or \
                    offset + size > len(body):
                raise bad(f"input {name!r}: binary_data_size {size!r} does not fit the binary part of the body")
            blob, offset = body[offset:offset + size], offset + size
        if name in feeds:
            raise bad(f"input {name!r} is given twice")
        feeds[name] = _tensor(item, f"input {name!r}", blob)
    meta = {"id": doc.get("id"), "outputs": doc.get("outputs"), "parameters": doc.get("parameters") or {}}
    return feeds, meta


def selected_outputs(outputs: dict[str, Any], meta: dict[str, Any]) -> list[tuple[str, bool]]:
    """The outputs a request asks for, in its order: [(name, as binary data)]."""
    wanted = meta.get("outputs")
    params = meta.get("parameters") or {}
    binary_all = bool(params.get("binary_data_output"))
    if wanted is None:
        return [(name, binary_all) for name in outputs]
    if not isinstance(wanted, list):
        raise bad('"outputs" must be a list of {"name": ...}')
    selected = []
    for item in wanted:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in outputs:
            raise bad(f"unknown output {str(name)[:64]!r}; the model's outputs: {', '.join(outputs)}")
        selected.append((name, bool((item.get("parameters") or {}).get("binary_data", binary_all))))
    return selected


def encode_infer(outputs: dict[str, np.ndarray], meta: dict[str, Any], model: str) -> tuple[bytes, int | None]:
    """The infer response: (body, JSON header length when binary tensors follow it, else None)."""
    tensors, blobs = [], []
    selected = selected_outputs(outputs, meta)
    bad_outputs = [name for name, binary in selected if not binary and non_finite(outputs[name])]
    if bad_outputs:
        raise non_finite_error(bad_outputs, 'ask for them as binary data ("outputs": [{"name": ..., "parameters": '
                                            '{"binary_data": true}}]) to receive the raw values')
    for name, binary in selected:
        arr = np.ascontiguousarray(outputs[name])
        entry: dict[str, Any] = {"name": name, "datatype": oip_datatype(arr.dtype.name), "shape": list(arr.shape)}
        if binary:
            raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = arr.reshape(-1).tolist()
        tensors.append(entry)
    doc: dict[str, Any] = {"model_name": model, "model_version": VERSION, "outputs": tensors}
    if meta.get("id") is not None:
        doc["id"] = meta["id"]
    head = dumps(doc)
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def oip_routes(service: Any, bodies: Any, wrap: Callable[[str, Any], Any]) -> list[Any]:
    """The /v2 routes; ``wrap(name, handler)`` adds the token check, error rendering and metrics."""
    from starlette.responses import Response
    from starlette.routing import Route

    def check_model(request: Any) -> None:
        name = request.path_params.get("name")
        version = request.path_params.get("version")
        if name != service.name:
            raise HTTPError(404, "not_found", f"unknown model {str(name)[:64]!r}; this server serves "
                                              f"{service.name!r}")
        if version is not None and version != VERSION:
            raise HTTPError(404, "not_found", f"model {service.name!r} has no version {str(version)[:16]!r} (it has "
                                              f"{VERSION!r})")

    def ready() -> bool:
        return bool(service.batcher.alive)

    async def server_metadata(request: Any) -> Any:
        return json_response({"name": "edgeify", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def live(request: Any) -> Any:
        return json_response({"live": True})

    async def server_ready(request: Any) -> Any:
        return json_response({"ready": ready()}, 200 if ready() else 503)

    async def model_metadata(request: Any) -> Any:
        check_model(request)
        m = service.model
        return json_response({"name": service.name, "versions": [VERSION], "platform": f"edgeify_{m.engine_name}",
                              "inputs": [tensor_metadata(t) for t in service.inputs],
                              "outputs": [tensor_metadata(t) for t in service.outputs]})

    async def model_ready(request: Any) -> Any:
        check_model(request)
        return json_response({"name": service.name, "ready": ready()}, 200 if ready() else 503)

    async def infer(request: Any) -> Any:
        check_model(request)
        length = request.headers.get(HEADER_LENGTH)
        if length is not None and not length.isdigit():
            raise bad("Inference-Header-Content-Length must be a number of bytes")
        raw, meta = await bodies.decode(request, decode_infer, int(length) if length is not None else None,
                                        parsed_header=HEADER_LENGTH)
        names = [t.name for t in service.inputs]
        unknown, missing = [n for n in raw if n not in names], [n for n in names if n not in raw]
        if unknown or missing:
            raise bad("; ".join(([f"unknown input(s) {unknown}"] if unknown else []) +
                                ([f"missing input(s) {missing}"] if missing else [])) +
                      f"; the model's inputs: {service.describe_inputs()}")
        try:
            feeds, n, key, _ = service.check(raw, "json", exact_dtype=True)
        except HTTPError as err:
            raise HTTPError(400 if err.status == 422 else err.status, err.kind, err.message, err.headers) from None
        outputs, _batch = await service.batcher.submit(feeds, n, key)
        selected = selected_outputs(outputs, meta)
        body, header = await bodies.encode(sum(outputs[n].nbytes for n, _ in selected), encode_infer, outputs, meta,
                                           service.name,
                                           rendered_nbytes=sum(outputs[n].nbytes for n, b in selected if not b))
        if header is None:
            return Response(body, media_type="application/json")
        return Response(body, media_type="application/octet-stream", headers={"Inference-Header-Content-Length":
                                                                             str(header)})

    routes = [("/v2", server_metadata, "GET"), ("/v2/health/live", live, "GET"),
              ("/v2/health/ready", server_ready, "GET")]
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [(base, model_metadata, "GET"), (base + "/ready", model_ready, "GET"),
                   (base + "/infer", infer, "POST")]
    return [Route(path, wrap(path, handler), methods=[method]) for path, handler, method in routes]


__all__ = ["DATATYPES", "decode_infer", "encode_infer", "oip_routes", "selected_outputs", "tensor_metadata"]
