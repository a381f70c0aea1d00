"""``edgeify gate``: fail (exit 14) only when the candidate is slower than the baseline by more than the allowed
regression AND the difference is significant (compare's verdict ``slower``: Mann-Whitney p < alpha and the
bootstrap CI of ``ratio_p50`` above 1)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from .compare import DEFAULT_ALPHA, Comparison, compare

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


def gate(baseline: Any, candidate: Any, *, max_regression: float, alpha: float = DEFAULT_ALPHA) -> GateVerdict:
    c = compare(baseline, candidate, alpha=alpha)
    limit = 1 + max_regression
    over = c.ratio_p50 > limit
    regressed = c.verdict == "slower" and over
    pct = (c.ratio_p50 - 1) * 100
    if regressed:
        reason = (f"p50 {pct:+.1f}% (CI {(c.ci[0] - 1) * 100:+.1f}%..{(c.ci[1] - 1) * 100:+.1f}%), over the allowed "
                  f"+{max_regression * 100:g}% and significant (p={c.p_value:.2g} < {alpha:g})")
    elif over:
        reason = (f"p50 {pct:+.1f}% is over +{max_regression * 100:g}% but not significant (p={c.p_value:.2g}, "
                  f"CI {(c.ci[0] - 1) * 100:+.1f}%..{(c.ci[1] - 1) * 100:+.1f}%): not a regression")
    else:
        reason = f"p50 {pct:+.1f}% is within the allowed +{max_regression * 100:g}% ({c.verdict})"
    return GateVerdict(comparison=c, max_regression=max_regression, regressed=regressed, reason=reason)


__all__ = ["GateVerdict", "gate", "parse_threshold"]
