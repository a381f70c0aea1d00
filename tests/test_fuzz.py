"""Fuzzing the parsers of outside input with Hypothesis (issues 11.14 and 24.13): whatever the bytes, a typed
error or a valid result comes out, never a crash (any other exception) or a hang (every example has a deadline).

Parsers: manifest/bundle reading (and the deploy-time manifest check), .npz/.npy data, image folders with their
preprocess.toml, ssh_config, the devices file, target spec files, the service's request decoders (``/v1`` JSON,
the Open Inference Protocol's REST JSON and binary tensor extension, gRPC ModelInferRequest) and response
encoders (strict JSON or a typed error), ``--input-shape`` (build and bench) and the other CLI value parsers
(``--max-time``, ``--since``, ``--max-regression``, ``serve --option``).

Bounded: ``max_examples`` per parser (``EDGEIFY_FUZZ_EXAMPLES``, default 60) keeps the whole file around 30 s;
``benchmarks/fuzz.py`` runs the same properties with thousands of examples each and reports the figures."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from edgeify.analysis.gate import parse_threshold
from edgeify.cli.optimize import parse_duration
from edgeify.errors import EdgeifyError
from edgeify.store.select import parse_since
from edgeify_runtime.errors import EdgeifyRuntimeError
from edgeify_runtime.manifest import Manifest, TensorSpec
from edgeify_runtime.serve.cli import _parse_option
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

#: examples per parser (benchmarks/fuzz.py raises it); derandomized in CI unless EDGEIFY_FUZZ_RANDOM=1
EXAMPLES = int(os.environ.get("EDGEIFY_FUZZ_EXAMPLES", "60"))
DERANDOMIZE = os.environ.get("EDGEIFY_FUZZ_RANDOM") != "1"
FAST = settings(max_examples=EXAMPLES, deadline=5000, suppress_health_check=[HealthCheck.too_slow],
                derandomize=DERANDOMIZE)

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=20)
MANIFEST_KEYS = ("schema_version", "format", "target", "engine", "precision", "inputs", "outputs", "files",
                 "bundle_digest", "labels", "preprocessing", "quantization", "validation")


def _manifest_like() -> st.SearchStrategy[dict]:
    return st.dictionaries(st.sampled_from(MANIFEST_KEYS), json_values, max_size=len(MANIFEST_KEYS))


@FAST
@given(raw=st.one_of(st.binary(max_size=200), _manifest_like().map(lambda d: json.dumps(d).encode())))
def test_manifest_reading_raises_only_bundle_errors(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        Path(d, "manifest.json").write_bytes(raw)
        try:
            m = Manifest.read(d)
            m.verify() if hasattr(m, "verify") else None
        except EdgeifyRuntimeError:
            pass


@FAST
@given(d=_manifest_like())
def test_manifest_from_dict_raises_only_bundle_errors(d: dict) -> None:
    with contextlib.suppress(EdgeifyRuntimeError):
        Manifest.from_dict(d)


SIG = [TensorSpec("x", ("batch", 2, 3), "float32", None, None)]


@FAST
@given(raw=st.binary(max_size=300), suffix=st.sampled_from([".npz", ".npy"]))
def test_data_files_random_bytes(raw: bytes, suffix: str) -> None:
    from edgeify.data import load_dataset

    with tempfile.TemporaryDirectory() as d:
        p = Path(d, "data" + suffix)
        p.write_bytes(raw)
        with contextlib.suppress(EdgeifyError):
            load_dataset(p, SIG, need_labels=True, n_classes=3)


arrays = st.builds(lambda shape, dtype, fill: np.full(shape, fill).astype(dtype),
                   st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple),
                   st.sampled_from(["float32", "float64", "int64", "uint8", "bool", "complex64", "U3"]),
                   st.sampled_from([0, 1, 2.5, -1, float("nan"), 300]))


@FAST
@given(x=arrays, labels=st.one_of(st.none(), arrays), key=st.sampled_from(["x", "y", "labels"]))
def test_data_files_well_formed_but_wrong(x: np.ndarray, labels: np.ndarray | None, key: str) -> None:
    from edgeify.data import load_dataset

    with tempfile.TemporaryDirectory() as d:
        p = Path(d, "data.npz")
        buf = io.BytesIO()
        np.savez(buf, **({key: x} | ({"labels": labels} if labels is not None and key != "labels" else {})))
        p.write_bytes(buf.getvalue())
        with contextlib.suppress(EdgeifyError):
            load_dataset(p, SIG, need_labels=True, n_classes=3)


@FAST
@given(toml=st.text(max_size=200), png=st.binary(max_size=64))
def test_image_folder_with_random_preprocess_toml(toml: str, png: bytes) -> None:
    from edgeify.data import load_dataset

    with tempfile.TemporaryDirectory() as d:
        folder = Path(d, "imgs")
        (folder / "cat").mkdir(parents=True)
        (folder / "cat" / "a.png").write_bytes(png)
        (folder / "preprocess.toml").write_text(toml)
        sig = [TensorSpec("image", ("batch", 3, 4, 4), "float32", "NCHW", None)]
        with contextlib.suppress(EdgeifyError):
            load_dataset(folder, sig)


@FAST
@given(text=st.text(max_size=300), alias=st.text(min_size=1, max_size=10))
def test_ssh_config_parsing_raises_only_config_errors(text: str, alias: str) -> None:
    from edgeify.deploy.sshconfig import resolve

    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d, "config")
        cfg.write_text(text)
        old = os.environ.get("EDGEIFY_SSH_CONFIG")
        os.environ["EDGEIFY_SSH_CONFIG"] = str(cfg)
        try:
            resolve(alias)
        except EdgeifyError:
            pass
        finally:
            if old is None:
                os.environ.pop("EDGEIFY_SSH_CONFIG", None)
            else:
                os.environ["EDGEIFY_SSH_CONFIG"] = old


target_docs = st.one_of(
    st.text(max_size=200),
    st.dictionaries(st.sampled_from(["name", "extends", "precisions", "default_engine", "status", "arch",
                                     "engines", "bench", "tolerances"]),
                    st.one_of(st.text(max_size=10), st.integers(), st.lists(st.text(max_size=6), max_size=3),
                              st.just("x86-cpu"), st.just({"fp32": "openvino"})), max_size=6)
    .map(lambda t: "[[targets]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in t.items())))


@settings(max_examples=max(12, EXAMPLES // 5), deadline=20000, suppress_health_check=[HealthCheck.too_slow],
          derandomize=DERANDOMIZE)
@given(doc=target_docs)  # each example loads the whole registry (built-ins too): fewer examples
def test_target_spec_files_raise_only_typed_errors(doc: str) -> None:
    from edgeify.targets import load_registry

    with tempfile.TemporaryDirectory() as d:
        f = Path(d, "t.toml")
        f.write_text(doc)
        with contextlib.suppress(EdgeifyError):
            load_registry([f], user_dir=Path(d, "none"), entry_points=False)


# -- issue 24.13: the rest of the parsers of outside input ------------------------------------------------------

def _strict(text: bytes | str) -> object:
    def refuse(const: str) -> object:
        raise AssertionError(f"invalid JSON constant {const} in a response")
    return json.loads(text, parse_constant=refuse)


@FAST
@given(manifest=_manifest_like(), engine=st.one_of(st.text(max_size=12), st.sampled_from(
    ["onnxruntime", "openvino", "../../x", "litert"])), options=st.dictionaries(st.text(max_size=30), json_values,
                                                                                  max_size=3))
def test_deploy_manifest_check_raises_only_bundle_errors(manifest: dict, engine: str, options: dict) -> None:
    """LocalBundle.read (what deploy and remote bench send): a valid bundle with random engine name, options and
    other manifest fields; only BundleError (exit 12) or a bundle the runtime would load."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent / "ssh"))
    import sshlab
    from edgeify.deploy.deployer import LocalBundle

    with tempfile.TemporaryDirectory() as d:
        bundle = _fuzz_bundle(sshlab, Path(d))
        doc = json.loads((bundle / "manifest.json").read_text())
        doc["engine"]["name"], doc["engine"]["options"] = engine, options
        for k, v in manifest.items():
            if k not in ("files", "bundle_digest", "format", "schema_version"):
                doc[k] = v
        (bundle / "manifest.json").write_text(json.dumps(doc))
        with contextlib.suppress(EdgeifyRuntimeError):
            LocalBundle.read(bundle)


