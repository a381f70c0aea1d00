"""``edgeify gate``: fail (exit 14) only when the candidate is slower than the baseline by more than the allowed
regression AND the difference is significant (compare's verdict ``slower``: Mann-Whitney p < alpha and the
bootstrap CI of ``ratio_p50`` above 1)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from .compare import Comparison, compare

_PCT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def parse_threshold(text: str) -> float:
    """``5%`` or ``0.05`` -> 0.05. A bare number of 1 or more is refused (5 would mean 500%)."""
    m = _PCT.match(str(text))
    if m:
        value = float(m.group(1)) / 100
    else:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if value >= 1:
            raise UsageError(f"--max-regression {text}: give a percentage or a fraction",
                             hint=f"e.g. --max-regression {text}% (or {float(text) / 100:g})")
    if not 0 <= value < 10:
        raise UsageError(f"--max-regression {text}: not a regression allowance", hint="e.g. --max-regression 5%")
    return value


@dataclass(frozen=True)
class GateVerdict:
    comparison: Comparison
    max_regression: float
    regressed: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"regressed": self.regressed, "max_regression": self.max_regression, "reason": self.reason,
                "exit_code": 14 if self.regressed else 0, **self.comparison.to_dict()}


def gate(baseline: Any, candidate: Any, *, max_regression: float, alpha: float | None = None,
         run_level: bool | None = None, resamples: int | None = None) -> GateVerdict:
    """Regressed when compare's verdict is ``slower`` (the interval above 1, and not within the allowance)
    AND the ratio is over ``1 + max_regression``. Several runs per side: run-level inference."""
    more = {} if resamples is None else {"resamples": resamples}
    c = compare(baseline, candidate, alpha=alpha, threshold=max_regression, run_level=run_level, **more)
    limit = 1 + max_regression
    over = c.ratio_p50 > limit
    regressed = c.verdict == "slower" and over
    pct = (c.ratio_p50 - 1) * 100
    ci = f"CI {(c.ci[0] - 1) * 100:+.1f}%..{(c.ci[1] - 1) * 100:+.1f}%"
    evidence = (f"p={c.p_value:.2g} < {c.alpha:g}" if c.p_value is not None
                else f"{c.confidence:.0%} interval over {c.runs_a} vs {c.runs_b} runs above 1")
    if regressed:
        reason = (f"p50 {pct:+.1f}% ({ci}), over the allowed +{max_regression * 100:g}% and significant "
                  f"({evidence})")
    elif over:
        reason = (f"p50 {pct:+.1f}% is over +{max_regression * 100:g}% but not significant ({ci}, verdict "
                  f"{c.verdict}): not a regression")
    else:
        reason = f"p50 {pct:+.1f}% is within the allowed +{max_regression * 100:g}% ({c.verdict}, {ci})"
    if c.verdict == "inconclusive" and c.runs_needed:
        reason += f"; about {c.runs_needed} runs per side would settle it"
    if c.a.disturbed or c.b.disturbed:
        reason += f"; disturbed runs: #{', #'.join(map(str, c.a.disturbed + c.b.disturbed))} (see warnings)"
    return GateVerdict(comparison=c, max_regression=max_regression, regressed=regressed, reason=reason)


__all__ = ["GateVerdict", "gate", "parse_threshold"]
