"""The PyTorch module behind each ONNX node, read from what the exporter wrote, kept as the ``source_modules`` facts.

Where the module path comes from, in order:

* the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, torch >= 2.6) writes each node's module scope
  into ``metadata_props``: ``pkg.torch.onnx.name_scopes`` (``['', 'features', 'features.1', 'op']``),
  ``pkg.torch.onnx.class_hierarchy`` (the classes along that scope) and ``pkg.torch.onnx.stack_trace``. The
  innermost module is the node's. A node the exporter's optimizer fused (``FuseBatchNormIntoConv``) carries the
  BatchNorm's scope: its first input's FX node (``pkg.torch.onnx.fx_node``) names the convolution, whose module
  the ExportedProgram's ``nn_module_stack`` gives (when the exporter handed it over);
* the TorchScript exporter names nodes by scope (``/layer1/layer1.0/conv1/Conv``): the path is rebuilt from the
  name (the class is not recorded);
* anything else (an ONNX file without either): no map; a node's own name is then all the source says.

The record is small: module entries once, and every node name and node output tensor name pointing at one
(engines name their ops after either). ``edgeify_runtime.profile.modules.SourceMap`` reads it on the device.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from edgeify_runtime.profile.modules import NAMESPACE, SourceMap, SourceModule, short_type
from pydantic import Field

from .facts import StepFacts

_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
_FX_ARG = re.compile(r"args = \(%([A-Za-z0-9_]+)")
#: an activation engines fuse into the op before it, and the ops it is fused into: the fused op is named after the
#: activation's output tensor (ONNX Runtime ``relu_1_nchwc``), so that tensor points at the producer's module
FUSED_ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh"}
FUSES_ACTIVATION = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


class SourceModulesFacts(StepFacts):
    """Which source module each ONNX node (and each tensor a node writes) came from."""

    namespace: ClassVar[str] = NAMESPACE
    origin: str = Field(description="where the paths were read: dynamo node metadata or TorchScript scope names")
    modules: list[list[str]] = Field(description="[path, class, innermost user-code line] per module")
    names: dict[str, int] = Field(description="ONNX node or tensor name -> index into modules")

    def source_map(self) -> SourceMap:
        return SourceMap(self.to_dict())


def _user_line(trace: str) -> str:
    """The innermost frame of the stack trace that is not torch's own code (``model.py:39``)."""
    best = ""
    for path, line in _FRAME.findall(trace or ""):
        norm = path.replace("\\", "/")
        if "/torch/" in norm or "/site-packages/" in norm or "/dist-packages/" in norm:
            continue
        best = f"{norm.rsplit('/', 1)[-1]}:{line}"
    return best


def _literal_list(text: str | None) -> list[str] | None:
    if not text:
        return None
    try:
        got = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return [str(x) for x in got] if isinstance(got, list) else None


def fx_modules(exported_program: Any) -> dict[str, tuple[str, str]]:
    """FX node name -> (module path, class) from an ExportedProgram's ``nn_module_stack`` (empty if none)."""
    out: dict[str, tuple[str, str]] = {}
    graph = getattr(exported_program, "graph", None)
    for node in getattr(graph, "nodes", ()) or ():
        stack = (getattr(node, "meta", None) or {}).get("nn_module_stack") or {}
        if stack:
            path, cls = list(stack.values())[-1]
            out[str(node.name)] = (str(path), str(cls) if isinstance(cls, str) else getattr(cls, "__name__", ""))
    return out


def _from_metadata(node: Any, fx: Mapping[str, tuple[str, str]]) -> SourceModule | None:
    meta = {p.key: p.value for p in node.metadata_props}
    scopes = _literal_list(meta.get("pkg.torch.onnx.name_scopes"))
    if not scopes:
        return None
    classes = _literal_list(meta.get("pkg.torch.onnx.class_hierarchy")) or []
    at = _user_line(meta.get("pkg.torch.onnx.stack_trace", ""))
    rule = meta.get("pkg.onnxscript.rewriter.rule_name", "")
    if "FuseBatchNorm" in rule:  # the BatchNorm's scope on the fused conv: name the conv, as the user wrote it
        arg = _FX_ARG.search(meta.get("pkg.torch.onnx.fx_node", ""))
        if arg and arg.group(1) in fx:
            path, cls = fx[arg.group(1)]
            return SourceModule(path, short_type(cls), at)
    # the last scope is the op itself (its FX name), the one before it the innermost module
    path = scopes[-2] if len(scopes) >= 2 else ""
    cls = classes[-2] if len(classes) >= 2 else (classes[0] if classes else "")
    return SourceModule(path, short_type(cls), at)


def _from_scope_name(name: str) -> SourceModule | None:
    """``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1`` (TorchScript exporter names)."""
    if not name.startswith("/") or name.count("/") < 2:
        return None
    path = ""
    for part in name.strip("/").split("/")[:-1]:
        path = part if (not path or part.startswith(path + ".")) else f"{path}.{part}"
    return SourceModule(path, "")


def source_modules(model: Any, fx: Mapping[str, tuple[str, str]] | None = None) -> SourceModulesFacts | None:
    """The record for an ONNX ``ModelProto`` or its nodes (None when its nodes say nothing about modules)."""
    fx = fx or {}
    nodes = model.graph.node if hasattr(model, "graph") else model
    index: dict[tuple[str, str, str], int] = {}
    names: dict[str, int] = {}
    origin = ""
    for node in nodes:
        mod = _from_metadata(node, fx)
        how = "dynamo exporter node metadata (name_scopes)"
        if mod is None:
            mod, how = _from_scope_name(node.name), "TorchScript exporter scope names"
        if mod is None:
            continue
        origin = origin or how
        i = index.setdefault((mod.path, mod.type, mod.at), len(index))
        if node.name:
            names[node.name] = i
        for out in node.output:
            if out:
                names.setdefault(out, i)
    if not names:
        return None
    producer = {o: n for n in nodes for o in n.output}
    for node in nodes:
        src = producer.get(node.input[0]) if node.op_type in FUSED_ACTIVATIONS and node.input else None
        if src is not None and src.op_type in FUSES_ACTIVATION and src.name in names and node.output:
            names[node.output[0]] = names[src.name]
    modules = [list(k) for k in sorted(index, key=index.__getitem__)]
    return SourceModulesFacts(origin=origin, modules=modules, names=names)


def node_modules(nodes: Any) -> dict[str, SourceModule]:
    """ONNX node name -> source module, for a model's nodes on the host (their own metadata or scope names)."""
    nodes = list(nodes)
    rec = source_modules(nodes)
    if rec is None:
        return {}
    return {n.name: SourceModule(*rec.modules[rec.names[n.name]]) for n in nodes if n.name in rec.names}


__all__ = ["FUSED_ACTIVATIONS", "FUSES_ACTIVATION", "SourceModulesFacts", "fx_modules", "node_modules", "short_type",
           "source_modules"]
