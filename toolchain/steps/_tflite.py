"""Helpers shared by the TFLite steps (host side; need ``ai-edge-litert``): the minimum runtime version a model's
op versions need, and the manifest signature (names, shapes, dtypes, layouts) of a converted ``.tflite``."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeify.checks import compare, random_dataset
from edgeify.errors import ConversionError
from edgeify.noise import captured_logging, captured_warnings, is_noise, keep, native_stderr_filter
from edgeify_runtime.engines.litert import match_names, ordered_io, quant_params
from edgeify_runtime.manifest import TensorSpec

from .records import IoQuantization, QParams

# The TensorFlow Lite runtime release that first runs each builtin op version, from TensorFlow's
# tensorflow/compiler/mlir/lite/tools/versioning/runtime_version.cc (the table the TF converter itself uses for
# its `min_runtime_version` metadata). One line per op: the versions 1, 2, 3... in order; "-" = no such version.
# Converters do not always write that metadata correctly (litert-torch writes "2.0.0" for every model,
# ai-edge-quantizer does not update it), so edgeify computes it from the ops.
_OP_VERSION_TABLE = """
ABS 1.13.0 2.4.0 2.5.0 2.6.0 2.12.0
ADD 1.5.0 1.14.0 2.4.0 2.6.0 2.13.0 2.23.0
ADD_N 1.14.0
ARG_MAX 1.9.0 1.14.0 2.9.0
ARG_MIN 1.9.0 1.14.0 2.9.0
ASSIGN_VARIABLE 2.6.0
ATAN2 2.10.0
AVERAGE_POOL_2D 1.5.0 1.14.0 2.3.0
BATCH_MATMUL 2.3.0 2.3.0 2.4.0 2.5.0
BATCH_TO_SPACE_ND 1.6.0 1.14.0 2.3.0 2.12.0
BIDIRECTIONAL_SEQUENCE_LSTM 1.14.0 1.14.0 1.14.0
BIDIRECTIONAL_SEQUENCE_RNN 1.14.0 1.14.0 2.3.0
BITCAST 2.13.0
BITWISE_XOR 2.13.0
BROADCAST_ARGS 2.6.0
BROADCAST_TO - 2.5.0 2.5.0
BUCKETIZE 2.8.0
CALL_ONCE 2.5.0
CAST 1.5.0 2.7.0 2.8.0 2.9.0 2.12.0 2.15.0 2.17.0 2.21.0
CEIL 1.14.0
COMPLEX_ABS 2.5.0
CONCATENATION 1.5.0 1.14.0 2.3.0 2.14.0 2.21.0
CONV_2D 1.5.0 1.14.0 1.14.0 2.3.0 2.4.0 2.9.0 2.11.0 2.15.0
CONV_3D 2.5.0
CONV_3D_TRANSPOSE 2.6.0
COS 1.14.0
CUMSUM 2.4.0
DENSIFY 2.2.0
DEPTH_TO_SPACE 2.1.0 2.5.0
DEPTHWISE_CONV_2D 1.5.0 1.12.0 1.14.0 2.2.0 2.3.0 2.3.0 2.11.0
DEQUANTIZE 1.13.1 1.14.0 1.15.0 2.2.0 2.7.0 2.18.0 2.21.0 2.22.0
DILATE 2.15.0
DIV 1.6.0 2.3.0
DYNAMIC_UPDATE_SLICE 2.9.0 2.17.0 2.19.0 2.20.0 2.21.0 2.22.0
ELU 1.14.0
EMBEDDING_LOOKUP 1.13.0 1.14.0 1.14.0 2.18.0 2.21.0
EMBEDDING_LOOKUP_SPARSE 1.5.0
EQUAL 1.14.0 1.14.0 2.3.0 2.13.0 2.21.0
EXP 1.7.0 2.12.0
EXPAND_DIMS 1.10.0
FAKE_QUANT 1.5.0 1.10.0
FILL 1.13.0 2.3.0 2.5.0 2.12.0
FLOOR 1.9.0
FLOOR_DIV 1.14.0 1.14.0 2.13.0
FLOOR_MOD 1.13.0 2.13.0
FULLY_CONNECTED 1.5.0 1.10.0 1.14.0 1.14.0 2.0.0 2.1.0 2.3.0 2.3.0 2.3.0 2.11.0 2.15.0 2.17.0 2.18.0 2.21.0
GATHER 1.6.0 1.14.0 1.15.0 2.4.0 2.5.0 2.13.0 2.15.0
GATHER_ND 1.14.0 2.3.0 2.5.0 2.13.0 2.16.0
GELU 2.9.0 2.9.0
GREATER 1.14.0 1.14.0
GREATER_EQUAL 1.14.0 1.14.0 2.13.0
HARD_SWISH 1.15.0
HASHTABLE 2.5.0
HASHTABLE_FIND 2.5.0
HASHTABLE_IMPORT 2.5.0
HASHTABLE_LOOKUP 1.5.0
HASHTABLE_SIZE 2.5.0
IF 1.15.0
IMAG 2.5.0
L2_NORMALIZATION 1.5.0 1.14.0
L2_POOL_2D 1.5.0
LEAKY_RELU 1.13.1 2.3.0
LESS 1.14.0 1.14.0 2.13.0
LESS_EQUAL 1.14.0 1.14.0
LOCAL_RESPONSE_NORMALIZATION 1.5.0
LOG 1.14.0 2.15.0
LOG_SOFTMAX 1.14.0 1.14.0
LOGICAL_AND 1.11.0
LOGICAL_NOT 1.11.0
LOGICAL_OR 1.11.0
LOGISTIC 1.14.0 1.14.0 2.3.0
LSH_PROJECTION 1.5.0
LSTM 1.7.0 1.10.0 1.14.0 2.3.0
MATRIX_DIAG 1.14.0
MATRIX_SET_DIAG 1.14.0
MAX_POOL_2D 1.5.0 1.14.0 2.3.0
MAXIMUM 1.14.0 1.14.0 2.3.0 2.3.0
MEAN 1.6.0 1.14.0 2.4.0
MINIMUM 1.14.0 1.14.0 2.3.0 2.3.0
MIRROR_PAD 1.13.1 2.3.0 2.12.0
MUL 1.5.0 1.14.0 1.15.0 2.3.0 2.6.0 2.11.0 2.13.0 2.23.0
MULTINOMIAL 2.8.0
NEG 1.9.0
NON_MAX_SUPPRESSION_V4 2.1.0
NON_MAX_SUPPRESSION_V5 2.1.0
NOT_EQUAL 1.14.0 1.14.0 2.3.0 2.21.0
ONE_HOT 1.11.0
PACK 1.11.0 1.14.0 2.3.0 2.13.0
PAD 1.5.0 1.14.0 2.4.0 2.6.0 2.20.0
PADV2 1.9.0 1.14.0 2.4.0 2.6.0 2.20.0
POW 1.10.0
PRELU 1.8.0
QUANTIZE 1.14.0 1.15.0 2.7.0 2.21.0 2.21.0 2.21.0
RANDOM_STANDARD_NORMAL 2.8.0
RANDOM_UNIFORM 2.8.0
RANGE 1.13.0 2.14.0
RANK 1.14.0
READ_VARIABLE 2.6.0
REAL 2.5.0
REDUCE_ALL 2.6.0
REDUCE_ANY 1.11.0
REDUCE_MAX 1.11.0 1.14.0 2.5.0
REDUCE_MIN 1.11.0 1.14.0 2.5.0
REDUCE_PROD 1.11.0 2.6.0
REDUCE_WINDOW 2.15.0
RELU 1.5.0 2.1.0 2.5.0
RELU6 1.5.0 1.14.0 2.5.0
RELU_0_TO_1 2.10.0
RELU_N1_TO_1 1.5.0
RESHAPE 1.5.0
RESIZE_BILINEAR 1.7.0 1.14.0 2.2.0 2.5.0
RESIZE_NEAREST_NEIGHBOR 1.13.1 1.14.0 2.3.0 2.4.0
REVERSE_SEQUENCE 1.14.0
REVERSE_V2 1.14.0 2.2.0 2.5.0
RFFT2D 2.5.0
RIGHT_SHIFT 2.13.0
RNN 1.5.0 1.14.0 2.3.0
ROUND 1.14.0
RSQRT 1.10.0 2.5.0 2.15.0
SCATTER_ND 2.1.0
SEGMENT_SUM 2.2.0
SELECT 1.14.0 1.14.0 2.12.0 2.12.0
SELECT_V2 2.2.0 2.12.0
SHAPE 1.10.0
SIGN 2.11.0 2.12.0
SIN 1.9.0
SKIP_GRAM 1.5.0
SLICE 1.14.0 1.14.0 1.14.0 2.4.0 2.5.0 2.14.0 2.21.0
SOFTMAX 1.5.0 1.14.0 2.3.0
SPACE_TO_BATCH_ND 1.6.0 1.14.0 2.3.0 2.12.0
SPACE_TO_DEPTH 1.5.0 1.14.0
SPARSE_TO_DENSE 1.9.0 1.14.0 1.15.0
SPLIT 1.5.0 1.14.0 1.14.0 2.3.0
SPLIT_V 1.13.1 2.3.0
SQRT 1.10.0 2.21.0
SQUARE 1.12.0
SQUARED_DIFFERENCE 1.13.1 2.5.0
SQUEEZE 1.6.0 2.5.0
STABLEHLO_ADD 2.16.0
STABLEHLO_AND 2.17.0
STABLEHLO_CASE 2.17.0
STABLEHLO_CBRT 2.17.0
STABLEHLO_COMPOSITE 2.17.0
STABLEHLO_GATHER 2.16.0
STABLEHLO_MAXIMUM 2.16.0
STABLEHLO_MINIMUM 2.16.0
STABLEHLO_MULTIPLY 2.16.0
STABLEHLO_PAD 2.16.0
STABLEHLO_REDUCE_WINDOW 2.16.0
STABLEHLO_RNG_BIT_GENERATOR 2.15.0
STABLEHLO_SCATTER 2.15.0
STABLEHLO_SHIFT_LEFT 2.17.0
STRIDED_SLICE 1.6.0 1.14.0 2.1.0 2.2.0 2.5.0 2.6.0 2.14.0 2.14.0
SUB 1.6.0 1.14.0 2.3.0 2.4.0 2.4.0
SUM 1.10.0 1.15.0
SVDF 1.5.0 1.14.0 2.2.0 2.3.0
TANH 1.14.0 1.14.0 2.3.0
TILE 1.10.1 2.2.0 2.8.0
TOPK_V2 1.7.0 1.14.0 2.13.0
TRANSPOSE 1.6.0 1.14.0 1.15.0 2.3.0 2.4.0 2.12.0 2.14.4 2.22.0
TRANSPOSE_CONV 1.9.0 2.2.0 2.3.0 2.13.0 2.15.0
UNIDIRECTIONAL_SEQUENCE_LSTM 1.13.1 1.14.0 2.3.0 2.12.0
UNIDIRECTIONAL_SEQUENCE_RNN 1.14.0 1.14.0 2.3.0
UNIQUE 1.14.0
UNPACK 1.11.0 1.14.0 2.2.0 2.3.0 2.22.0
UNSORTED_SEGMENT_MAX 2.10.0
UNSORTED_SEGMENT_MIN 2.11.0
UNSORTED_SEGMENT_PROD 2.10.0
UNSORTED_SEGMENT_SUM 2.10.0
VAR_HANDLE 2.6.0
WHERE 1.14.0 2.8.0
WHILE 1.15.0
ZEROS_LIKE 1.12.0
"""


def _parse_table(text: str) -> dict[tuple[str, int], str]:
    table = {}
    for line in text.strip().splitlines():
        op, *versions = line.split()
        for i, v in enumerate(versions, start=1):
            if v != "-":
                table[(op, i)] = v
    return table


OP_RUNTIME_VERSIONS: dict[tuple[str, int], str] = _parse_table(_OP_VERSION_TABLE)


def _vtuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v))


def read_model(path: Path) -> Any:
    from ai_edge_litert import schema_py_generated as schema

    return schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)


def model_ops(model: Any) -> list[tuple[str, int]]:
    """(builtin op name, op version) of every operator code the model uses; custom ops as ``CUSTOM:name``."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = []
    for code in model.operatorCodes or []:
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)
            name = f"CUSTOM:{custom}"
        ops.append((name, int(code.version)))
    return sorted(set(ops))


