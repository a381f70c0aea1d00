"""Parity and accuracy of a built bundle against its source model.

Reference and built model run on the same inputs; per output we check names, then shapes, then values against
the target's tolerance table, collect every mismatch, and raise one ``ParityError`` with a table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from edgeify_runtime.manifest import TensorSpec

from .data import Dataset
from .errors import AccuracyGateError, ParityError
from .steps.records import AccuracyReport, ClassDelta, OutputCheck, ValidationReport

if TYPE_CHECKING:
    from .targets.spec import Tolerance

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


@dataclass
class Mismatch:
    output: str
    inputs: str
    what: str
    value: str
    limit: str


def random_dataset(signature: list[TensorSpec], samples: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    fixed_batch = next((s.shape[0] for s in signature if s.shape and isinstance(s.shape[0], int)), None)
    batch = fixed_batch or min(samples, 4)
    n = max(batch, (samples // batch) * batch)
    arrays = {}
    for spec in signature:
        shape = [n] + [d if isinstance(d, int) else 8 for d in spec.shape[1:]]
        dt = np.dtype(spec.dtype)
        if np.issubdtype(dt, np.floating):
            arrays[spec.name] = rng.standard_normal(shape).astype(dt)
        elif dt == np.bool_:
            arrays[spec.name] = rng.integers(0, 2, shape).astype(dt)
        else:
            arrays[spec.name] = rng.integers(0, 10, shape).astype(dt)
    return Dataset(arrays, None, f"random(seed={seed})", f"random-{seed}", batch, fixed_batch=fixed_batch is not None)


def collect(runner: Runner, data: Dataset, n_outputs: int) -> list[np.ndarray]:
    outs: list[list[np.ndarray]] = [[] for _ in range(n_outputs)]
    for feeds in data.batches():
        res = runner(feeds)
        for i in range(min(n_outputs, len(res))):
            outs[i].append(np.asarray(res[i]))
        if len(res) != n_outputs:
            raise ParityError(f"the model returned {len(res)} outputs, the signature has {n_outputs}")
    return [np.concatenate(o) for o in outs]


def compare(names: list[str], ref: list[np.ndarray], got: list[np.ndarray], tol: Tolerance, label: str,
            gate: bool) -> tuple[list[OutputCheck], list[Mismatch]]:
    rows: list[OutputCheck] = []
    bad: list[Mismatch] = []
    for name, r, g in zip(names, ref, got, strict=True):
        if r.shape != g.shape:
            bad.append(Mismatch(name, label, "shape", str(list(g.shape)), str(list(r.shape))))
            rows.append(OutputCheck(name, label, tuple(g.shape), gate, passed=False, error="shape mismatch"))
            continue
        r64, g64 = r.astype(np.float64).ravel(), g.astype(np.float64).ravel()
        diff = np.abs(r64 - g64)
        max_abs = float(diff.max()) if diff.size else 0.0
        ref_max = float(np.abs(r64).max()) if r64.size else 0.0
        denom = float(np.linalg.norm(r64) * np.linalg.norm(g64))
        cosine = float(r64 @ g64 / denom) if denom > 0 else float(np.array_equal(r64, g64))
        figures: dict[str, Any] = {"max_abs": max_abs, "mean_abs": float(diff.mean()) if diff.size else 0.0,
                                   "ref_max_abs": ref_max, "cosine": cosine}
        if r.ndim == 2 and r.shape[1] > 1:
            figures["top1_agreement"] = float((r.argmax(1) == g.argmax(1)).mean())
        per_sample = sample_cosines(r, g)
        sample_cos = None
        if per_sample.size > 1:
            sample_cos = float(np.percentile(per_sample, tol.sample_percentile))
            figures.update(sample_cosine_p=tol.sample_percentile, sample_cosine=sample_cos,
                           sample_cosine_min=float(per_sample.min()), samples=int(per_sample.size))
        if tol.metric == "max-abs":
            bound = tol.rtol * ref_max + tol.atol
            ok = bool(max_abs <= bound)
            figures.update(limit=f"max|Δ| ≤ {bound:.3g}", bound=bound)
            if gate and not ok:
                bad.append(Mismatch(name, label, "max|Δ|", f"{max_abs:.3g}", f"≤ {bound:.3g} "
                                    f"({tol.rtol:g}·{ref_max:.3g} + {tol.atol:g})"))
        else:
            limit = f"cosine ≥ {tol.min_cosine}"
            ok = bool(cosine >= tol.min_cosine)
            if gate and not ok:
                bad.append(Mismatch(name, label, "cosine", f"{cosine:.4f}", f"≥ {tol.min_cosine}"))
            if tol.min_sample_cosine is not None and sample_cos is not None:
                p, sample_ok = tol.sample_percentile, sample_cos >= tol.min_sample_cosine
                limit += f", p{p:g} per-sample cosine ≥ {tol.min_sample_cosine}"
                ok = ok and bool(sample_ok)
                if gate and not sample_ok:
                    bad.append(Mismatch(name, label, f"p{p:g} sample cos", f"{sample_cos:.4f}",
                                        f"≥ {tol.min_sample_cosine} (worst sample {figures['sample_cosine_min']:.4f})"))
            figures["limit"] = limit
        rows.append(OutputCheck(name, label, tuple(g.shape), gate, passed=ok, **figures))
    return rows, bad


def sample_cosines(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Cosine similarity of each sample (axis 0) of two outputs; a sample all zeros on both sides counts 1."""
    if ref.ndim == 0 or ref.shape[0] == 0:
        return np.zeros(0)
    r = ref.reshape(ref.shape[0], -1).astype(np.float64)
    g = got.reshape(got.shape[0], -1).astype(np.float64)
    denom = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
    dot = (r * g).sum(axis=1)
    same = np.all(r == g, axis=1).astype(np.float64)
    return np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), same)


