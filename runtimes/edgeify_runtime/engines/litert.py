"""LiteRT (TensorFlow Lite) adapter: artifact ``model.tflite``.

The interpreter comes from the first of these that imports: ``ai_edge_litert`` (pip ``ai-edge-litert``, the
current LiteRT runtime), ``tflite_runtime`` (pip ``tflite-runtime``, last release 2.14, still on many devices;
it needs numpy < 2) or ``tensorflow`` (``tf.lite``). ``module`` says which one ran.

Interpreter settings: ``num_threads = threads``; the XNNPACK delegate (LiteRT's default CPU delegate) unless
the option ``xnnpack`` is false.

Quantized I/O: a caller always feeds and receives the dtypes of the manifest's signature. When the model's own
tensor is integer and quantized (int8/int16 with a scale) but the manifest says float32 (``--io-dtype
float32``), the adapter quantizes inputs and dequantizes outputs with the tensor's scale and zero point; with
``--io-dtype int8`` the manifest says int8 and values pass through unchanged.

Versions: a manifest's ``engine.min_version`` is a TensorFlow Lite runtime version (the numbering of
``tensorflow`` and ``tflite-runtime``, derived from the op versions in the model). ``ai-edge-litert`` numbers
its releases differently (1.x, 2.x), so for it the number is not compared; an interpreter that cannot load an
op version, whatever its numbering, fails with EngineMissingError naming the op and the version needed.

Options (manifest ``engine.options`` or ``load(options=...)``):
  ``xnnpack``   bool, default true: use the XNNPACK delegate (false: built-in kernels only)
"""

from __future__ import annotations

import importlib
import re
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from ..errors import BundleError, EngineMissingError
from ..profile import litert
from ..profile.record import build_profile
from .base import THREADS, EngineAdapter, Option, ProfileRun, is_bool, names_to_positions, version_at_least

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    import numpy as np

    from ..manifest import Manifest

#: (importable module, module holding ``Interpreter``, pip distribution), in order of preference
MODULES = (
    ("ai_edge_litert", "ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime", "tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow", "tensorflow.lite.python.interpreter", "tensorflow"),
)
#: modules whose release numbers are TensorFlow Lite runtime versions (comparable with ``min_version``)
TF_NUMBERED = frozenset({"tflite_runtime", "tensorflow"})
INSTALL_HINT = "pip install ai-edge-litert (or, where ai-edge-litert has no wheel, tflite-runtime or tensorflow)"

_OP_ERROR = re.compile(r"Didn't find op for builtin opcode '(?P<op>[A-Z0-9_]+)' version '(?P<ver>\d+)'")