def min_runtime_version(path: Path, floor: str | None = None) -> dict[str, Any]:
    """The oldest TensorFlow Lite runtime that has every op version of the model (at least ``floor``).

    Returns ``{"min_version", "needed_by": [op@version, ...], "ops": {...}, "unknown": [...]}``; op versions
    newer than the table (or custom ops) are listed under ``unknown`` and do not raise the minimum.
    """
    ops = model_ops(read_model(path))
    best = floor or "0"
    needed_by: list[str] = []
    unknown = []
    for name, ver in ops:
        rt = OP_RUNTIME_VERSIONS.get((name, ver))
        if rt is None:
            unknown.append(f"{name}@{ver}")
            continue
        if _vtuple(rt) > _vtuple(best):
            best, needed_by = rt, [f"{name}@{ver}"]
        elif _vtuple(rt) == _vtuple(best):
            needed_by.append(f"{name}@{ver}")
    return {"min_version": best, "needed_by": needed_by, "ops": {f"{n}@{v}": OP_RUNTIME_VERSIONS.get((n, v))
                                                                 for n, v in ops}, "unknown": unknown}


def run_error(path: Path, samples: list[Path] | None = None, timeout: float = 120) -> str | None:
    """Why LiteRT cannot load and run the model once (on the ``.npy`` samples by input position, else zeros),
    or None. In a subprocess: a broken converter output can abort the process (a failed CHECK in a kernel)."""
    import subprocess

    cmd = [sys.executable, "-m", "edgeify.steps._litert_probe", str(path), *[str(p) for p in samples or []]]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"did not finish one inference in {timeout:.0f} s"
    if proc.returncode == 0:
        return None
    keep("litert probe", proc.stdout + proc.stderr)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip() and not is_noise(ln)]
    if proc.returncode < 0:
        return f"LiteRT crashed (signal {-proc.returncode})" + (f": {lines[-1]}" if lines else "")
    return lines[-1] if lines else f"exit {proc.returncode}"


