"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), on the service's event loop and
through the same micro-batcher as the REST endpoints; stubs in ``proto/`` (``--grpc-port``; the ``grpc`` extra).

Tensors come as ``raw_input_contents`` (what tritonclient sends) or typed ``contents``; outputs go back as
``raw_output_contents``. Errors are gRPC status codes: INVALID_ARGUMENT (malformed, wrong name/shape/datatype),
NOT_FOUND (unknown model or version), UNAUTHENTICATED (no or wrong bearer token in the ``authorization``
metadata), UNAVAILABLE (stopping, queue full, every large-message slot busy), INTERNAL (the engine failed).

``ModelInfer`` takes and returns the message as bytes: a message up to ``inline_bytes`` (4 MiB) is parsed and
serialized on the event loop (about 1 ms per MiB of tensors, measured), a larger one is parsed in one of the
REST server's decode worker processes, holding one of its ``--max-large-bodies`` slots, and a reply over
``inline_bytes`` is serialized there too; so ServerReady, the REST health checks and small requests keep being
answered while a 32 MiB message is parsed (measured inline: about 40 ms to parse, about 110 ms to serialize, all
of it holding the interpreter lock). The bearer token is checked before a message is parsed.
"""

from __future__ import annotations

import hmac
import math
from typing import Any

import numpy as np

from .. import __version__
from .codec import HTTPError
from .http import Bodies
from .oip import DATATYPES, VERSION, oip_datatype
from .proto import grpc_predict_v2_pb2 as pb
from .tls import grpc_credentials

#: InferTensorContents field per datatype (FP16 only travels as raw bytes)
_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
             "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
             "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
             "FP64": "fp64_contents"}


def _status(grpc: Any, status: int) -> Any:
    return {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
            404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
            422: grpc.StatusCode.INVALID_ARGUMENT, 503: grpc.StatusCode.UNAVAILABLE}.get(status,
                                                                                       grpc.StatusCode.INTERNAL)


def _bad(message: str) -> HTTPError:
    return HTTPError(400, "bad_request", message)


#: ModelInfer messages (and replies) up to this size are parsed (serialized) on the event loop
INLINE_MESSAGE_BYTES = 4 << 20


def decode_request(request: Any) -> dict[str, np.ndarray]:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise _bad(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    feeds: dict[str, np.ndarray] = {}
    for i, t in enumerate(request.inputs):
        where = f"input {t.name!r}"
        if t.datatype not in DATATYPES:
            raise _bad(f"{where}: datatype {t.datatype[:20]!r} is not supported (one of {', '.join(DATATYPES)})")
        shape = list(t.shape)
        if any(d < 0 for d in shape) or len(shape) > 32:
            raise _bad(f"{where}: shape must be at most 32 non-negative dimensions, not {shape}")
        dtype = np.dtype(DATATYPES[t.datatype]).newbyteorder("<")
        count = math.prod(shape)
        if raw:
            if len(raw[i]) != count * dtype.itemsize:
                raise _bad(f"{where}: {len(raw[i])} bytes; datatype {t.datatype} and shape {shape} need "
                           f"{count * dtype.itemsize}")
            arr = np.frombuffer(raw[i], dtype=dtype)
        else:
            field = _CONTENTS.get(t.datatype)
            if field is None:
                raise _bad(f"{where}: datatype {t.datatype} travels as raw_input_contents only")
            arr = np.asarray(getattr(t.contents, field), dtype=dtype)
            if arr.size != count:
                raise _bad(f"{where}: {arr.size} values; shape {shape} needs {count}")
        if t.name in feeds:
            raise _bad(f"{where} is given twice")
        feeds[t.name] = arr.reshape(shape)
    return feeds


def decode_message(message: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A serialized ModelInferRequest: ({model_name, model_version, id, outputs}, {input name: array}). Pure: it
    also runs in the decode worker processes for large messages."""
    from google.protobuf.message import DecodeError

    try:
        request = pb.ModelInferRequest.FromString(message)
    except DecodeError as exc:
        raise _bad(f"not a ModelInferRequest: {exc}") from None
    head = {"model_name": request.model_name, "model_version": request.model_version, "id": request.id,
            "outputs": [o.name for o in request.outputs]}
    return head, decode_request(request)