_BUNDLE_BYTES: dict[str, bytes] = {}


def _fuzz_bundle(sshlab: object, d: Path) -> Path:
    """A real tiny bundle, built once per process and copied (fuzz examples must be fast)."""
    out = d / "b"
    if not _BUNDLE_BYTES:
        built = sshlab.make_bundle(d / "proto", seed=9)  # type: ignore[attr-defined]
        _BUNDLE_BYTES.update({p.name: p.read_bytes() for p in built.iterdir()})
    out.mkdir()
    for name, data in _BUNDLE_BYTES.items():
        (out / name).write_bytes(data)
    return out


devices_docs = st.one_of(
    st.binary(max_size=200),
    st.dictionaries(st.text(max_size=8), st.dictionaries(
        st.sampled_from(["host", "port", "user", "key", "python", "workdir", "target", "tags", "x"]),
        st.one_of(st.text(max_size=12), st.integers(-5, 70000), st.lists(st.text(max_size=5), max_size=3),
                  st.booleans()), max_size=5), max_size=3)
    .map(lambda t: "".join(f"[devices.{json.dumps(n)}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in f.items())
                           for n, f in t.items()).encode()))


@FAST
@given(raw=devices_docs)
def test_devices_file_raises_only_config_errors(raw: bytes) -> None:
    from edgeify.deploy.inventory import Inventory

    with tempfile.TemporaryDirectory() as d:
        p = Path(d, "devices.toml")
        p.write_bytes(raw)
        with contextlib.suppress(EdgeifyError):
            inv = Inventory(p)
            for dev in inv:
                assert dev.target


