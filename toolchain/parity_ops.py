"""Where the numbers go wrong, per op: compare the intermediate tensors of the source ONNX and the built model.

Both models run on the same inputs with every intermediate tensor exposed: the source ONNX in ONNX Runtime (all
node outputs added as graph outputs, graph optimizations off so names survive), the built model in its engine,
through the engine adapter's ``dump_intermediates`` hook (``edgeify_runtime.engines.base.EngineAdapter``; e.g.
ONNX: the same; OpenVINO IR: ``Model.add_outputs`` on the ports that carry the ONNX tensor names; TFLite:
``experimental_preserve_all_tensors`` and the tensor names the converter kept). Tensors are matched by name
(NHWC/NCHW transposes are undone when the shapes say so); ops are reported in the source's topological order,
so the first divergent op is where the error enters.

Verdict: inf/NaN in the built tensor where the source is finite, in an fp16 build, is an fp16 overflow; a large
error in an int8 build is int8 range/resolution; a large error in an fp32 build is the conversion itself.

Source modules: each source node's PyTorch module (``features.3`` / ``nn.Conv2d``) comes from the bundle's
``facts.source_modules`` (the export step's record), else from the reference ONNX's own node metadata or scope
names (``steps._source_modules``); an ONNX source without either is named by its nodes. Modules are ranked by the
error they add: an op's relative error minus the largest relative error of its inputs (what entered it), summed
per module, so a module downstream of the damage is not blamed for error it only passed on.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgeify_runtime.engines import adapter_class, create_adapter
from edgeify_runtime.manifest import Manifest
from edgeify_runtime.profile.modules import SourceMap, SourceModule

from .cache import StepCache
from .checks import random_dataset
from .parity_match import first_unmatched, match_by_value
from .paths import cache_dir
from .pipeline import resolve, step_class
from .steps._source_modules import FUSED_ACTIVATIONS, FUSES_ACTIVATION, node_modules

#: relative error (max |built - source| / max |source|) above which an op's output counts as divergent
REL_LIMIT = {"fp32": 1e-3, "fp16": 1e-2, "bf16": 5e-2}
REL_LIMIT_INT8 = 0.1
FP16_MAX = 65504.0


@dataclass(frozen=True)
class OpDivergence:
    name: str  # the source node
    type: str
    tensor: str
    max_abs: float | None
    rel: float | None
    source_max_abs: float
    nonfinite: int  # built values that are inf/NaN where the source is finite
    cause: str
    module: str | None = None  # the source module (PyTorch path; "" the model's own forward) the op came from
    module_type: str | None = None
    #: relative error this op adds over the largest relative error of its inputs
    added: float | None = None

    @property
    def where(self) -> str:
        """``node_Conv_38 (Conv) in features.0 (nn.Conv2d)``: the op in the user's own names."""
        at = "" if self.module is None else f" in {self.module or '(root)'}" + (
            f" ({self.module_type})" if self.module_type else "")
        return f"{self.name} ({self.type}){at}"


@dataclass(frozen=True)
class OpParity:
    matched: int
    source_tensors: int
    divergent: tuple[OpDivergence, ...] = ()
    verdict: str | None = None
    note: str | None = None
    checked: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    #: source modules ranked by the error they add: {module, type, ops, error_added, share, max_rel, first_op}
    modules: tuple[dict[str, Any], ...] = ()
    #: where the module names come from ("" when the source names none: ``modules`` then ranks nodes)
    modules_from: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("checked")
        out["first_divergent"] = self.first.where if self.first is not None else None
        return out

    @property
    def first(self) -> OpDivergence | None:
        """The first op (in the source's order) whose output diverges on its own (not downstream of another)."""
        return next((d for d in self.divergent if not d.cause.startswith("downstream")), None)

    def table(self, limit: int = 5) -> str:
        if not self.divergent:
            head = f"per-op parity: {self.matched} of {self.source_tensors} source tensors matched, none diverges"
            return "\n".join([head + (f" ({self.note})" if self.note else ""), *self._module_lines(limit)])
        lines = [f"first diverging op: {self.first.where}" if self.first is not None else "",
                 f"first divergent ops (of {self.matched} tensors matched by name with the source):",
                 f"  {'op':<28} {'module':<22} {'type':<12} {'max abs err':>11} {'rel':>8} {'inf/nan':>7}  cause"]
        for d in self.divergent[:limit]:
            mx = "-" if d.max_abs is None else f"{d.max_abs:.4g}"
            rel = "-" if d.rel is None else f"{d.rel:.3g}"
            mod = "-" if d.module is None else (d.module or "(root)")
            lines.append(f"  {_cut(d.name, 28):<28} {_cut(mod, 22):<22} {d.type[:12]:<12} {mx:>11} {rel:>8} "
                         f"{d.nonfinite:>7}  {d.cause}")
        if self.verdict:
            lines.append(f"looks like: {self.verdict}")
        return "\n".join([ln for ln in lines if ln] + self._module_lines(limit))

    def _module_lines(self, limit: int) -> list[str]:
        rows = [m for m in self.modules if (m.get("error_added") or 0) > 0][:limit]
        if not rows:
            return []
        what = "source modules" if self.modules_from else "source nodes (the source records no modules)"
        lines = [f"{what} by the error they add (relative error over their inputs', summed):",
                 f"  {'module' if self.modules_from else 'node':<36} {'type':<16} {'ops':>4} {'added':>9} "
                 f"{'share':>6} {'max rel':>8}"]
        for m in rows:
            name = m["module"] or "(root)"
            lines.append(f"  {_cut(name, 36):<36} {_cut(m.get('type') or '', 16):<16} {m['ops']:>4} "
                         f"{m['error_added']:>9.3g} {m['share']:>6.1%} {m['max_rel']:>8.3g}")
        return lines


