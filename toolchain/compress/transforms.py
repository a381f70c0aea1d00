"""Source transforms: registered steps (``transforms_source = True``) that a build runs BEFORE its pipeline when
the request carries their options namespace (``BuildRequest(options={kind: {...}})``), each replacing the build's
source model with its output (``compress`` is one). After the pipeline, each may add to the final artifact's
facts (``finish(ctx, final)``), e.g. accuracy measured against the original model.
"""

from __future__ import annotations

import time
from typing import Any

from edgeify.errors import UsageError
from edgeify.steps.registry import step_class, step_table
from pydantic import ValidationError


def requested(request: Any) -> list[Any]:
    """The source-transform steps the request asks for, configured from its options (in the order given)."""

    out = []
    for kind in (request.options if request is not None else {}):
        if kind not in step_table():
            continue
        cls = step_class(kind)
        if not getattr(cls, "transforms_source", False):
            continue
        try:
            out.append(cls(cls.Config.model_validate(request.step_options(kind))))
        except ValidationError as exc:
            lines = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise UsageError(f"{kind} options: {lines}") from None
    return out


def run(ctx: Any, observer: Any, records: list[dict[str, Any]], tools: dict[str, str]) -> list[Any]:
    """Run the requested source transforms; ``ctx.source`` ends as the last one's output. Returns the steps (for
    :func:`finish`)."""
    steps = requested(ctx.request)
    for impl in steps:
        observer.step_started(impl.kind, impl.kind)
        t0 = time.perf_counter()
        step_dir = ctx.work_dir / f"source-{impl.kind}"
        step_dir.mkdir(parents=True)
        impl.run(ctx, None, step_dir)
        secs = time.perf_counter() - t0
        observer.step_finished(impl.kind, secs, False)
        tools.update(impl.tool_versions())
        records.append({"id": impl.kind, "uses": impl.kind, "input": None, "where": "host",
                        "config": impl.config.model_dump(mode="json"), "cache_key": None, "cached": False,
                        "seconds": round(secs, 3), "tools": impl.tool_versions()})
    return steps


def finish(steps: list[Any], ctx: Any, final: Any) -> Any:
    for impl in steps:
        final = impl.finish(ctx, final)
    return final