NAMES = ["x"]
small_floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
json_tensors = st.recursive(st.one_of(st.integers(-10**20, 10**20), st.floats(), st.text(max_size=3), st.booleans(),
                                      st.none()), lambda c: st.lists(c, max_size=4), max_leaves=24)


@FAST
@given(body=st.one_of(
    st.binary(max_size=300),
    st.builds(lambda inputs, enc: json.dumps({"inputs": inputs, "encoding": enc}).encode(),
              st.one_of(json_tensors, st.dictionaries(st.sampled_from(["x", "y", "b64"]), json_tensors, max_size=2),
                        st.fixed_dictionaries({"x": st.fixed_dictionaries({
                            "b64": st.sampled_from(["", "AAAA", "AACAfw==", "!!"]),
                            "dtype": st.sampled_from(["float32", "float16", "int8", "object", "U3", "V4", "x"]),
                            "shape": st.lists(st.integers(-2, 3), max_size=3)})})),
              st.sampled_from(["json", "b64", 3]))))
def test_v1_request_decoder_raises_only_http_errors(body: bytes) -> None:
    from edgeify_runtime.serve.codec import HTTPError, decode_request

    try:
        feeds, enc = decode_request(body, NAMES)
    except HTTPError as err:
        assert 400 <= err.status < 500
        return
    assert enc in ("json", "b64") and set(feeds) == set(NAMES)
    assert all(isinstance(v, np.ndarray) and v.dtype.kind in "biuf" for v in feeds.values())


oip_items = st.fixed_dictionaries({
    "name": st.one_of(st.just("x"), st.text(max_size=3), st.integers()),
    "shape": st.one_of(st.lists(st.integers(-1, 4), max_size=4), st.text(max_size=3), st.just([True])),
    "datatype": st.sampled_from(["FP32", "FP16", "INT64", "BOOL", "BYTES", "UINT8", "fp32", ""]),
}, optional={"data": st.lists(st.one_of(st.floats(), st.integers(-10**20, 10**20), st.booleans(), st.text(max_size=2)),
                              max_size=12),
             "parameters": st.dictionaries(st.sampled_from(["binary_data_size", "x"]),
                                           st.one_of(st.integers(-4, 64), st.text(max_size=2), st.none()), max_size=2)})


@FAST
@given(items=st.lists(oip_items, max_size=3), tail=st.binary(max_size=64),
       header=st.one_of(st.none(), st.integers(-5, 400)), junk=st.binary(max_size=100), raw=st.booleans())
def test_oip_rest_decoder_raises_only_http_errors(items: list, tail: bytes, header: int | None, junk: bytes,
                                                  raw: bool) -> None:
    """The Open Inference Protocol's REST request: JSON, or a JSON header + binary tensors
    (Inference-Header-Content-Length); only 400s or well-formed arrays."""
    from edgeify_runtime.serve.codec import HTTPError
    from edgeify_runtime.serve.oip import decode_infer

    head = junk if raw else json.dumps({"id": "1", "inputs": items}).encode()
    body = head + tail
    length = header if header is not None and raw else (len(head) if header is not None else None)
    try:
        feeds, meta = decode_infer(body, length)
    except HTTPError as err:
        assert err.status == 400
        return
    assert all(isinstance(v, np.ndarray) for v in feeds.values()) and isinstance(meta, dict)


@FAST
@given(values=st.lists(small_floats, min_size=1, max_size=8), binary=st.booleans(), b64=st.booleans(),
       labels=st.booleans())
