"""Fleet rollouts in waves: a canary first, an on-device gate per wave against the bundle it replaces, automatic
rollback of a failed wave, and state in the results store that survives Ctrl-C and crashes.

::

    from edgeify.rollout import start, status
    rec = start("build/m", "tag:cameras", waves="1,10%,50%,100%", gate="p95<=1.05x")
    status(rec.id).to_dict()["devices"]      # [{name, wave, bundle_digest, status, ...}]
"""

from .plan import Gate, Plan, parse_waves
from .run import abort, plan_rollout, resume, start, status
from .state import RolloutRecord

__all__ = ["Gate", "Plan", "RolloutRecord", "abort", "parse_waves", "plan_rollout", "resume", "start", "status"]