def parity(signature_in: list[TensorSpec], signature_out: list[TensorSpec], reference: Runner, built: Runner,
           built_names: list[str], tol: Tolerance, real: Dataset | None, random_samples: int, seed: int,
           real_samples: int, precision: str | None = None) -> ValidationReport:
    names = [s.name for s in signature_out]
    bad: list[Mismatch] = []
    if list(built_names) != names:
        bad.append(Mismatch(",".join(built_names), "-", "output names", str(built_names), str(names)))
        raise_parity(bad)
    rows: list[OutputCheck] = []
    sets: list[tuple[str, Dataset, bool]] = []
    rnd = random_dataset(signature_in, random_samples, seed)
    # max-abs tolerances gate every input set; cosine (int8) gates real inputs, or random ones if none exist
    sets.append(("random", rnd, tol.metric == "max-abs" or real is None))
    if real is not None:
        sets.append((f"real ({real.origin.rsplit('/', 1)[-1]})", real.head(real_samples), True))
    for label, ds, gate in sets:
        ref = collect(reference, ds, len(names))
        got = collect(built, ds, len(names))
        r, b = compare(names, ref, got, tol, label, gate)
        rows += r
        bad += b
    report = ValidationReport(tol, tuple(rows), rnd.count, 0 if real is None else real.head(real_samples).count,
                              passed=not bad)
    if bad:
        raise_parity(bad, report, precision)
    return report


def near_miss(report: ValidationReport | None, factor: float) -> float | None:
    """The worst max|Δ| / limit over the failing gated rows of a max-abs parity report, when every failure is
    within ``factor`` of its limit (and nothing else failed); None otherwise."""
    if report is None:
        return None
    failed = report.failed
    if not failed or any(r.bound is None or r.max_abs is None for r in failed):
        return None
    worst = max(r.max_abs / r.bound if r.bound > 0 else float("inf")  # type: ignore[operator]
                for r in failed)
    return worst if worst <= factor else None


#: the fix for a parity failure at fp32, where there is no higher precision: the conversion itself differs
FP32_HINT = ("fp32 has no higher precision: the conversion itself differs from the source (a converter fault). "
             "Try the other converter route (a TFLite target's ONNX model: tflite-convert's onnx_route, "
             "onnx2tf or onnx2torch; or build from the PyTorch source), or another --engine")


def raise_parity(bad: Iterable[Mismatch], report: ValidationReport | None = None,
                 precision: str | None = None) -> None:
    bad = list(bad)
    lines = [f"{'output':<16} {'inputs':<22} {'check':<13} {'value':<12} limit"]
    lines += [f"{m.output:<16} {m.inputs:<22} {m.what:<13} {m.value:<12} {m.limit}" for m in bad]
    what = "the conversion differs" if precision == "fp32" else "the built model differs"
    err = ParityError(f"{what} from the source model ({len(bad)} mismatch(es)):\n" + "\n".join(lines),
                      hint=FP32_HINT if precision == "fp32" else
                      "try a higher precision, another --engine, or more representative --calib data")
    err.report = report  # type: ignore[attr-defined]
    raise err


def accuracy(reference: Runner, built: Runner, data: Dataset, n_outputs: int,
             max_drop_points: float | None) -> AccuracyReport:
    """Top-1 accuracy of source vs built on labelled data; per-class deltas; worst class; optional gate."""
    assert data.labels is not None
    ref = collect(reference, data, n_outputs)[0]
    got = collect(built, data, n_outputs)[0]
    labels = data.labels[: len(ref)]
    ref_pred, got_pred = ref.reshape(len(ref), -1).argmax(1), got.reshape(len(got), -1).argmax(1)
    src_acc, built_acc = float((ref_pred == labels).mean()), float((got_pred == labels).mean())
    per_class = []
    for c in np.unique(labels):
        m = labels == c
        a, b = float((ref_pred[m] == c).mean()), float((got_pred[m] == c).mean())
        per_class.append(ClassDelta(int(c), int(m.sum()), a, b, round((b - a) * 100, 3)))
    worst = min(per_class, key=lambda r: r.delta_points)
    result = AccuracyReport(len(labels), src_acc, built_acc, round((src_acc - built_acc) * 100, 3),
                            float((ref_pred == got_pred).mean()), tuple(per_class), worst, max_drop_points)
    if max_drop_points is not None and result.drop_points > max_drop_points:
        err = AccuracyGateError(
            f"accuracy dropped {result.drop_points:.2f} points ({src_acc:.2%} -> {built_acc:.2%}), more than "
            f"--max-accuracy-drop {max_drop_points}; worst class {worst.label}: {worst.delta_points:+.2f} points",
            hint="use more representative --calib data, a higher precision, or another --engine")
        err.report = result  # type: ignore[attr-defined]
        raise err
    return result