def _cut(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n // 2 - 1] + "…" + s[-(n - n // 2):]


# -- intermediate tensors ------------------------------------------------------------------------------------
def _onnx_all_outputs(path: Path, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[Any]]:
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    have = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for out in node.output:
            if out and out not in have:
                model.graph.output.append(onnx.ValueInfoProto(name=out))
                have.add(out)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    values = sess.run(names, {k: v for k, v in feeds.items() if k in wanted})
    return dict(zip(names, values, strict=True)), list(model.graph.node)


def _built_outputs(built: Path, engine: str, precision: str, feeds: dict[str, np.ndarray],
                   names: set[str]) -> dict[str, np.ndarray] | None:
    """The built artifact's intermediate tensors from its engine adapter's dump hook (None: it has none)."""

    if not adapter_class(engine).can_dump:
        return None
    with warnings.catch_warnings():  # LiteRT warns that preserving every tensor is for debugging: it is
        warnings.simplefilter("ignore")
        return create_adapter(engine).dump_intermediates(built, feeds, frozenset(names), precision)


def _norm(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def _align(ref: np.ndarray, got: np.ndarray) -> np.ndarray | None:
    if got.shape == ref.shape:
        return got
    if got.ndim == 4 and ref.ndim == 4 and got.transpose(0, 3, 1, 2).shape == ref.shape:
        return got.transpose(0, 3, 1, 2)
    if got.size == ref.size:
        return got.reshape(ref.shape)
    return None


# -- comparison ----------------------------------------------------------------------------------------------
def _cause(precision: str, nonfinite: int, source_max: float, rel: float | None) -> str:
    if nonfinite and precision == "fp16":
        return "fp16 overflow: inf/NaN" + (f" (source reaches {source_max:.3g} > 65504)" if source_max > FP16_MAX
                                           else "")
    if nonfinite:
        return "inf/NaN where the source is finite"
    if precision.startswith("int8") or precision == "int16x8":
        return "int8 range/resolution"
    if precision == "fp16":
        return "fp16 rounding" if source_max <= FP16_MAX else "fp16 range"
    return "conversion: fp32 values differ"


def _modules_of(nodes: list[Any], source_map: SourceMap | None) -> tuple[dict[str, SourceModule], str]:
    """Source node name -> module: the bundle's record, else the reference ONNX's own metadata."""
    if source_map:
        got = {n.name: m for n in nodes if (m := source_map.get(n.name)) is not None}
        if got:
            return got, "the bundle's facts.source_modules"
    got = node_modules(nodes)
    return got, ("the source ONNX's node metadata" if got else "")


def _rank_modules(checked: list[dict[str, Any]], by_module: bool) -> tuple[dict[str, Any], ...]:
    """Modules (or, without a module map, nodes) ranked by the relative error their ops add."""
    groups: dict[str, dict[str, Any]] = {}
    for row in checked:
        key = row["module"] if by_module else row["name"]
        if by_module and key is None:
            continue
        g = groups.setdefault(key, {"module": key, "type": row["module_type"] if by_module else row["type"],
                                    "ops": 0, "error_added": 0.0, "max_rel": 0.0, "first_op": row["name"]})
        g["ops"] += 1
        g["error_added"] += row["added"] or 0.0
        g["max_rel"] = max(g["max_rel"], row["rel"] or 0.0)
    total = sum(g["error_added"] for g in groups.values())
    for g in groups.values():
        g["share"] = round(g["error_added"] / total, 4) if total > 0 else 0.0
        g["error_added"] = float(f"{g['error_added']:.6g}")
        g["max_rel"] = float(f"{g['max_rel']:.6g}")
    return tuple(sorted(groups.values(), key=lambda g: (-g["error_added"], -g["max_rel"])))


def compare_ops(source_onnx: Path, built: Path, engine: str, precision: str,
                feeds: dict[str, np.ndarray], source_map: SourceMap | None = None) -> OpParity:
    """Per-op comparison of ``built`` (the artifact file) against ``source_onnx`` on ``feeds`` (float inputs);
    ``source_map``: the bundle's record of source modules (else the source ONNX's own metadata is read)."""
    ref, nodes = _onnx_all_outputs(source_onnx, feeds)
    modules, modules_from = _modules_of(nodes, source_map)
    names = set(ref) - set(feeds)
    got = _built_outputs(built, engine, precision, feeds, names)
    if got is None:
        return OpParity(0, len(names), note=f"no per-op comparison for engine {engine} (its adapter has no "
                                             "intermediate-tensor dump)", modules_from=modules_from)
    limit = REL_LIMIT_INT8 if precision.startswith("int8") or precision == "int16x8" else REL_LIMIT.get(precision, 1e-3)
    divergent: list[OpDivergence] = []
    checked: list[dict[str, Any]] = []
    matched = 0
    alias: dict[str, str] = {}
    by_value = not any(t in got or _norm(t) in got for t in names)
    if by_value and got:  # the converter renamed every tensor (onnx2tf): match them by value
        order = [t for n in nodes for t in n.output if t in names]
        alias, best, cut = match_by_value(ref, got, order, min(limit, 1e-2))
    tainted: set[str] = set()  # tensors computed from a divergent op's output
    rel_of: dict[str, float] = {}  # tensor -> relative error (what enters the ops that read it)
    producer = {t: n for n in nodes for t in n.output}
    observed: set[str] = set()  # tensors the built model kept and were compared
    for node in nodes:
        entering = max((rel_of.get(i, 0.0) for i in node.input), default=0.0)
        mod, op_type = modules.get(node.name), node.op_type
        prod = producer.get(node.input[0]) if node.input else None
        if (node.op_type in FUSED_ACTIVATIONS and prod is not None and prod.op_type in FUSES_ACTIVATION
                and node.input[0] not in observed):  # the engine fused conv+relu: the error entered in the conv
            mod, op_type = modules.get(prod.name, mod), f"{prod.op_type}+{node.op_type}"
            entering = max((rel_of.get(i, 0.0) for i in prod.input), default=0.0)
        rel_of.update((t, entering) for t in node.output)  # an output the engine fused away passes error on
        if any(i in tainted for i in node.input):
            tainted.update(node.output)
        for t in node.output:
            key = alias.get(t) or (t if t in got else _norm(t))
            if t not in ref or key not in got:
                continue
            r = np.asarray(ref[t])
            if r.dtype.kind != "f" or r.size == 0:
                continue
            g = _align(r, np.asarray(got[key]).astype(np.float64))
            if g is None:
                continue
            matched += 1
            r64 = r.astype(np.float64)
            finite = np.isfinite(r64)
            nonfinite = int(np.sum(finite & ~np.isfinite(g)))
            src_max = float(np.max(np.abs(r64[finite]))) if finite.any() else 0.0
            ok = finite & np.isfinite(g)
            mx = float(np.max(np.abs(g[ok] - r64[ok]))) if ok.any() else None
            rel = mx / src_max if mx is not None and src_max > 0 else (None if mx is None else 0.0)
            level = float("inf") if nonfinite else (rel or 0.0)
            rel_of[t] = level
            observed.add(t)
            added = max(0.0, level - entering) if np.isfinite(level) else (0.0 if entering == level else 1.0)
            row = {"name": node.name or t, "type": op_type, "tensor": t, "max_abs": mx, "rel": rel,
                   "source_max_abs": src_max, "nonfinite": nonfinite,
                   "module": None if mod is None else mod.path, "module_type": None if mod is None else
                   (mod.type or None), "added": round(added, 9)}
            checked.append(row)
            if nonfinite or (rel is not None and rel > limit):
                cause = ("downstream of " + next(d.name for d in divergent if d.cause[:10] != "downstream")
                         if t in tainted and divergent else _cause(precision, nonfinite, src_max, rel))
                divergent.append(OpDivergence(**row, cause=cause))
                tainted.update(node.output)
    note = None if matched else "the converter kept no tensor names that match the source's"
    if by_value and got:
        floats = {t for t in names if np.asarray(ref[t]).dtype.kind == "f"}
        note = (f"the converter kept no source tensor names: {matched} tensors matched by value"
                + (" (comparison budget reached)" if cut else ""))
        stop = first_unmatched(nodes, set(alias), floats, set(feeds)) if matched else None
        if stop is not None and not divergent:
            out = next(o for o in stop.output if o in floats)
            mod = modules.get(stop.name)
            d = best.get(out)
            divergent.append(OpDivergence(
                stop.name or out, stop.op_type, out, None, None if d is None else float(f"{d:.6g}"),
                float(np.max(np.abs(ref[out]))) if ref[out].size else 0.0, 0,
                "conversion: no built tensor reproduces this output (nor anything computed from it)",
                None if mod is None else mod.path, None if mod is None else (mod.type or None)))
    verdict = None
    if divergent:
        first = divergent[0]
        kind = "conversion" if first.cause.startswith("conversion") else "precision"
        verdict = f"{kind} ({first.cause}) starting at {first.where}"
    return OpParity(matched, len(names), tuple(divergent), verdict, note, tuple(checked),
                    _rank_modules(checked, bool(modules)), modules_from)


def explain_bundle(source_onnx: Path, bundle: Path, feeds: dict[str, np.ndarray]) -> OpParity:
    m = Manifest.read(bundle)
    return compare_ops(source_onnx, bundle / m.engine.artifact, m.engine.name, m.precision, feeds,
                       SourceMap.from_manifest(m))


_HINTS = {
    "conversion": "the converter changed the computation at that op: try another --engine (or converter), and "
                  "report the op",
    "fp16": "that op leaves the fp16 range: build fp32 (or int8 with calibration), or keep the op in fp32",
    "int8": "that op's int8 range does not fit: more representative --calib data, or --precision int8-mixed to "
            "keep it in float",
}


def reference_onnx(ctx: Any, work: Path) -> Path | None:
    """The source as ONNX: the source itself, else the pipeline's export step output (from the step cache)."""
    if ctx.source.kind == "onnx":
        return Path(ctx.source.path)

    pipeline = resolve(ctx.target, ctx.engine_name, ctx.precision)
    first = next(s for s in pipeline.steps if s.input is None)
    impl = step_class(first.kind)(first.config)
    art = StepCache(cache_dir()).get(impl.cache_key(ctx, ctx.source.digest))
    if art is None:
        work.mkdir(parents=True, exist_ok=True)
        art = impl.run(ctx, None, work)
    return art.path if art.format == "onnx" else None


def explain_failure(err: Exception, ctx: Any, staged: Path, inputs: list[Any]) -> None:
    """Add the per-op table to a ParityError from the check step (never replaces the error)."""
    import dataclasses
    import tempfile

    try:
        with tempfile.TemporaryDirectory(prefix="edgeify-parity-ops-") as tmp:
            ref = reference_onnx(ctx, Path(tmp) / "export")
            if ref is None:
                extra = "per-op parity: the pipeline has no ONNX of the source to compare with"
            else:
                real = ctx.calib if ctx.calib is not None else ctx.eval  # int8 ranges: judge on real data
                data = real.head(4) if real is not None else random_dataset(inputs, 1, 0)
                feeds = next(iter(data.batches()))
                result = explain_bundle(ref, staged, feeds)
                extra = result.table()
                if getattr(err, "report", None) is not None:  # a ValidationReport (frozen): a copy with the table
                    err.report = dataclasses.replace(err.report, per_op=result.to_dict())  # type: ignore[attr-defined]
                if result.divergent:
                    cause = next((d.cause for d in result.divergent if d.cause[:10] != "downstream"), "")
                    key = "conversion" if cause.startswith("conversion") else (
                        "fp16" if "fp16" in cause else "int8" if "int8" in cause else "")
                    if key:
                        before = getattr(err, "hint", "")
                        err.hint = _HINTS[key] + (f"; else: {before}" if before else "")  # type: ignore[attr-defined]
    except Exception as exc:  # the parity error stands on its own
        extra = f"per-op parity could not run: {type(exc).__name__}: {exc}"
    err.args = (f"{err.args[0]}\n{extra}", *err.args[1:])


__all__ = ["OpDivergence", "OpParity", "compare_ops", "explain_bundle", "explain_failure", "reference_onnx"]