def _natural_key(name: str) -> tuple[Any, ...]:
    """``args_2`` sorts before ``args_10`` (litert-torch names positional inputs ``args_0``, ``args_1``...)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _normalize(name: str) -> str:
    """Tensor names as converters rewrite them: ``serving_default_x:0`` -> ``x``, ``input.1`` -> ``input_1``."""
    name = re.sub(r":\d+$", "", name)
    if name.startswith("serving_default_"):
        name = name[len("serving_default_"):]
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def ordered_io(interpreter: Any) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, dict[str, Any]]]]:
    """The model's inputs and outputs as ``(name, tensor details)`` in signature order.

    With a signature (every converter writes ``serving_default``), names are the signature's keys and the
    order is theirs, sorted naturally (signature maps are stored sorted; ``args_10`` must follow ``args_9``);
    without one, the subgraph's tensor order and names. The host uses this same function to write the
    manifest, so manifest order and adapter order agree.
    """
    inputs = {d["index"]: d for d in interpreter.get_input_details()}
    outputs = {d["index"]: d for d in interpreter.get_output_details()}
    sigs: dict[str, Any] = {}
    try:
        sigs = interpreter._get_full_signature_list() or {}
    except Exception:  # very old interpreters have no signatures
        sigs = {}
    if len(sigs) == 1:
        sig = next(iter(sigs.values()))
        # {"inputs": {name: tensor index}, "outputs": {...}}
        sig_in = {k: int(v) for k, v in (sig.get("inputs") or {}).items()}
        sig_out = {k: int(v) for k, v in (sig.get("outputs") or {}).items()}
        if sorted(sig_in.values()) == sorted(inputs) and sorted(sig_out.values()) == sorted(outputs):
            return ([(k, inputs[sig_in[k]]) for k in sorted(sig_in, key=_natural_key)],
                    [(k, outputs[sig_out[k]]) for k in sorted(sig_out, key=_natural_key)])
    return ([(_normalize(d["name"]), d) for d in interpreter.get_input_details()],
            [(_normalize(d["name"]), d) for d in interpreter.get_output_details()])


def match_names(wanted: list[str], have: list[tuple[str, dict[str, Any]]], what: str) -> list[int]:
    """Positions in ``have`` for each manifest name (by name when every name is found, else by order)."""
    return names_to_positions(list(wanted), [[n, _normalize(n), _normalize(d["name"])] for n, d in have], what,
                              "litert")


def quant_params(details: dict[str, Any]) -> tuple[float, int] | None:
    """(scale, zero point) of a per-tensor quantized tensor, None when the tensor is not quantized."""
    qp = details.get("quantization_parameters") or {}
    scales = qp.get("scales")
    zeros = qp.get("zero_points")
    if scales is not None and len(scales) == 1:
        return float(scales[0]), int(zeros[0]) if zeros is not None and len(zeros) else 0
    q = details.get("quantization") or (0.0, 0)
    return (float(q[0]), int(q[1])) if q[0] else None


class _Port:
    """How one manifest tensor maps onto a model tensor: index, dtypes and the (de)quantization between them."""

    __slots__ = ("dtype", "index", "name", "quant", "want")

    def __init__(self, name: str, details: dict[str, Any], want: Any) -> None:
        import numpy as np

        self.name = name
        self.index = int(details["index"])
        self.dtype = np.dtype(details["dtype"])
        self.want = np.dtype(want)  # what the caller feeds / receives
        q = quant_params(details) if self.dtype.kind in "iu" else None
        self.quant = q if (q is not None and self.want.kind == "f") else None


class LiteRTAdapter(EngineAdapter):
    name = "litert"
    modules = tuple(top for top, _, _ in MODULES)
    # no distributions: ai-edge-litert and tensorflow/tflite-runtime number releases differently; the adapter
    # reports the version of the module it imported and checks min_version itself (``_import_engine``)
    distributions = ()
    pip = "ai-edge-litert"
    option_specs: ClassVar[Mapping[str, Option]] = {"threads": THREADS,
                    "xnnpack": Option(is_bool, "use the XNNPACK delegate (default true)")}
    profile_source = "litert interpreter node table (Interpreter._get_ops_details) and delegate partitions"
    can_dump = True

    @classmethod
    def installed_version(cls) -> str | None:
        from importlib import metadata

        found = cls.find_module()
        for top, _, dist in MODULES:
            if top == found:
                try:
                    return str(metadata.version(dist))
                except Exception:
                    return None
        return None

    @classmethod
    def check_min_version(cls, installed: str | None, minimum: str | None) -> None:
        """Checked after import, against the module that imported (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._interpreter: Any = None
        self._in: list[_Port] = []
        self._out: list[_Port] = []
        self.xnnpack = True

    # -- import --------------------------------------------------------------------------------------------
    def _import_engine(self) -> Any:
        """Import the first available interpreter module; set ``module`` and ``version``; check min_version."""
        from importlib import metadata

        errors = []
        for top, interp_mod, dist in MODULES:
            try:
                module = importlib.import_module(interp_mod)
            except ModuleNotFoundError as exc:
                if exc.name is not None and interp_mod.startswith(exc.name):  # this module is absent
                    continue
                errors.append(f"{top}: {exc}")
                continue
            except Exception as exc:  # numpy 2 with tflite-runtime 2.14 raises ImportError/AttributeError
                errors.append(f"{top}: {type(exc).__name__}: {exc}")
                continue
            version = ""
            for name in (dist, "tensorflow-cpu", "tensorflow-aarch64") if top == "tensorflow" else (dist,):
                try:
                    version = str(metadata.version(name))
                    break
                except Exception:
                    continue
            if not version:
                version = str(getattr(importlib.import_module(top), "__version__", "") or "unknown")
            self.module = top
            self.version = version
            if self.min_version and top in TF_NUMBERED and version != "unknown" \
                    and not version_at_least(version, self.min_version):
                raise EngineMissingError(
                    f"the bundle's ops need a TensorFlow Lite runtime >= {self.min_version}, but {top} {version} "
                    "is what this device has",
                    hint=INSTALL_HINT.replace("tflite-runtime or tensorflow", f"tensorflow >= {self.min_version}"))
            return module
        if errors:
            raise EngineMissingError(
                f"engine 'litert' is installed but cannot be imported ({'; '.join(errors)})",
                hint=INSTALL_HINT + "; tflite-runtime 2.14 needs numpy < 2 (pip install 'numpy<2')")
        raise EngineMissingError(f"engine 'litert' is not installed on this device: {INSTALL_HINT}",
                                 hint=INSTALL_HINT)

    # -- lifecycle -----------------------------------------------------------------------------------------
    def _load(self, artifact: Path, manifest: Manifest) -> None:
        module = self._import_engine()
        self.xnnpack = bool(self.options.get("xnnpack", True))
        kwargs: dict[str, Any] = {"model_path": str(artifact), "num_threads": self.threads}
        if not self.xnnpack:
            resolver = getattr(module, "OpResolverType", None)
            if resolver is None:
                raise BundleError(f"litert: {self.module} {self.version} cannot turn XNNPACK off",
                                  hint="drop the option xnnpack=false")
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            interpreter = module.Interpreter(**kwargs)
            interpreter.allocate_tensors()
        except Exception as exc:
            raise self._load_error(exc, artifact) from exc
        ins, outs = ordered_io(interpreter)
        pos_in = match_names([t.name for t in manifest.inputs], ins, "input")
        pos_out = match_names([t.name for t in manifest.outputs], outs, "output")
        self._in = [_Port(t.name, ins[pos_in[k]][1], t.dtype) for k, t in enumerate(manifest.inputs)]
        self._out = [_Port(t.name, outs[pos_out[k]][1], t.dtype) for k, t in enumerate(manifest.outputs)]
        self._interpreter = interpreter

    def _load_error(self, exc: Exception, artifact: Path) -> Exception:
        text = str(exc)
        m = _OP_ERROR.search(text)
        if m:
            need = f" (the bundle needs a TensorFlow Lite runtime >= {self.min_version})" if self.min_version else ""
            return EngineMissingError(
                f"{self.module} {self.version} cannot run {m.group('op')} version {m.group('ver')}{need}",
                hint=INSTALL_HINT.replace("tflite-runtime or tensorflow",
                                          f"tensorflow >= {self.min_version}" if self.min_version else "tensorflow"))
        return BundleError(f"{self.module} {self.version} cannot load {artifact.name}: {text.strip()}",
                           hint="the bundle may be damaged (rebuild it), or need a newer runtime: " + INSTALL_HINT)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np

        it = self._interpreter
        for port in self._in:
            arr = feeds[port.name]
            if port.quant is not None:
                scale, zero = port.quant
                info = np.iinfo(port.dtype)
                arr = np.clip(np.rint(arr / scale) + zero, info.min, info.max).astype(port.dtype)
            elif arr.dtype != port.dtype:
                arr = arr.astype(port.dtype)
            it.set_tensor(port.index, arr)
        it.invoke()
        out: dict[str, np.ndarray] = {}
        for port in self._out:
            arr = it.get_tensor(port.index)
            if port.quant is not None:
                scale, zero = port.quant
                arr = ((arr.astype(np.float32) - zero) * scale).astype(port.want)
            elif arr.dtype != port.want:
                arr = arr.astype(port.want)
            out[port.name] = arr
        return out

    # -- profile, intermediate tensors ------------------------------------------------------------------------
    def profile_collect(self, run: ProfileRun) -> Any:
        ops, extra, intended, missing = litert.collect(self)
        return build_profile(self.name, litert.SOURCE, run.runs, ops, intended, {**run.overhead, **extra}, missing)

    def dump_intermediates(self, artifact: Path, feeds: Mapping[str, np.ndarray], names: frozenset[str] = frozenset(),
                           precision: str = "fp32") -> dict[str, np.ndarray]:
        """Every tensor the interpreter kept (``experimental_preserve_all_tensors``), by normalized name; inputs
        given in NCHW are transposed when the model takes NHWC."""
        import numpy as np

        module = self._import_engine()
        it = module.Interpreter(model_path=str(artifact), experimental_preserve_all_tensors=True)
        it.allocate_tensors()
        ins, _ = ordered_io(it)
        for (name, det), arr in zip(ins, feeds.values()):
            x = np.asarray(feeds.get(name, arr))
            if tuple(x.shape) != tuple(det["shape"]) and x.ndim == 4:
                x = x.transpose(0, 2, 3, 1)
            it.set_tensor(det["index"], np.ascontiguousarray(x.astype(det["dtype"])))
        it.invoke()
        out = {}
        for d in it.get_tensor_details():
            try:
                out[_normalize(str(d["name"]))] = np.array(it.get_tensor(d["index"]))
            except ValueError:
                continue
        return out

    @property
    def interpreter(self) -> Any:
        """The loaded interpreter (``edgeify_runtime.profile`` reads its node table)."""
        return self._interpreter

    def close(self) -> None:
        self._interpreter = None
        super().close()