def encode_message(model: str, request_id: str, outputs: dict[str, np.ndarray]) -> bytes:
    """A serialized ModelInferResponse with ``outputs`` (in that order) as raw little-endian bytes."""

    resp = pb.ModelInferResponse(model_name=model, model_version=VERSION, id=request_id)
    for name, value in outputs.items():
        arr = np.ascontiguousarray(value)
        resp.outputs.add(name=name, datatype=oip_datatype(arr.dtype.name), shape=list(arr.shape))
        resp.raw_output_contents.append(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
    return resp.SerializeToString()


class InferenceServicer:  # method names are the protocol's (ServerLive, ModelInfer, ...)
    """The six OIP calls for one Service; built by :func:`start_grpc` (which imports grpc and the stubs)."""

    def __init__(self, service: Any, pb: Any, grpc: Any, token: str | None, bodies: Any,
                 inline_bytes: int = INLINE_MESSAGE_BYTES) -> None:
        self.service, self.pb, self.grpc = service, pb, grpc
        self._token = token.encode() if token else None
        self.bodies = bodies  # http.Bodies: the decode workers and large-body slots, shared with REST
        self.inline_bytes = inline_bytes

    async def _guard(self, context: Any, model: str | None = None, version: str | None = None) -> None:
        if self._token is not None:
            meta = dict(context.invocation_metadata() or ())
            scheme, _, value = str(meta.get("authorization", "")).partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self._token):
                await context.abort(self.grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token "
                                                                          "(metadata authorization: Bearer <token>)")
        if model is not None and model != self.service.name:
            await context.abort(self.grpc.StatusCode.NOT_FOUND, f"unknown model {model[:64]!r}; this server serves "
                                                                f"{self.service.name!r}")
        if version and version != VERSION:
            await context.abort(self.grpc.StatusCode.NOT_FOUND, f"model {self.service.name!r} has no version "
                                                                f"{version[:16]!r} (it has {VERSION!r})")

    def _ready(self) -> bool:
        return bool(self.service.batcher.alive)

    async def ServerLive(self, request: Any, context: Any) -> Any:
        await self._guard(context)
        return self.pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        await self._guard(context)
        return self.pb.ServerReadyResponse(ready=self._ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:
        await self._guard(context, request.name, request.version)
        return self.pb.ModelReadyResponse(ready=self._ready())

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        await self._guard(context)
        return self.pb.ServerMetadataResponse(name="edgeify", version=__version__, extensions=[])

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        await self._guard(context, request.name, request.version)
        tm = self.pb.ModelMetadataResponse.TensorMetadata

        def meta(t: Any) -> Any:
            return tm(name=t.name, datatype=oip_datatype(t.dtype),
                      shape=[d if isinstance(d, int) and d >= 0 else -1 for d in t.shape])

        s = self.service
        return self.pb.ModelMetadataResponse(name=s.name, versions=[VERSION],
                                             platform=f"edgeify_{s.model.engine_name}",
                                             inputs=[meta(t) for t in s.inputs], outputs=[meta(t) for t in s.outputs])

    async def ModelInfer(self, request: bytes, context: Any) -> bytes:
        await self._guard(context)  # the token before any parsing
        s = self.service
        try:
            if len(request) <= self.inline_bytes:
                head, raw = decode_message(request)
            else:
                head, raw = await self.bodies.offload(decode_message, request)
        except HTTPError as err:
            await context.abort(_status(self.grpc, err.status), err.message)
        await self._guard(context, head["model_name"], head["model_version"])
        try:
            names = [t.name for t in s.inputs]
            unknown, missing = [n for n in raw if n not in names], [n for n in names if n not in raw]
            if unknown or missing:
                raise _bad("; ".join(([f"unknown input(s) {unknown}"] if unknown else []) +
                                     ([f"missing input(s) {missing}"] if missing else [])) +
                           f"; the model's inputs: {s.describe_inputs()}")
            feeds, n, key, _ = s.check(raw, "json", exact_dtype=True)
            wanted = head["outputs"] or [t.name for t in s.outputs]
            bad = [w for w in wanted if w not in {t.name for t in s.outputs}]
            if bad:
                raise _bad(f"unknown output(s) {bad}")
            outputs, _meta = await s.batcher.submit(feeds, n, key)
            selected = {name: outputs[name] for name in wanted}
            if sum(v.nbytes for v in selected.values()) <= self.inline_bytes:
                return encode_message(s.name, head["id"], selected)
            return await self.bodies.run(encode_message, s.name, head["id"], selected)
        except HTTPError as err:
            await context.abort(_status(self.grpc, err.status), err.message)
            raise  # not reached: abort raises


def _handlers(grpc: Any, pb: Any, servicer: InferenceServicer) -> dict[str, Any]:
    """The generated stubs' method handlers, except ModelInfer: bytes in, bytes out (parsed where its size says)."""
    def unary(fn: Any, request: Any, response: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=request and request.FromString,
                                                   response_serializer=response and response.SerializeToString)

    return {"ServerLive": unary(servicer.ServerLive, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": unary(servicer.ServerReady, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ModelReady": unary(servicer.ModelReady, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerMetadata": unary(servicer.ServerMetadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
            "ModelMetadata": unary(servicer.ModelMetadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
            "ModelInfer": unary(servicer.ModelInfer, None, None)}


async def start_grpc(service: Any, host: str, port: int, *, token: str | None = None,
                     max_message_bytes: int = 32 << 20, bodies: Any = None,
                     inline_bytes: int = INLINE_MESSAGE_BYTES, tls: dict[str, Any] | None = None) -> tuple[Any, int]:
    """Start ``inference.GRPCInferenceService`` on ``host:port`` (0: a free port) on the running event loop;
    returns (server, bound port). Stop it with ``await server.stop(grace)``. ``bodies``: the REST app's
    :class:`~edgeify_runtime.serve.http.Bodies` (its decode workers and slots; else one of its own). ``tls``:
    :func:`~edgeify_runtime.serve.tls.read_tls` settings (else an insecure port)."""
    import grpc

    if bodies is None:
        bodies = Bodies(max_body_bytes=max_message_bytes)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_message_bytes),
                                      ("grpc.max_send_message_length", max_message_bytes),
                                      ("grpc.so_reuseport", 0)])
    handlers = _handlers(grpc, pb, InferenceServicer(service, pb, grpc, token, bodies, inline_bytes))
    name = "inference.GRPCInferenceService"
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    # TLS: serve.tls.read_tls, the same certificate (and client CA) as the HTTP server
    bound = server.add_secure_port(address, grpc_credentials(grpc, tls)) if tls else server.add_insecure_port(address)
    if not bound:
        raise OSError(f"cannot listen on {address} (gRPC)")
    await server.start()
    return server, bound


__all__ = ["INLINE_MESSAGE_BYTES", "InferenceServicer", "decode_message", "decode_request", "encode_message",
           "start_grpc"]
