"""Pick the winner by objective among candidates that meet every budget; the Pareto front; why it won."""

from __future__ import annotations

from collections.abc import Sequence

from .records import Budgets, Candidate, Objective


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


def choose(cands: Sequence[Candidate], budgets: Budgets, objective: Objective) -> int | None:
    ok = [i for i, c in enumerate(cands) if meets(c, budgets)]
    if not ok:
        return None
    return min(ok, key=lambda i: _sort_key(cands[i], objective, budgets.percentile))


def closest(cands: Sequence[Candidate], budgets: Budgets, n: int = 3) -> list[int]:
    """The candidates nearest to the budgets (for the exit-10/13 message): smallest overshoot first."""
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
    scored = [i for i, c in enumerate(cands) if c.latency(budgets.percentile) is not None or c.accuracy is not None]
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


def why(c: Candidate, cands: Sequence[Candidate], budgets: Budgets, objective: Objective) -> str:
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
    if runner and objective == "latency" and runner[0].latency(budgets.percentile) and lat:
        r = runner[0]
        parts.append(f"next best {r.engine} {r.precision} ({r.recipe.name}, {r.settings.label()}) "
                     f"{r.latency(budgets.percentile):.3f} ms")
    if c.precision == "int8-mixed" and c.recipe.float_layers:
        parts.append(f"int8 with {len(c.recipe.float_layers)} layer(s) kept in float: "
                     f"{', '.join(c.recipe.float_layers)}")
    elif c.precision == "int8-mixed" and c.total_ops is not None:  # e.g. NNCF accuracy control chose them
        parts.append(f"int8 with {c.total_ops - (c.quantized_ops or 0)} of {c.total_ops} compute op(s) left in "
                     f"float ({c.recipe.name})")
    return "; ".join(parts)