CHANNELS_FIRST = {3: "NCW", 4: "NCHW", 5: "NCDHW"}
CHANNELS_LAST = {3: "NWC", 4: "NHWC", 5: "NDHWC"}


def _fixed(shape: tuple[int | str, ...], batch: int) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else (batch if i == 0 else -1) for i, d in enumerate(shape))


def signature(path: Path, source_in: list[TensorSpec], source_out: list[TensorSpec], *, batch: int,
              io_dtype: str) -> tuple[list[TensorSpec], list[TensorSpec], IoQuantization]:
    """The manifest signature of a converted model and its I/O quantization.

    Names and caller layouts come from the source signature; shapes from the .tflite, in the caller's layout
    (the .tflite has a fixed ``batch``); ``engine_layout`` is the .tflite's own layout where the converter
    moved channels last (onnx2tf).
    Caller dtypes: the source's (float32) with ``io_dtype`` float32, the tensor's own (int8) with int8.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    with native_stderr_filter():  # LiteRT logs its XNNPACK line once per process, at the first allocation
        interp = Interpreter(model_path=str(path))
        interp.allocate_tensors()
    ins, outs = ordered_io(interp)
    io: dict[str, dict[str, QParams]] = {"inputs": {}, "outputs": {}}

    def build(kind: str, src: list[TensorSpec], have: list[tuple[str, dict[str, Any]]]) -> list[TensorSpec]:
        if len(src) != len(have):
            raise ConversionError(f"the converted model has {len(have)} {kind}s, the source has {len(src)}: "
                                  f"{[n for n, _ in have]} vs {[t.name for t in src]}")
        pos = match_names([t.name for t in src], have, kind)
        specs = []
        for k, s in enumerate(src):
            _, det = have[pos[k]]
            got = tuple(int(d) for d in det["shape"])
            want = _fixed(s.shape, batch)
            rank = len(want)
            layout, engine_layout = s.layout, s.layout
            same = len(got) == rank and all(w in (-1, g) for w, g in zip(want, got, strict=True))
            last = (len(got) == rank and rank in CHANNELS_FIRST
                    and all(w in (-1, g) for w, g in zip(want, (got[0], got[-1], *got[1:-1]), strict=True)))
            if same:
                shape = got
            elif last and s.layout in (None, CHANNELS_FIRST[rank]):
                layout, engine_layout = CHANNELS_FIRST[rank], CHANNELS_LAST[rank]
                shape = (got[0], got[-1], *got[1:-1])
            else:
                raise ConversionError(f"{kind} {s.name!r}: the converted model's shape {list(got)} matches neither "
                                      f"the source shape {list(s.shape)} nor its channels-last form")
            tensor_dtype = np.dtype(det["dtype"]).name
            q = quant_params(det) if np.dtype(det["dtype"]).kind in "iu" else None
            dtype = tensor_dtype if (io_dtype != "float32" and q is not None) else s.dtype
            if q is not None:
                io[kind + "s"][s.name] = QParams(tensor_dtype, float(q[0]), int(q[1]))
            specs.append(TensorSpec(s.name, shape, dtype, layout, engine_layout))
        return specs

    specs_in, specs_out = build("input", source_in, ins), build("output", source_out, outs)
    return specs_in, specs_out, IoQuantization(io["inputs"], io["outputs"])


@contextlib.contextmanager
def quiet_converter() -> Iterator[None]:
    """Converters print to stdout (litert-torch's progress, ai-edge-quantizer's size report), but stdout is
    edgeify's (``--format json``): send file descriptor 1 to stderr, turn litert-torch's progress display off
    keep Python warnings and warning-level logs off the terminal while a converter runs (errors still raise), and
    drop TensorFlow's native INFO lines: all of them go to this run's log (``edgeify.noise``)."""
    old_env = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    old_tqdm = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # progress bars of libraries whose tqdm is imported in here
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with native_stderr_filter():  # first: fd 1 then goes to the filtered fd 2 too
            os.dup2(2, 1)
            try:
                # torch.export / torchao deprecation chatter; "converted in training mode" (ExportedProgram modules)
                with captured_warnings("converter"), captured_logging():
                    yield
            finally:
                sys.stdout.flush()
                os.dup2(saved, 1)  # before the filter closes its pipe
    finally:
        os.close(saved)
        for name, old in (("LITERT_TORCH_SHOW_PROGRESS", old_env), ("TQDM_DISABLE", old_tqdm)):
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def fixed_batch(specs: list[TensorSpec]) -> int | None:
    """The source's own static batch (the first input whose leading dimension is a number; as
    ``checks.random_dataset`` reads it), or None when the batch is dynamic."""
    return next((int(t.shape[0]) for t in specs if t.shape and isinstance(t.shape[0], int)), None)


def float_check(ctx: Any, path: Path, source_in: list[TensorSpec], source_out: list[TensorSpec], *, batch: int,
                samples: int = 4) -> str | None:
    """The float ``.tflite`` against the source model at the fp32 tolerance, before anything is quantized (so a
    converter fault is caught as one, not hidden under int8's looser gate): None when it holds, else what
    differs (``output y: max|Δ| 1.4 > 0.000144 (4 inputs)``). Inputs: the first ``--calib`` samples, else random
    ones (``checks.random_dataset``); channels-last models get channels-last inputs. The source is fed in slices of
    its own fixed batch when it has one (an input shaped ``[2, 3, 8, 8]`` takes exactly 2), else of ``batch``."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    batch = fixed_batch(source_in) or batch
    samples = max(samples, batch)
    ins, outs, _ = signature(path, source_in, source_out, batch=batch, io_dtype="float32")
    data = (ctx.calib.head(samples) if ctx.calib is not None and ctx.calib.count >= samples
            else random_dataset(list(source_in), samples, seed=0))
    feeds = {t.name: np.asarray(data.inputs[t.name][:samples]) for t in source_in}
    n = min(len(v) for v in feeds.values())
    reference = ctx.source.reference()
    with native_stderr_filter():
        interp = Interpreter(model_path=str(path))
        interp.allocate_tensors()
    have_in, have_out = ordered_io(interp)
    pos_in = match_names([t.name for t in ins], have_in, "input")
    pos_out = match_names([t.name for t in outs], have_out, "output")
    ref_parts: list[list[np.ndarray]] = [[] for _ in outs]
    got_parts: list[list[np.ndarray]] = [[] for _ in outs]
    for i in range(0, n - batch + 1, batch):
        one = {k: v[i:i + batch] for k, v in feeds.items()}
        for k, r in enumerate(reference.run(one)):
            ref_parts[k].append(np.asarray(r))
        for k, t in enumerate(ins):
            det = have_in[pos_in[k]][1]
            x = one[t.name]
            if t.engine_layout != t.layout and x.ndim >= 3:
                x = np.moveaxis(x, 1, -1)
            interp.set_tensor(det["index"], np.ascontiguousarray(x).astype(det["dtype"]))
        interp.invoke()
        for k, t in enumerate(outs):
            y = interp.get_tensor(have_out[pos_out[k]][1]["index"])
            if t.engine_layout != t.layout and y.ndim >= 3:
                y = np.moveaxis(y, -1, 1)
            got_parts[k].append(y)
    if not ref_parts or not ref_parts[0]:
        return None
    ref = [np.concatenate(p) for p in ref_parts]
    got = [np.concatenate(p) for p in got_parts]
    _, bad = compare([t.name for t in outs], ref, got, ctx.target.tolerances["fp32"], "float check", True)
    if not bad:
        return None
    return "; ".join(f"output {m.output}: {m.what} {m.value} > {m.limit.split(' (')[0].lstrip('≤ ')}"
                     for m in bad) + f" ({len(ref[0])} inputs)"