def test_response_encoders_write_strict_json_or_a_typed_error(values: list, binary: bool, b64: bool,
                                                              labels: bool) -> None:
    """Outputs with NaN/inf: the /v1 and /v2 encoders give strict JSON (no NaN/Infinity) or a 500 naming them."""
    from edgeify_runtime.serve.codec import HTTPError, render_bytes
    from edgeify_runtime.serve.oip import encode_infer

    y = np.asarray([values], np.float32)
    outputs = {"y": y}
    try:
        _strict(render_bytes(outputs, {"size": 1}, b64, [f"c{i}" for i in range(y.shape[1])] if labels else None))
    except HTTPError as err:
        assert err.status == 500 and err.kind == "non_finite_output" and not np.isfinite(y).all()
    meta = {"id": "1", "outputs": [{"name": "y", "parameters": {"binary_data": binary}}], "parameters": {}}
    try:
        body, head = encode_infer(outputs, meta, "m")
        _strict(body[:head] if head is not None else body)
    except HTTPError as err:
        assert err.status == 500 and not binary and not np.isfinite(y).all()


grpc_inputs = st.lists(st.fixed_dictionaries({
    "name": st.text(max_size=3), "datatype": st.sampled_from(["FP32", "FP16", "INT64", "BOOL", "BYTES", "X"]),
    "shape": st.lists(st.integers(0, 5), max_size=4), "fp32": st.lists(small_floats, max_size=8),
    "raw": st.one_of(st.none(), st.binary(max_size=40))}), max_size=3)


@FAST
@given(message=st.one_of(st.binary(max_size=200), grpc_inputs))
def test_grpc_request_decoder_raises_only_http_errors(message: object) -> None:
    from edgeify_runtime.serve.codec import HTTPError
    from edgeify_runtime.serve.grpc_server import decode_message
    from edgeify_runtime.serve.proto import grpc_predict_v2_pb2 as pb

    if not isinstance(message, bytes):
        req = pb.ModelInferRequest(model_name="m")
        for item in message:
            t = req.inputs.add(name=item["name"], datatype=item["datatype"], shape=item["shape"])
            t.contents.fp32_contents.extend(item["fp32"])
            if item["raw"] is not None:
                req.raw_input_contents.append(item["raw"])
        message = req.SerializeToString()
    try:
        head, feeds = decode_message(message)
    except HTTPError as err:
        assert err.status == 400
        return
    assert isinstance(head["model_name"], str) and all(isinstance(v, np.ndarray) for v in feeds.values())


shape_specs = st.lists(st.one_of(
    st.text(alphabet="0123456789,x:-. ab", max_size=30),
    st.lists(st.integers(-2, 10**12), min_size=1, max_size=5).map(lambda d: ",".join(map(str, d))),
    st.lists(st.integers(1, 10**12), min_size=1, max_size=5).map(lambda d: "x:" + ",".join(map(str, d)))), max_size=3)


@FAST
@given(specs=shape_specs)
def test_input_shape_parsers_raise_only_typed_errors(specs: list[str]) -> None:
    """``--input-shape`` as build reads it (sources) and as bench reads it against a bundle (memory included)."""
    import sys

    from edgeify.bench import parse_input_shapes as bench_shapes
    from edgeify.sources import parse_input_shapes as build_shapes

    with contextlib.suppress(EdgeifyError):
        build_shapes(specs)
    sys.path.insert(0, str(Path(__file__).resolve().parent / "ssh"))
    import sshlab

    with tempfile.TemporaryDirectory() as d, contextlib.suppress(EdgeifyError):
        out = bench_shapes(specs, _fuzz_bundle(sshlab, Path(d)))
        assert all(len(s) == 2 and s[1] == 16 for s in out.values())


#: the CLI value parsers, imported with this module (a first import inside an example is slow under load and would
#: count against its deadline)
_CLI_PARSERS = (parse_duration, parse_since, parse_threshold, _parse_option)


@FAST
@given(text=st.one_of(st.text(max_size=20), st.from_regex(r"\s*[0-9.e+-]{1,25}[hmswd%]?\s*", fullmatch=True)))
def test_cli_value_parsers_raise_only_typed_errors(text: str) -> None:
    import argparse

    for parse in _CLI_PARSERS[:3]:
        with contextlib.suppress(EdgeifyError):
            parse(text)
    with contextlib.suppress(argparse.ArgumentTypeError):
        key, _ = _parse_option(text)
        assert key
