"""The search: build every candidate (``edgeify.build``), screen it on the device, run the ladder where int8
costs too much, try run-time settings on the best artifacts, measure the best few with the full protocol."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edgeify.data import load_dataset
from edgeify.errors import EdgeifyError
from edgeify.steps.base import fault_point
from edgeify.targets.spec import Tolerance
from edgeify_runtime.envelope import sigterm_as_interrupt

from .candidates import Built, CandidateBuilder, Inputs, LocalBuilder, build_candidate
from .choose import accuracy_ok, pareto
from .ladder import qdq_model_path, run_ladder
from .measure import SCREEN, MeasureProtocol, bench_candidate
from .overflow import fp32_nodes, overflow_tensors
from .records import Budgets, Candidate, Objective, Rung, Settings
from .sensitivity import rank_layers
from .space import ArtifactPlan, DeviceFacts, SearchSpace, build_space

if TYPE_CHECKING:
    from edgeify.targets.spec import TargetSpec
    from edgeify_runtime.manifest import Manifest

#: artifacts (best screened first) whose run-time settings are explored
SETTINGS_TOP = 2
#: candidates measured with the full protocol (plus the Pareto front)
FULL_TOP = 3
#: a screened candidate slower than this factor times the best fully measured one cannot beat it
CANNOT_BEAT = 1.3


class Search:
    def __init__(self, inp: Inputs, spec: TargetSpec, facts: DeviceFacts, budgets: Budgets, objective: Objective,
                 device: str, run_id: str, full: MeasureProtocol, progress: Callable[[str], None],
                 engines: tuple[str, ...] | None = None, precisions: tuple[str, ...] | None = None,
                 builder: CandidateBuilder | None = None) -> None:
        self.inp, self.spec, self.facts, self.budgets, self.objective = inp, spec, facts, budgets, objective
        self.device, self.run_id, self.full, self.say = device, run_id, full, progress
        self._filters = (engines, precisions)
        self.builder: CandidateBuilder = builder or LocalBuilder()  # where candidates are built (here / Ray)
        self.space: SearchSpace = build_space(spec, facts, has_calib=inp.calib is not None, engines=engines,
                                              precisions=precisions)
        self.cands: list[Candidate] = []
        self.built: dict[str, Built] = {}
        self.p50: dict[str, float | None] = {}
        self.ladders: dict[str, list[Rung]] = {}
        self._t0 = time.monotonic()
        self.deadline = self._t0 + budgets.max_time_s
        self.stopped = ""
        #: Ctrl-C / SIGTERM ended the search (what was measured is kept; the run exits 130)
        self.interrupted = False
        #: phases that failed on a tool's error (what they had measured is kept; the result says why)
        self.failures: list[str] = []
        self._facts_from_device = device == "local"
        #: False: build and check only (``edgeify build --ladder``), no benchmark runs
        self.measure = True

    # -- budget and progress ---------------------------------------------------------------------------------
    def out_of_time(self) -> bool:
        if time.monotonic() <= self.deadline:
            return False
        if not self.stopped:
            self.stopped = (f"--max-time {self.budgets.max_time_s:g} s reached after {len(self.built)} artifact(s) "
                            f"and {len(self.cands)} candidate(s); the rest of the space was not tried")
            self.say(f"stopping: {self.stopped}")
        return True

    def _left(self) -> str:
        """Done, left and (from the time per artifact so far) an estimate of the time left, capped by --max-time."""
        todo = [p for p in self.space.artifacts if self._key(p) not in self.built]
        done = len(self.built)
        if not todo:
            return f"{done} done, all planned artifacts built"
        spent = time.monotonic() - self._t0
        eta = min(spent / max(done, 1) * len(todo), max(0.0, self.deadline - time.monotonic()))
        return f"{done} done, {len(todo)} left, about {eta:.0f} s left"

    @staticmethod
    def _key(plan: ArtifactPlan) -> str:
        return plan.key() + ("|" + ",".join(plan.recipe.float_layers) if plan.recipe.float_layers else "")

    # -- the Runner protocol the ladder uses -------------------------------------------------------------------
    def accuracy_ok(self, built: Built) -> bool:
        if not built.ok or built.accuracy is None:
            return False
        return accuracy_ok(Candidate(engine="-", precision="-", accuracy=built.accuracy,
                                     accuracy_drop=built.accuracy.drop), self.budgets)

    def max_accuracy_drop(self) -> float | None:
        return self.budgets.max_accuracy_drop

    def fp16_overflow(self, engine: str) -> tuple[str, ...]:
        """Nodes an fp16 build of ``engine`` must keep in fp32: its fp32 artifact (built and screened here if the
        search has not yet) run on the calibration inputs, every tensor beyond fp16's range."""

        if self.inp.calib is None:
            return ()
        built, _ = self.try_plan(ArtifactPlan(engine=engine, precision="fp32"))
        path = qdq_model_path(built)
        if not built.ok or path is None or built.manifest is None or built.manifest.engine.format != "onnx":
            return ()
        try:
            hot = overflow_tensors(path, self._calib_feeds(built.manifest), self.inp.work / "overflow")
        except Exception as exc:  # the overflow scan's tooling failed: plain fp16 is still worth a try
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            self.say(f"fp16 overflow scan failed ({type(exc).__name__}: {first}): the fp16 rung keeps no op in fp32")
            return ()
        if not hot:
            return ()
        keep = fp32_nodes(path, hot)
        self.say(f"fp16 would overflow (|x| > 65504) in {', '.join(f'{k} ({v:.3g})' for k, v in hot.items())}: "
                 f"keeping {', '.join(keep)} in fp32")
        return keep

    def precisions_for(self, engine: str) -> list[str]:
        eng = self.spec.engines[engine]
        return [p for p in eng.precisions if p in self.spec.precisions and (p != "bf16" or self.facts.has_bf16)]

    def try_plan(self, plan: ArtifactPlan) -> tuple[Built, float | None]:
        key = self._key(plan)
        if key in self.built:
            return self.built[key], self.p50.get(key)
        n = len(self.built) + 1
        label = f"{plan.engine} {plan.precision} ({plan.recipe.name})"
        self.say(f"[{n}] building {label}")
        try:
            built = self.builder.build(self.inp, plan, n)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a tool's own failure (not an EdgeifyError): this candidate failed, search goes on
            text = str(exc).strip().splitlines()
            built = Built(plan, None, self.spec.engines[plan.engine].runtime, None, status="build-failed",
                          error=f"{type(exc).__name__}: {text[0][:300] if text else ''}")
        twin = self._twin(built)
        if twin is not None:  # e.g. ORT's entropy calibration in quantize_static: min-max's ranges exactly
            return self._duplicate(key, built, twin, n, label)
        self.built[key] = built
        if not built.ok:
            self.cands.append(Candidate(engine=plan.engine, precision=plan.precision, recipe=plan.recipe,
                                        accuracy=built.accuracy,
                                        accuracy_drop=None if built.accuracy is None else built.accuracy.drop,
                                        status=built.status, reason=built.error,  # type: ignore[arg-type]
                                        node=built.node))
            self.say(f"[{n}] {label}: {built.status}: {built.error}; {self._left()}")
            return built, None
        if not self.measure:
            self.say(f"[{n}] {label}: accuracy drop {built.accuracy.drop if built.accuracy else '-'} pt")
            return built, None
        cand = self._screen(built, self.default_settings(built.runtime))
        p50 = cand.latency("p50")
        self.p50[key] = p50
        drop = built.accuracy.drop if built.accuracy else None
        self.say(f"[{n}] {label}: accuracy drop {'-' if drop is None else f'{drop:.2f} pt'}, "
                 f"screening p50 {'-' if p50 is None else f'{p50:.3f} ms'}; "
                 + (f"{built.quantized_ops}/{built.total_ops} compute ops int8; " if built.total_ops is not None
                    else "")
                 + self._left())

        fault_point("optimize-screened")  # interrupt tests: Ctrl-C lands after a candidate was measured
        return built, p50

    def _twin(self, built: Built) -> Built | None:
        """An artifact already built (same runtime) with the very same bytes as ``built``'s, or None. A build that
        failed its parity gate has no bundle to hash: there the same parity report (every error metric, to the last
        digit, on the same inputs) stands in, it would be judged the same."""
        digest = built.artifact_sha256() if built.status in ("built", "parity-failed") else None
        if digest is None:
            return None
        return next((b for b in self.built.values() if b.status == built.status and b.runtime == built.runtime
                     and b.artifact_sha256() == digest), None)

    def _duplicate(self, key: str, built: Built, twin: Built, n: int, label: str) -> tuple[Built, float | None]:
        """Record a build whose artifact equals ``twin``'s as skipped (not measured again): same accuracy."""
        tk = self._key(twin.plan)
        same = "artifact" if built.ok else "parity report (parity failed: no bundle to hash)"
        why = (f"same {same} as {twin.plan.engine} {twin.plan.precision} ({twin.plan.recipe.name}), sha256 "
               f"{(built.artifact_sha256() or '')[:12]}: not measured again")
        dup = dataclasses.replace(built, status="duplicate", duplicate_of=tk, error=why, accuracy=twin.accuracy)
        self.built[key] = dup
        self.cands.append(Candidate(engine=built.plan.engine, precision=built.plan.precision, recipe=built.plan.recipe,
                                    accuracy=twin.accuracy, size_bytes=built.size_bytes,
                                    accuracy_drop=None if twin.accuracy is None else twin.accuracy.drop,
                                    quantized_ops=built.quantized_ops, total_ops=built.total_ops,
                                    status="skipped", reason=why, node=built.node))
        self.say(f"[{n}] {label}: skipped: {why}; {self._left()}")
        return dup, self.p50.get(tk)

    def rank_layers(self, built: Built) -> list[tuple[str, float, tuple[str, ...]]]:
        if qdq_model_path(built) is None:  # parity failed: rebuild with the gate open, to read the quantized graph
            tol = {**self.spec.tolerances, built.plan.precision: Tolerance(metric="cosine", min_cosine=-1.0)}
            relaxed = dataclasses.replace(self.inp, spec=self.spec.model_copy(update={"tolerances": tol}))
            built = build_candidate(relaxed, built.plan, 900 + len(self.built))
        path = qdq_model_path(built)
        if path is None or built.manifest is None:
            return []
        self.say(f"ranking layers of {built.plan.engine} int8 by sensitivity (per-channel quantization error)")
        return rank_layers(path, self._calib_feeds(built.manifest), self.inp.work / "sensitivity")

    def _calib_feeds(self, manifest: Manifest) -> list[dict]:
        sig = list(manifest.inputs)
        ds = load_dataset(self.inp.calib, sig, purpose="calibration", preprocess=self.inp.preprocess)
        return list(ds.batches(max_samples=64))

    # -- measuring -----------------------------------------------------------------------------------------
    def default_settings(self, runtime: str) -> Settings:
        grid = self.space.settings.get(runtime) or ()
        return grid[0] if grid else Settings(threads=self.facts.physical_cores)

    def _screen(self, built: Built, settings: Settings) -> Candidate:
        base = Candidate(engine=built.plan.engine, precision=built.plan.precision, recipe=built.plan.recipe,
                         settings=settings, accuracy=built.accuracy,
                         accuracy_drop=None if built.accuracy is None else built.accuracy.drop,
                         size_bytes=built.size_bytes, quantized_ops=built.quantized_ops, total_ops=built.total_ops,
                         bundle=str(built.bundle), node=built.node)
        try:
            m = bench_candidate(built.bundle, built.runtime, settings, SCREEN, device=self.device,  # type: ignore
                                run_id=self.run_id)
        except EdgeifyError as exc:
            cand = base.model_copy(update={"status": "bench-failed", "reason": str(exc).splitlines()[0]})
            self.cands.append(cand)
            return cand
        if not self._facts_from_device and m.fingerprint:
            self._facts_from_device = True
            self.facts = DeviceFacts.from_fingerprint(m.fingerprint)
            engines, precisions = self._filters
            self.space = build_space(self.spec, self.facts, has_calib=self.inp.calib is not None, engines=engines,
                                     precisions=precisions)
            self.say(f"device {self.device}: {self.facts.cpu_model or self.facts.arch}, "
                     f"{self.facts.physical_cores} physical core(s)")
        cand = base.model_copy(update={"screen_latency_ms": m.latency_ms, "status": "screened",
                                       "result_ids": tuple(x for x in (m.result_id,) if x is not None)})
        self.cands.append(cand)
        return cand

    def _full(self, i: int) -> None:
        c = self.cands[i]
        self.say(f"full protocol: {c.engine} {c.precision} ({c.recipe.name}, {c.settings.label()})")
        try:
            m = bench_candidate(Path(c.bundle or ""), self.spec.engines[c.engine].runtime, c.settings, self.full,
                                device=self.device, run_id=self.run_id)
        except EdgeifyError as exc:
            self.cands[i] = c.model_copy(update={"reason": f"full protocol failed: {str(exc).splitlines()[0]}"})
            return
        ids = c.result_ids + tuple(x for x in (m.result_id,) if x is not None)
        self.cands[i] = c.model_copy(update={"latency_ms": m.latency_ms, "status": "measured", "result_ids": ids})

    # -- phases ----------------------------------------------------------------------------------------------
    def run(self) -> None:
        """All phases; --max-time ends the search where it is, Ctrl-C / SIGTERM too (``interrupted``): what was
        measured is kept (the results store has every benchmark already), the best so far is chosen from it."""

        try:
            with sigterm_as_interrupt():
                for phase in (self._phase_artifacts, self._phase_ladder, self._phase_settings, self._phase_full):
                    try:
                        phase()
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except Exception as exc:  # one phase's tool failed: keep what was measured, go on
                        text = str(exc).strip().splitlines()
                        why = f"{phase.__name__.removeprefix('_phase_')} phase failed: {type(exc).__name__}: " + (
                            text[0][:300] if text else "")
                        self.failures.append(why)
                        self.say(why)
        except KeyboardInterrupt:
            self.interrupted = True
            self.stopped = (f"interrupted (Ctrl-C / SIGTERM) after {len(self.built)} artifact(s) and "
                            f"{len(self.cands)} candidate(s); reporting the best so far")
            self.say(self.stopped)

    def _phase_artifacts(self) -> None:
        self.say(f"search space: {len(self.space.artifacts)} artifact(s) "
                 f"({', '.join(p.key() for p in self.space.artifacts)})"
                 + (f"; left out: {'; '.join(self.space.skipped)}" if self.space.skipped else ""))
        todo = [p for p in self.space.artifacts if self._key(p) not in self.built]  # Ray: built at once, here
        self.builder.prefetch(self.inp, [(p, len(self.built) + 1 + i) for i, p in enumerate(todo)], self.deadline)
        for plan in self.space.artifacts:
            if self.out_of_time():
                return
            self.try_plan(plan)

    def _phase_ladder(self) -> None:
        for engine in self.spec.engines:
            base = self.built.get(self._key(ArtifactPlan(engine=engine, precision="int8")))
            if base is None or self.accuracy_ok(base) or self.out_of_time():
                continue
            self.say(f"{engine} int8 misses the accuracy budget or parity gate: quantization ladder")
            rungs, got = run_ladder(self, base, self.p50.get(self._key(base.plan)), self.spec)
            self.ladders[engine] = rungs
            self.say(f"{engine} ladder: " + (f"{got.plan.precision} ({got.plan.recipe.name}) holds the budget"
                                             if got else "no rung met the budget"))

    def _eligible(self) -> list[int]:
        ok = [i for i, c in enumerate(self.cands)
              if c.status in ("screened", "measured") and accuracy_ok(c, self.budgets)]
        return sorted(ok, key=lambda i: self.cands[i].latency("p50") or float("inf"))

    def _phase_settings(self) -> None:
        """Run-time settings of the best few artifacts, one axis at a time (threads, then each engine option),
        each axis starting from the best values found so far: a few screenings instead of the whole grid."""
        seen: set[str] = set()
        tops: list[Candidate] = []
        for i in self._eligible():
            b = self.cands[i].bundle or ""
            if b not in seen:
                seen.add(b)
                tops.append(self.cands[i])
        for c in tops[:SETTINGS_TOP]:
            built = next(b for b in self.built.values() if str(b.bundle) == c.bundle)
            grid = self.space.settings.get(built.runtime, ())
            if len(grid) < 2:
                continue
            axes: list[tuple[str, list]] = [("threads", sorted({g.threads for g in grid}, reverse=True))]
            axes += [(k, list(dict.fromkeys(g.options[k] for g in grid))) for k in grid[0].options]
            self.say(f"settings for {c.engine} {c.precision} ({c.recipe.name}): "
                     + ", ".join(f"{k} {'/'.join(map(str, v))}" for k, v in axes))
            best, best_p50 = c.settings, c.latency("p50") or float("inf")
            tried = {best.label()}
            for name, values in axes:
                for v in values:
                    s = (best.model_copy(update={"threads": v}) if name == "threads"
                         else best.model_copy(update={"options": {**best.options, name: v}}))
                    if s.label() in tried:
                        continue
                    if self.out_of_time():
                        return
                    tried.add(s.label())
                    got = self._screen(built, s).latency("p50")
                    if got is not None and got < best_p50:
                        best, best_p50 = s, got

    def _phase_full(self) -> None:
        front = set(pareto(self.cands, "p50"))
        order = self._eligible()
        best: float | None = None
        done = 0
        for i in order:
            c = self.cands[i]
            on_front = i in front and self.objective != "latency"
            if done >= FULL_TOP and not on_front:
                self.cands[i] = c.model_copy(update={"reason": "screened only: not among the best few"})
                continue
            p50 = c.latency("p50")
            if best is not None and p50 is not None and p50 > best * CANNOT_BEAT and not on_front:
                self.cands[i] = c.model_copy(update={"status": "skipped", "reason": (
                    f"screening p50 {p50:.3f} ms cannot beat the best fully measured {best:.3f} ms")})
                continue
            if self.out_of_time():
                return
            self._full(i)
            done += 1
            got = self.cands[i].latency("p50")
            if got is not None:
                best = got if best is None else min(best, got)
