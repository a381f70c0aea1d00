"""Source models: ONNX files, PyTorch ExportedPrograms (.pt2), TorchScript (.pt) and ``module.py:factory``.

A ``SourceModel`` knows its kind and content hash, loads lazily, and runs as the *reference* the built model is
checked against (torch eager for PyTorch sources, ONNX Runtime fp32 for ONNX sources).

Trusted input only: PyTorch sources can run code on the build host. ``module.py:factory`` imports and runs your
Python file; a TorchScript archive runs its own code when the reference runs; ``torch.export.load`` may unpickle
parts of a ``.pt2``. edgeify loads a ``.pt2`` with every unpickling step forced to ``weights_only`` (what
``torch.export.save`` writes loads that way) and refuses an archive that needs full unpickling unless
``trust_source=True`` (``--trust-source``). A pickled ``nn.Module`` or a state_dict ``.pt`` is never unpickled.
ONNX files are data (protobuf), but custom-op libraries are never loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgeify_runtime.manifest import TensorSpec, sha256_file

from ._unpickle_guard import NeedsUnpickling, weights_only_loads
from .errors import InputSignatureError, ModelLoadError
from .onnx_utils import signature

ONNX_SUFFIXES = {".onnx"}
PT2_SUFFIXES = {".pt2"}
TORCHSCRIPT_SUFFIXES = {".pt", ".ts", ".torchscript", ".jit"}


def parse_input_shapes(values: list[str] | None) -> dict[str, tuple[int, ...]] | list[tuple[int, ...]] | None:
    """``["1,3,224,224"]`` (positional) or ``["x:1,3,224,224", "mask:1,77"]`` (by input name)."""
    if not values:
        return None
    named: dict[str, tuple[int, ...]] = {}
    positional: list[tuple[int, ...]] = []
    for v in values:
        name, sep, dims = v.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
        except ValueError:
            raise InputSignatureError(f"--input-shape {v!r}: dims must be integers",
                                      hint="e.g. --input-shape 1,3,224,224 or --input-shape x:1,3,224,224") from None
        if not shape or any(d <= 0 for d in shape):
            raise InputSignatureError(f"--input-shape {v!r}: dims must be positive integers",
                                      hint="e.g. --input-shape 1,3,224,224")
        if sep:
            named[name] = shape
        else:
            positional.append(shape)
    if named and positional:
        raise InputSignatureError("--input-shape: give all shapes by name or all positionally, not a mix",
                                  hint="e.g. --input-shape x:1,3,8,8 --input-shape mask:1,77")
    return named or positional


@dataclass
class SourceModel:
    spec: str
    path: Path
    kind: str  # onnx | exported-program | torchscript | module-factory
    sha256: str
    input_shapes: dict[str, tuple[int, ...]] | list[tuple[int, ...]] | None = None
    factory: str | None = None
    trusted: bool = False  # --trust-source: a .pt2 may be fully unpickled
    _obj: Any = field(default=None, repr=False)
    _input_names: list[str] | None = field(default=None, repr=False)

    @property
    def is_torch(self) -> bool:
        return self.kind != "onnx"

    @property
    def digest(self) -> str:
        extra = f"{self.kind}|{self.factory}|{self.input_shapes}"
        return hashlib.sha256(f"{self.sha256}|{extra}".encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"file": self.path.name, "kind": self.kind, "sha256": self.sha256, "factory": self.factory,
                "input_shapes": self.input_shapes}

    # -- loading ------------------------------------------------------------------------------------
    def load(self) -> Any:
        if self._obj is None:
            self._obj = {"onnx": self._load_onnx, "exported-program": self._load_pt2,
                         "torchscript": self._load_torchscript, "module-factory": self._load_factory}[self.kind]()
        return self._obj

    def _load_onnx(self) -> Any:
        import onnx

        try:
            model = onnx.load(str(self.path))
            onnx.checker.check_model(model)
        except Exception as exc:
            raise ModelLoadError(f"{self.path}: not a valid ONNX model ({type(exc).__name__}: {exc})",
                                 hint="re-export the model; `python -c \"import onnx; onnx.checker.check_model("
                                      "'model.onnx')\"` shows the problem") from None
        return model

    def _load_pt2(self) -> Any:
        import torch

        try:
            if self.trusted:
                return torch.export.load(str(self.path))
            with weights_only_loads() as guard:
                ep = torch.export.load(str(self.path))
            guard.raise_if_refused()
            return ep
        except NeedsUnpickling as exc:
            raise ModelLoadError(
                f"{self.path}: this .pt2 needs full unpickling to load ({exc}), which can run any code; refused",
                hint="re-save it with torch.export.save(torch.export.export(model, args), 'model.pt2') (plain "
                     "tensors load without unpickling), or pass --trust-source if you trust where it came from"
            ) from None
        except Exception as exc:
            raise ModelLoadError(f"{self.path}: cannot load the ExportedProgram ({type(exc).__name__}: {exc})",
                                 hint="save it with torch.export.save(torch.export.export(model, args), 'model.pt2') "
                                      "using the same torch version") from None

    def _load_torchscript(self) -> Any:
        import torch

        try:
            return torch.jit.load(str(self.path), map_location="cpu").eval()
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            if _is_state_dict(self.path):
                raise ModelLoadError(
                    f"{self.path}: a state_dict (weights only): it has no architecture to convert",
                    hint=f"write the model class in a file and pass module.py:factory, e.g. a function that "
                         f"builds the model and calls load_state_dict(torch.load('{self.path.name}')); or save "
                         "torch.export.save(torch.export.export(model, args), 'model.pt2')") from None
            raise ModelLoadError(
                f"{self.path}: not a TorchScript archive ({type(exc).__name__}: {first})",
                hint="pickled nn.Modules (torch.save(model)) are refused: unpickling runs code; save with "
                     "torch.jit.save(torch.jit.script(model)) or torch.export.save(...)") from None

    def _load_factory(self) -> Any:
        import torch

        name = f"_edgeify_user_model_{hashlib.sha1(str(self.path).encode()).hexdigest()[:8]}"
        try:
            spec = importlib.util.spec_from_file_location(name, self.path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        except Exception as exc:
            raise ModelLoadError(f"{self.path}: importing the module failed ({type(exc).__name__}: {exc})") from None
        fn = getattr(module, self.factory or "", None)
        if fn is None or not callable(fn):
            found = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
            raise ModelLoadError(f"{self.path}: no callable {self.factory!r}",
                                 hint=f"callables in that file: {', '.join(found[:10])}")
        try:
            model = fn()
        except Exception as exc:
            raise ModelLoadError(f"{self.spec}: the factory raised {type(exc).__name__}: {exc}") from None
        if not isinstance(model, torch.nn.Module):
            raise ModelLoadError(f"{self.spec}: the factory returned {type(model).__name__}, not a torch.nn.Module")
        return model.eval()

    # -- signature ----------------------------------------------------------------------------------
    def input_names(self) -> list[str]:
        if self._input_names is None:
            self._input_names = self._compute_input_names()
        return self._input_names

    def _compute_input_names(self) -> list[str]:
        obj = self.load()
        if self.kind == "onnx":
            init = {i.name for i in obj.graph.initializer}
            return [i.name for i in obj.graph.input if i.name not in init]
        if self.kind == "exported-program":
            from torch.export.graph_signature import InputKind

            return [s.arg.name for s in obj.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
        if self.kind == "torchscript":
            return [i.debugName().split(".")[0] for i in list(obj.graph.inputs())[1:]]
        params = [p for p in inspect.signature(obj.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
        return [p.name for p in params]

    def example_shapes(self, batch: int = 2) -> list[tuple[int, ...]]:
        """Concrete shapes to trace/export with (dynamic batch dims get ``batch``)."""
        names = self.input_names()
        if self.input_shapes:
            if isinstance(self.input_shapes, dict):
                missing = [n for n in names if n not in self.input_shapes]
                unknown = [n for n in self.input_shapes if n not in names]
                if missing or unknown:
                    raise InputSignatureError(f"--input-shape names {sorted(self.input_shapes)} do not match the "
                                              f"model inputs {names}")
                return [self.input_shapes[n] for n in names]
            if len(self.input_shapes) != len(names):
                raise InputSignatureError(f"--input-shape gives {len(self.input_shapes)} shape(s); the model has "
                                          f"{len(names)} input(s): {names}")
            return list(self.input_shapes)
        if self.kind == "exported-program":
            ep = self.load()
            shapes = []
            placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
            for name in names:
                val = placeholders[name].meta.get("val")
                shapes.append(tuple(d if isinstance(d, int) else batch for d in val.shape))
            return shapes
        raise InputSignatureError(f"{self.spec}: the input shape is unknown for a {self.kind} model",
                                  hint="pass --input-shape, e.g. --input-shape 1,3,224,224")

    def pre_signature(self) -> tuple[list[TensorSpec], list[TensorSpec] | None]:
        """Inputs (and outputs where known) before any step runs: the ONNX graph, the ``.pt2`` placeholders,
        or ``--input-shape`` for TorchScript/factory sources (whose export makes axis 0 dynamic)."""
        if self.kind == "onnx":
            return signature(self.load(), torch_source=False)
        if self.kind == "exported-program":
            ep = self.load()
            nodes = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
            inputs = [_spec_of(name, nodes[name].meta.get("val")) for name in self.input_names()]
            out_node = next(n for n in ep.graph.nodes if n.op == "output")
            vals = [a.meta.get("val") if hasattr(a, "meta") else None for a in _flatten(list(out_node.args[0]))]
            outputs = [_spec_of(f"output_{i}", v) for i, v in enumerate(vals)] if all(
                v is not None for v in vals) else None
            return inputs, outputs
        shapes = self.example_shapes()
        return [TensorSpec(n, ("batch", *s[1:]) if s else s, "float32", "NCHW" if len(s) == 4 else None)
                for n, s in zip(self.input_names(), shapes, strict=True)], None

    def input_shape_fixes(self, inputs: list[TensorSpec]) -> list[dict[str, Any]]:
        """Where ``--input-shape`` applies to an ONNX or ``.pt2`` source: the dynamic dims it fixes. Refuses
        (InputSignatureError, exit 5) an unknown input name, a wrong rank, or a dim that contradicts a fixed one."""
        if not self.input_shapes or self.kind not in ("onnx", "exported-program"):
            return []
        names = [t.name for t in inputs]
        if isinstance(self.input_shapes, dict):
            unknown = [n for n in self.input_shapes if n not in names]
            if unknown:
                raise InputSignatureError(f"--input-shape names {unknown}, which the model does not have; its "
                                          f"inputs: {names}", hint=f"use one of: {', '.join(names)}")
            given = dict(self.input_shapes)
        else:
            if len(self.input_shapes) != len(names):
                raise InputSignatureError(f"--input-shape gives {len(self.input_shapes)} shape(s); the model has "
                                          f"{len(names)} input(s): {names}", hint="give one shape per input, or "
                                          "name them: --input-shape NAME:1,3,224,224")
            given = dict(zip(names, self.input_shapes, strict=True))
        fixes = []
        for t in inputs:
            if t.name not in given:
                continue
            want = given[t.name]
            if len(want) != len(t.shape):
                raise InputSignatureError(f"--input-shape {t.name}:{','.join(map(str, want))} has {len(want)} dims; "
                                          f"the model's input {t.name!r} is {list(t.shape)}",
                                          hint=f"give {len(t.shape)} dims")
            for axis, (have, new) in enumerate(zip(t.shape, want, strict=True)):
                if isinstance(have, int) and have != new:
                    raise InputSignatureError(
                        f"--input-shape {t.name}:{','.join(map(str, want))}: axis {axis} is fixed to {have} in the "
                        f"model ({list(t.shape)}); only its dynamic dims can be set",
                        hint=f"keep {have} on axis {axis}, or re-export the model with that axis dynamic")
                if not isinstance(have, int):
                    fixes.append({"input": t.name, "axis": axis, "dim": have, "value": new, "by": "--input-shape"})
        return fixes

    # -- reference execution ------------------------------------------------------------------------
    def reference(self) -> ReferenceRunner:
        return ReferenceRunner(self)


class ReferenceRunner:
    """Runs the source model itself: torch eager (fp32) or ONNX Runtime on the original ONNX."""

    def __init__(self, source: SourceModel) -> None:
        self.source = source
        self._session = None
        self._module = None

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.source.kind == "onnx":
            if self._session is None:
                import onnxruntime as ort

                opts = ort.SessionOptions()
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
                self._session = ort.InferenceSession(self.source.path.read_bytes(), opts,
                                                     providers=["CPUExecutionProvider"])
            return list(self._session.run(None, feeds))
        import torch

        if self._module is None:  # ExportedProgram.module() builds a new GraphModule: do it once
            model = self.source.load()
            self._module = model.module() if self.source.kind == "exported-program" else model
        model = self._module
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.source.input_names()]
        with torch.no_grad():
            out = model(*args)
        return [t.detach().cpu().numpy() for t in _flatten(out)]


def _spec_of(name: str, val: Any) -> TensorSpec:
    shape = tuple(int(d) if isinstance(d, int) or str(d).isdigit() else ("batch" if i == 0 else str(d))
                  for i, d in enumerate(getattr(val, "shape", ())))
    dtype = str(getattr(val, "dtype", "torch.float32")).replace("torch.", "")
    return TensorSpec(name, shape, dtype, "NCHW" if len(shape) == 4 else None)


def _is_state_dict(path: Path) -> bool:
    """True when ``path`` is a ``torch.save``'d dict of tensors (read with ``weights_only``: nothing runs)."""
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _flatten(out: Any) -> list[Any]:
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flatten(o)]
    if isinstance(out, dict):
        return [t for k in out for t in _flatten(out[k])]
    return [out]


