"""Fuzzing the parsers with Hypothesis (issue 11.14): whatever the bytes, only the typed error comes out, never
a crash (any other exception) or a hang (every example has a deadline). Bounded `max_examples` keep the whole
file well under 30 s: manifest/bundle reading, .npz/.npy data, image folders with their preprocess.toml,
ssh_config parsing and target spec files."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from edgeify.errors import EdgeifyError
from edgeify_runtime.errors import EdgeifyRuntimeError
from edgeify_runtime.manifest import Manifest, TensorSpec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FAST = settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

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


@settings(max_examples=12, deadline=20000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(doc=target_docs)  # each example loads the whole registry (built-ins too): fewer examples
def test_target_spec_files_raise_only_typed_errors(doc: str) -> None:
    from edgeify.targets import load_registry

    with tempfile.TemporaryDirectory() as d:
        f = Path(d, "t.toml")
        f.write_text(doc)
        with contextlib.suppress(EdgeifyError):
            load_registry([f], user_dir=Path(d, "none"), entry_points=False)
