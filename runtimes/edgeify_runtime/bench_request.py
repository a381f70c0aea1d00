"""The benchmark agent's request: one JSON object, validated field by field (unknown fields are refused).

Request (every field but ``bundle`` is optional; unknown fields are refused)::

    {"bundle": "path/to/bundle",     required
     "engine": null,                 null: the manifest's engine (another name is refused)
     "threads": null,                null: physical cores (bounded by the CPUs this process may use)
     "warmup": 10, "runs": 100,      warmup runs are discarded; at least ``runs`` timed runs ...
     "min_duration_s": 1.0,          ... and at least this long in the timed phase ...
     "max_duration_s": 120,          ... but never longer than this (each phase); ``stopped_by`` says why
     "batch": null,                  null: the fixed batch dimension, or 1 when it is dynamic
     "seed": 0,                      random inputs: float -> standard normal float32, int -> 0..9, bool
     "verify": true,                 sha256 of every bundle file before loading
     "input_shapes": null,           {input: [dims]}: the shape to feed, for dynamic non-batch dimensions
                                     (which default to 1)
     "options": null,                engine load options, merged over the manifest's engine.options
     "inputs_npz": null,             run these inputs once (np.load, allow_pickle=False) after the timed
     "outputs_npz": null,            runs and write the outputs here (host-vs-device parity)
     "profile": null,                true or a run count: the engine's per-op profile, in its own session
                                     after the timed runs (edgeify_runtime.profile)
     "samples": true,                include the raw samples (``samples_ms``) in the result
     "series": null}                 {"id", "index", "count"}: this run is one of several interleaved runs
                                     (``bench --repeat``); copied into the result
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import EdgeifyRuntimeError


class RequestError(EdgeifyRuntimeError):
    """The request is not valid JSON, lacks ``bundle``, or has an unknown field or one of the wrong type."""

    exit_code = 2  # "command-line usage error" in edgeify's exit code table
    hint = "see `python -m edgeify_runtime.bench --help` for the request fields"


@dataclass
class BenchRequest:
    bundle: str
    engine: str | None = None
    threads: int | None = None
    warmup: int = 10
    runs: int = 100
    min_duration_s: float = 1.0
    max_duration_s: float = 120.0
    batch: int | None = None
    seed: int = 0
    verify: bool = True
    input_shapes: dict[str, list[int]] | None = None
    options: dict[str, Any] | None = None
    inputs_npz: str | None = None
    outputs_npz: str | None = None
    profile: Any = None
    samples: bool = True
    series: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, raw: Any) -> BenchRequest:
        if not isinstance(raw, dict):
            raise RequestError("the request must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise RequestError(f"unknown request field(s) {unknown}; known fields: {sorted(known)}")
        if not isinstance(raw.get("bundle"), str) or not raw["bundle"]:
            raise RequestError("the request needs `bundle`: the path of the bundle directory on this device")
        req = cls(**{k: v for k, v in raw.items() if v is not None or k not in _NON_NULL})
        req._check()
        return req

    def _check(self) -> None:
        _want(self, "engine", (str,), nullable=True)
        _want_int(self, "threads", 1, nullable=True)
        _want_int(self, "warmup", 0)
        _want_int(self, "runs", 1)
        _want(self, "min_duration_s", (int, float))
        _want(self, "max_duration_s", (int, float))
        if self.min_duration_s < 0 or self.max_duration_s <= 0:
            raise RequestError("min_duration_s must be >= 0 and max_duration_s > 0")
        _want_int(self, "batch", 1, nullable=True)
        _want_int(self, "seed", 0)
        _want(self, "verify", (bool,))
        _want(self, "options", (dict,), nullable=True)
        _want(self, "inputs_npz", (str,), nullable=True)
        _want(self, "outputs_npz", (str,), nullable=True)
        _want(self, "samples", (bool,))
        _want(self, "series", (dict,), nullable=True)
        if not isinstance(self.profile, bool):  # true, false, null or a run count
            _want_int(self, "profile", 1, nullable=True)
        if self.inputs_npz and not self.outputs_npz:
            raise RequestError("inputs_npz needs outputs_npz: where to write the outputs")
        if self.input_shapes is not None:
            ok = isinstance(self.input_shapes, dict) and all(
                isinstance(v, list)
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in v)
                for v in self.input_shapes.values())
            if not ok:
                raise RequestError("input_shapes must map input names to lists of non-negative ints")


#: fields that fall back to their default when the request gives null
_NON_NULL = frozenset({"warmup", "runs", "min_duration_s", "max_duration_s", "seed", "verify", "samples"})


def _want(req: BenchRequest, name: str, types: tuple[type, ...], nullable: bool = False) -> None:
    value = getattr(req, name)
    if value is None and nullable:
        return
    kinds = "/".join(t.__name__ for t in types)
    if isinstance(value, bool) and bool not in types:
        raise RequestError(f"request field {name!r} must be {kinds}, not a bool")
    if not isinstance(value, types):
        raise RequestError(f"request field {name!r} must be {kinds}"
                           f"{' or null' if nullable else ''}, not {value!r}")


def _want_int(req: BenchRequest, name: str, minimum: int, nullable: bool = False) -> None:
    _want(req, name, (int,), nullable)
    value = getattr(req, name)
    if value is not None and value < minimum:
        raise RequestError(f"request field {name!r} must be >= {minimum}, not {value}")


__all__ = ["BenchRequest", "RequestError"]