def open_source(spec: str, input_shapes: list[str] | None = None, *, trust_source: bool = False) -> SourceModel:
    """Identify a model reference without loading it (loading happens in the first step that needs it).

    ``trust_source``: allow a ``.pt2`` that needs full unpickling (it can run code; trusted files only)."""
    path_str, factory = spec, None
    if ":" in spec and spec.rsplit(":", 1)[0].endswith(".py"):
        path_str, factory = spec.rsplit(":", 1)
    path = Path(path_str)
    if path.exists() and not path.is_dir() and not path.is_file():  # a FIFO, socket or device: never read it
        raise ModelLoadError(f"{path}: not a regular file (a FIFO, socket or device); a model is a file",
                             hint="pass the model file itself: model.onnx, model.pt2, model.pt or module.py:factory")
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}" + (" (it is a directory)" if path.is_dir() else ""),
                             hint="pass the model file: model.onnx, model.pt2, model.pt (TorchScript) or "
                                  "module.py:factory; paths are relative to the current directory")
    suffix = path.suffix.lower()
    if factory is not None or suffix == ".py":
        if not factory:
            raise ModelLoadError(f"{spec}: name the factory function, e.g. {path}:build_model")
        kind = "module-factory"
    elif suffix in ONNX_SUFFIXES:
        kind = "onnx"
    elif suffix in PT2_SUFFIXES:
        import zipfile

        if not zipfile.is_zipfile(path):  # before torch reads it (and logs its own traceback)
            raise ModelLoadError(f"{path}: not a .pt2 archive (a .pt2 is the zip file torch.export.save writes)",
                                 hint="save it with torch.export.save(torch.export.export(model, args), "
                                      "'model.pt2')")
        kind = "exported-program"
    elif suffix in TORCHSCRIPT_SUFFIXES:
        kind = "torchscript"
    else:
        raise ModelLoadError(f"{path}: unknown model kind {suffix!r}",
                             hint="give an .onnx, an ExportedProgram .pt2, a TorchScript .pt, or module.py:factory")
    return SourceModel(spec=spec, path=path, kind=kind, sha256=sha256_file(path),
                       input_shapes=parse_input_shapes(input_shapes), factory=factory, trusted=trust_source)
