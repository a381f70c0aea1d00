"""Pick the winner by objective among candidates that meet every budget; the Pareto front; why it won."""

from __future__ import annotations

from collections.abc import Sequence

from .records import Budgets, Candidate, Objective
from .settings import tuning_axes


def accuracy_ok(c: Candidate, budgets: Budgets) -> bool:
    if c.accuracy is None or not c.accuracy.parity_passed:
        return False
    if budgets.max_accuracy_drop is None:
        return True
    return c.accuracy_drop is not None and c.accuracy_drop <= budgets.max_accuracy_drop + 1e-9


def latency_ok(c: Candidate, budgets: Budgets) -> bool:
    if budgets.max_latency_ms is None:
        return True
    v = c.latency(budgets.percentile)
    return v is not None and v <= budgets.max_latency_ms


def meets(c: Candidate, budgets: Budgets) -> bool:
    return c.latency(budgets.percentile) is not None and accuracy_ok(c, budgets) and latency_ok(c, budgets)


def _sort_key(c: Candidate, objective: Objective, percentile: str) -> tuple[float, ...]:
    lat = c.latency(percentile) or float("inf")
    drop = c.accuracy_drop if c.accuracy_drop is not None else float("inf")
    size = float(c.size_bytes or 0)
    full = 0.0 if c.latency_ms is not None else 1.0  # a fully measured candidate before a screened one
    if objective == "size":
        return (size, full, lat)
    if objective == "accuracy":
        return (round(drop, 3), full, lat)
    return (full, lat, size)


#: latencies within this fraction of each other are tied: one benchmark run per candidate cannot resolve less
#: (run-to-run drift of single runs, benchmarks/gate_calibration.json: several % on a shared 2-core machine)
LATENCY_TIE = 0.05
#: accuracy drops within this many percentage points are tied
ACCURACY_TIE_PT = 0.25
#: sizes within this fraction are tied
SIZE_TIE = 0.01


def _non_default_options(c: Candidate) -> int:
    """Options set to something other than the engine's default: the first value of each of its adapter's tuning
    axes is the engine's own default (``performance_hint=LATENCY`` is no change from the default settings)."""
    defaults = {a.option: a.values[0] for a in tuning_axes(c.engine) if a.values}
    return sum(1 for k, v in c.settings.options.items() if k not in defaults or defaults[k] != v)


def simplicity(c: Candidate) -> tuple[int, int, int, int, int]:
    """Smaller is simpler: default settings, fewer threads, the engine's default recipe, fewer float layers, size."""
    return (_non_default_options(c), c.settings.threads or 0, 0 if c.recipe.name == "default" else 1,
            len(c.recipe.float_layers), int(c.size_bytes or 0))


def tied(a: Candidate, b: Candidate, objective: Objective, percentile: str) -> bool:
    """Within each other's noise on the objective (latency: ±LATENCY_TIE, both measured the same way)."""
    if objective == "size":
        sa, sb = float(a.size_bytes or 0), float(b.size_bytes or 0)
        return abs(sa - sb) <= SIZE_TIE * max(min(sa, sb), 1.0)
    if objective == "accuracy":
        da, db = a.accuracy_drop, b.accuracy_drop
        return da is not None and db is not None and abs(da - db) <= ACCURACY_TIE_PT
    la, lb = a.latency(percentile), b.latency(percentile)
    same_protocol = (a.latency_ms is None) == (b.latency_ms is None)
    return same_protocol and la is not None and lb is not None and abs(la - lb) <= LATENCY_TIE * min(la, lb)


def choose(cands: Sequence[Candidate], budgets: Budgets, objective: Objective) -> int | None:
    """The best candidate meeting the budgets; candidates tied with it within noise go to the simplest."""
    ok = [i for i, c in enumerate(cands) if meets(c, budgets)]
    if not ok:
        return None
    best = min(ok, key=lambda i: _sort_key(cands[i], objective, budgets.percentile))
    ties = [i for i in ok if tied(cands[i], cands[best], objective, budgets.percentile)]
    return min(ties, key=lambda i: (simplicity(cands[i]), _sort_key(cands[i], objective, budgets.percentile)))


def parity_reason(exc: Exception, most: int = 3) -> str:
    """A parity failure in one line with its details: each failing output, the input set, the metric, its value
    and the tolerance (from the error's validation report), instead of "N mismatch(es)"."""
    report = getattr(exc, "report", None)
    rows = list(getattr(report, "failed", None) or ())
    if not rows:
        return str(exc).splitlines()[0]
    parts = []
    for r in rows[:most]:
        if r.error:
            what = r.error
        elif r.max_abs is not None and r.bound is not None and r.max_abs > r.bound:
            what = f"max|Δ| {r.max_abs:.3g} > {r.bound:.3g}"
        elif r.cosine is not None:
            what = f"cosine {r.cosine:.5f}"
        elif r.top1_agreement is not None:
            what = f"top-1 agreement {r.top1_agreement:.3f}"
        else:
            what = "failed"
        parts.append(f"{r.output} ({r.inputs}): {what}" + (f" [tolerance {r.limit}]" if r.limit else ""))
    more = f"; +{len(rows) - most} more" if len(rows) > most else ""
    return f"parity failed on {len(rows)} output check(s): " + "; ".join(parts) + more


def closest_text(cands: Sequence[Candidate], budgets: Budgets, n: int = 3) -> str:
    """The exit-10/13 message's list: measured candidates only, numbers formatted."""
    out = []
    for i in closest(cands, budgets, n):
        c = cands[i]
        lat = c.latency(budgets.percentile)
        drop = "n/a" if c.accuracy_drop is None else f"{c.accuracy_drop:.2f} pt"
        parity = "" if c.accuracy is None or c.accuracy.parity_passed else ", parity failed"
        out.append(f"#{i} {c.engine} {c.precision} ({c.recipe.name}, {c.settings.label()}) drop {drop}, "
                   f"{budgets.percentile} {lat:.3f} ms{parity}")
    return ", ".join(out)


