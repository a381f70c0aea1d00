"""Converter failures as ``ConversionError``s that name the op and end with the converter's last meaningful lines
(never a tensor dump), for ``tflite-convert``'s routes (litert-torch, onnx2tf, onnx2torch)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edgeify.errors import ConversionError
from edgeify.noise import keep, strip_noise

from ._tflite import model_ops, read_model

_LOWERING = re.compile(r"Lowering not found: (?P<op>aten\.[A-Za-z0-9_]+)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _torch_error(exc: BaseException, module: Any, args: tuple[Any, ...]) -> ConversionError:
    """A litert-torch failure as a ConversionError naming the aten op(s) it cannot lower."""
    ops = sorted(set(_LOWERING.findall(str(exc))))
    if not ops:
        ops = _unlowered_ops(module, args)
    if ops:
        names = ", ".join(o.removesuffix(".default") for o in ops)
        return ConversionError(
            f"litert-torch cannot convert the op(s) {names}: no TFLite lowering ({_first_line(exc)})",
            hint="replace the op in the model (or give edgeify an ONNX export, which takes the onnx2tf route)")
    return ConversionError(f"litert-torch conversion failed: {_first_line(exc)}",
                           hint="set EDGEIFY_DEBUG=1 for the traceback; an ONNX export of the model takes the "
                                "onnx2tf route")


def _unlowered_ops(module: Any, args: tuple[Any, ...]) -> list[str]:
    """aten ops in the decomposed program for which litert-torch has no lowering (a diagnosis, best effort)."""
    try:
        import torch
        from litert_torch.backend import lowerings

        ep = torch.export.export(module, args).run_decompositions()
        return sorted({str(n.target) for n in ep.graph.nodes if n.op == "call_function"
                       and hasattr(n.target, "_schema") and lowerings.lookup(n.target) is None})
    except Exception:
        return []


def select_tf_ops(path: Path) -> list[str]:
    """The Select TensorFlow (Flex) ops of a ``.tflite`` (custom ops named ``Flex*``), e.g. ``['Erf']``."""

    return sorted({name[len("CUSTOM:Flex"):] for name, _ in model_ops(read_model(path))
                   if name.startswith("CUSTOM:Flex")})


def _flex_error(ops: list[str], ctx: Any) -> ConversionError:
    torch_route = ctx.source.kind in ("exported-program", "module-factory")
    return ConversionError(
        f"onnx2tf's TFLite model needs the Select TensorFlow (Flex) op(s) {', '.join(ops)}, which LiteRT cannot "
        "load, and no TFLite builtin replaces them",
        hint=("build from the PyTorch source instead (model.pt2 or module.py:factory: the litert-torch route "
              "lowers transformer ops such as GELU and LayerNorm to builtins)"
              + ("" if torch_route else ", or replace the op(s) in the ONNX model")))


_NOT_IMPLEMENTED = re.compile(r"(?P<op>[A-Za-z0-9_]+) OP is not yet implemented")


def _onnx2tf_error(text: str, model: Path, code: int) -> ConversionError:
    keep("onnx2tf", _strip_ansi(text))  # the whole story (tail) in this run's log; the message has its end
    ops = sorted(set(_NOT_IMPLEMENTED.findall(_strip_ansi(text))))
    if not ops:
        ops = _ops_without_converter(model)
    if ops:
        return ConversionError(f"onnx2tf cannot convert the ONNX op(s) {', '.join(ops)}: no onnx2tf converter",
                               hint="replace the op in the model (or give edgeify the PyTorch model, which takes "
                                    "the litert-torch route)")
    return ConversionError(f"onnx2tf failed (exit {code}); its log ends with:\n{_tail(text)}",
                           hint="set EDGEIFY_DEBUG=1 for details; a PyTorch source takes the litert-torch route")


def _ops_without_converter(model: Path) -> list[str]:
    import importlib.util

    try:
        import onnx

        graph = onnx.load(str(model), load_external_data=False).graph
    except Exception:
        return []
    missing = set()
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            missing.add(f"{node.domain}.{node.op_type}")
        elif importlib.util.find_spec(f"onnx2tf.ops.{node.op_type}") is None:
            missing.add(node.op_type)
    return sorted(missing)


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


_DUMP_CHARS = set("0123456789.,-+eE[]() \t")


def _is_dump(line: str) -> bool:
    """A line of printed tensor values (``[[ 0.12 -1.3 ...``, ``array([...``): no information for a user."""
    body = line.strip().removeprefix("array(")
    return len(body) > 8 and sum(c in _DUMP_CHARS for c in body) / len(body) > 0.85


def _tail(text: str, lines: int = 15, width: int = 300) -> str:
    """The converter's last meaningful lines: noise, tensor dumps and blank lines dropped, long lines cut."""

    kept = [ln if len(ln) <= width else ln[:width] + " …" for ln in strip_noise(_strip_ansi(text)).splitlines()
            if ln.strip() and not _is_dump(ln)]
    return "\n".join(kept[-lines:])