def closest(cands: Sequence[Candidate], budgets: Budgets, n: int = 3) -> list[int]:
    """The measured candidates nearest to the budgets (for the exit-10/13 message): smallest overshoot first."""
    def overshoot(c: Candidate) -> float:
        over = 0.0
        if budgets.max_accuracy_drop is not None:
            d = c.accuracy_drop if c.accuracy_drop is not None else 100.0
            over += max(0.0, d - budgets.max_accuracy_drop) / max(budgets.max_accuracy_drop, 0.1)
        if budgets.max_latency_ms is not None:
            v = c.latency(budgets.percentile)
            over += 100.0 if v is None else max(0.0, v - budgets.max_latency_ms) / budgets.max_latency_ms
        if c.accuracy is None or not c.accuracy.parity_passed:
            over += 10.0
        return over
    scored = [i for i, c in enumerate(cands) if c.latency(budgets.percentile) is not None]
    return sorted(scored, key=lambda i: overshoot(cands[i]))[:n]


def pareto(cands: Sequence[Candidate], percentile: str) -> list[int]:
    """Indices not dominated on (latency, accuracy drop, size), among candidates with all three and parity."""
    pts = []
    for i, c in enumerate(cands):
        lat = c.latency(percentile)
        if lat is None or c.accuracy is None or not c.accuracy.parity_passed or c.size_bytes is None:
            continue
        pts.append((i, (lat, c.accuracy_drop if c.accuracy_drop is not None else 0.0, float(c.size_bytes))))
    front = []
    for i, p in pts:
        dominated = any(all(a <= b for a, b in zip(q, p, strict=True)) and q != p for _, q in pts)
        if not dominated:
            front.append(i)
    return front


def runner_up(c: Candidate, r: Candidate, objective: Objective, percentile: str) -> str:
    """The runner-up, and the difference on the objective with its interval (the noise band)."""
    name = f"runner-up {r.engine} {r.precision} ({r.recipe.name}, {r.settings.label()})"
    verdict = "tied" if tied(c, r, objective, percentile) else "apart"
    if objective == "size":
        sc, sr = c.size_bytes or 0, r.size_bytes or 0
        return f"{name}: {sr / 1e6:.3f} MB vs {sc / 1e6:.3f} MB ({sr - sc:+,d} bytes, exact; {verdict})"
    if objective == "accuracy":
        dc, dr = c.accuracy_drop, r.accuracy_drop
        if dc is None or dr is None:
            return f"{name}: accuracy drop not measured"
        d = dr - dc
        return (f"{name}: drop {dr:.2f} vs {dc:.2f} pt (difference {d:+.2f} pt, interval "
                f"[{d - ACCURACY_TIE_PT:+.2f}, {d + ACCURACY_TIE_PT:+.2f}]; {verdict})")
    lc, lr = c.latency(percentile), r.latency(percentile)
    if lc is None or lr is None:
        return f"{name}: latency not measured"
    ratio = lr / lc
    return (f"{name}: {percentile} {lr:.3f} vs {lc:.3f} ms (x{ratio:.3f}, interval [{ratio / (1 + LATENCY_TIE):.3f}, "
            f"{ratio * (1 + LATENCY_TIE):.3f}] from ±{LATENCY_TIE:.0%} run-to-run noise; {verdict})")


def why(c: Candidate, cands: Sequence[Candidate], budgets: Budgets, objective: Objective,
        confirmed: str = "") -> str:
    """Why ``c`` won; ``confirmed`` (optimize.confirm's clause, when its rounds ran) replaces the runner-up named
    from single runs: the re-measured finalists' run-level ratios and ties are the decision."""
    ok = [x for x in cands if meets(x, budgets)]
    lat = c.latency(budgets.percentile)
    parts = [f"{objective} objective: best of {len(ok)} candidate(s) meeting the budgets "
             f"(of {len(cands)} tried)"]
    if lat is not None:
        parts.append(f"{budgets.percentile} {lat:.3f} ms")
    if c.accuracy_drop is not None:
        parts.append(f"accuracy drop {c.accuracy_drop:.2f} pt"
                     + (f" <= {budgets.max_accuracy_drop}" if budgets.max_accuracy_drop is not None else ""))
    runner = sorted((x for x in ok if x is not c), key=lambda x: _sort_key(x, objective, budgets.percentile))
    if confirmed:
        parts.append(confirmed)
    elif runner:
        parts.append(runner_up(c, runner[0], objective, budgets.percentile))
        n_tied = sum(tied(x, c, objective, budgets.percentile) for x in runner)
        if n_tied:
            parts.append(f"{n_tied} candidate(s) tied within noise: the simplest was chosen (default settings, "
                         "fewer threads, default recipe, smaller)")
    else:
        parts.append("no runner-up: the only candidate meeting the budgets")
    if c.precision == "int8-mixed" and c.recipe.float_layers:
        parts.append(f"int8 with {len(c.recipe.float_layers)} layer(s) kept in float: "
                     f"{', '.join(c.recipe.float_layers)}")
    elif c.precision == "int8-mixed" and c.total_ops is not None:  # e.g. NNCF accuracy control chose them
        parts.append(f"int8 with {c.total_ops - (c.quantized_ops or 0)} of {c.total_ops} compute op(s) left in "
                     f"float ({c.recipe.name})")
    return "; ".join(parts)
