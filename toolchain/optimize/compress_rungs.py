"""``edgeify optimize --compress prune,distill[,qat]``: compression as rungs of the search (issue 25).

* **QAT** (``qat``) is a rung of the quantization ladder, tried first where an engine's int8 misses the accuracy
  budget (or its parity gate): the source is fine-tuned with fake-quant once (``edgeify.compress``), then built
  by that engine's own int8 quantizer and parity gate. Where it holds the budget, the engine's ladder stops
  there (every compute op stays int8); where it does not, the ladder goes on as without ``--compress``
  (other recipes, layers kept in float, fp16, fp32).
* **prune + distill** (``prune``, ``distill``): after the uncompressed search, the source is pruned at each of
  :data:`RATIOS` (fraction of channels removed) and fine-tuned against the ORIGINAL model as teacher, then
  searched like any source, int8 only (the engines' int8 builds, screening, run-time settings, full protocol).
* Accuracy of every compressed candidate is the drop against the ORIGINAL model on labelled ``--eval``
  (:class:`_Rebased`), not against the compressed intermediate its parity gate checks.
* A compressed candidate is kept only on the Pareto front (latency, accuracy drop, size) of the whole run
  (:func:`choose_kept`); ``compression`` (phases, ratio, MACs, accuracy vs the original, ``on_front``) is in
  every candidate (None: not compressed).

Training data (``--train``) and the sources compression can fine-tune are checked before anything is built.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgeify.compress.data import load_train
from edgeify.compress.options import CompressOptions, parse_duration
from edgeify.compress.run import compress_source, original_accuracy, refuse_unsupported
from edgeify.data import load_dataset
from edgeify.errors import EdgeifyError, UsageError
from edgeify.preflight import n_classes
from edgeify.sources import open_source
from edgeify_runtime.envelope import sigterm_as_interrupt

from .candidates import Built, CandidateBuilder, Inputs
from .choose import accuracy_ok, choose, pareto, tied
from .ladder import _rung, run_ladder
from .records import Accuracy, Budgets, Candidate, Objective, Rung
from .search import Search
from .space import ArtifactPlan

PHASES = ("prune", "distill", "qat")
#: prune ratios tried (fraction of the channels removed)
RATIOS = (0.25, 0.5, 0.75)
#: share of --max-time the uncompressed search (and its ladder) may use before the compression rungs
MAIN_SHARE = 0.4
#: training budget of one compressed candidate when neither --train-time nor --epochs is given (seconds, at most)
DEFAULT_TRAIN_S = 60.0


@dataclass(frozen=True)
class CompressRequest:
    """What ``--compress`` asks for: the phases, the training data and budget, the prune ratios."""

    phases: tuple[str, ...]
    train: str
    train_seconds: float | None = None
    epochs: int | None = None
    ratios: tuple[float, ...] = RATIOS
    #: Adam learning rate of every training in the run (None: edgeify.compress's default, 1e-3)
    lr: float | None = None

    @property
    def prunes(self) -> bool:
        return "prune" in self.phases

    @property
    def qat(self) -> bool:
        return "qat" in self.phases


def parse_compress(text: str | None, train: str | None, train_time: str | None = None,
                   epochs: int | None = None, ratios: Sequence[float] | None = None,
                   lr: float | None = None) -> CompressRequest | None:
    """``--compress prune,distill,qat`` (with ``--train``) as a request; None without ``--compress``."""

    if text is None or not text.strip():
        if train is not None or train_time is not None or epochs is not None or lr is not None:
            raise UsageError("--train/--train-time/--epochs/--train-lr are for --compress",
                             hint="add --compress prune,distill (and/or qat)")
        return None
    phases = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    bad = [p for p in phases if p not in PHASES]
    if bad or not phases:
        raise UsageError(f"--compress {text!r}: unknown phase(s) {', '.join(bad) or '(none)'}",
                         hint="a comma-separated list of prune, distill, qat; e.g. --compress prune,distill,qat")
    if "distill" in phases and "prune" not in phases:
        raise UsageError("--compress distill: distillation fine-tunes a pruned student against the source model",
                         hint="--compress prune,distill (and qat for quantization-aware fine-tuning)")
    if train is None:
        raise UsageError(f"--compress {','.join(phases)} trains the model and needs training data",
                         hint="pass --train train.npz (the inputs, optional `labels`) or --train pkg.mod:factory")
    if epochs is not None and epochs < 1:
        raise UsageError(f"--epochs {epochs}: at least 1")
    if lr is not None and not lr > 0:
        raise UsageError(f"--train-lr {lr}: a positive learning rate", hint="e.g. --train-lr 0.001")
    return CompressRequest(phases=phases, train=str(train), epochs=epochs,
                           train_seconds=None if train_time is None else parse_duration(train_time),
                           ratios=tuple(ratios) if ratios else RATIOS, lr=lr)


def check(req: CompressRequest, inp: Inputs) -> None:
    """Before anything is built: the source kind (pruning needs the eager module), labelled ``--eval`` (the drop
    against the original is measured on it) and the training data (``DataError``, exit 7)."""

    if inp.eval is None or inp.accuracy_measure != "labels":
        raise UsageError("--compress needs labelled --eval data: every compressed candidate's accuracy is measured "
                         "against the original model on it",
                         hint="pass --eval eval.npz with the inputs and `labels`")
    source = open_source(inp.model, list(inp.input_shapes) or None, trust_source=inp.trust_source)
    refuse_unsupported(source, CompressOptions(train=req.train, prune=0.5 if req.prunes else None,
                                               distill="distill" in req.phases, qat=req.qat))
    inputs, outputs = source.pre_signature()
    load_train(req.train, list(inputs), n_classes(outputs) if outputs else None)


class _Rebased:
    """A candidate builder whose builds report the accuracy drop against the ORIGINAL model (labelled --eval)."""

    def __init__(self, inner: CandidateBuilder, original: float) -> None:
        self.inner, self.original = inner, original
        #: the compressed model's own top-1 on --eval (what its builds' parity gate and accuracy were against)
        self.compressed: float | None = None

    def prefetch(self, inp: Inputs, plans: Sequence[tuple[ArtifactPlan, int]], deadline: float) -> None:
        self.inner.prefetch(inp, plans, deadline)

    def build(self, inp: Inputs, plan: ArtifactPlan, index: int) -> Built:
        built = self.inner.build(inp, plan, index)
        if built.accuracy is not None and built.accuracy.source_accuracy is not None:
            self.compressed = built.accuracy.source_accuracy
        return dataclasses.replace(built, accuracy=rebase(built.accuracy, self.original))

    def close(self) -> None:
        return None  # the inner builder is the run's: closed by it


def rebase(acc: Accuracy | None, original: float) -> Accuracy | None:
    if acc is None or acc.built_accuracy is None:
        return acc
    return acc.model_copy(update={"drop": round((original - acc.built_accuracy) * 100, 3),
                                  "source_accuracy": original})


class _RungSearch(Search):
    """The search of one compressed source: int8 only, no ladder (its accuracy is judged end to end)."""

    def _phase_ladder(self) -> None:
        return None


class CompressSearch(Search):
    """:class:`Search` with the compression rungs: QAT first in each ladder, prune+distill after the search."""

    def __init__(self, req: CompressRequest, inp: Inputs, *args: Any, **kw: Any) -> None:
        super().__init__(inp, *args, **kw)
        self.req = req
        self._all_time = self.budgets.max_time_s
        self.deadline = self._t0 + MAIN_SHARE * self._all_time
        self._original: float | None = None
        self._rung_no = 0
        self._qat: tuple[Any, dict[str, Any]] | None = None

    def run(self) -> None:
        super().run()
        if self.stopped.startswith("--max-time") and not self.interrupted:
            self.say(f"the uncompressed search used its share ({MAIN_SHARE:.0%}) of --max-time: compression next")
            self.stopped = ""
        self.deadline = self._t0 + self._all_time
        if self.interrupted or not self.req.prunes:
            return

        try:
            with sigterm_as_interrupt():
                self._prune_rungs()
        except KeyboardInterrupt:
            self.interrupted = True
            self.stopped = (f"interrupted (Ctrl-C / SIGTERM) during the compression rungs after {len(self.cands)} "
                            f"candidate(s); reporting the best so far")
            self.say(self.stopped)
        except EdgeifyError:
            raise
        except Exception as exc:  # a training tool failed: keep what was measured
            text = str(exc).strip().splitlines()
            why = f"compression phase failed: {type(exc).__name__}: " + (text[0][:300] if text else "")
            self.failures.append(why)
            self.say(why)

    # -- QAT: the first rung of each ladder ----------------------------------------------------------------
    def _phase_ladder(self) -> None:
        for engine in self.spec.engines:
            base = self.built.get(self._key(ArtifactPlan(engine=engine, precision="int8")))
            if base is None or self.accuracy_ok(base) or self.out_of_time():
                continue
            self.say(f"{engine} int8 misses the accuracy budget or parity gate: quantization ladder"
                     + (", QAT first" if self.req.qat else ""))
            qat_rungs: list[Rung] = []
            if self.req.qat:
                got = self._qat_rung(engine, base)
                qat_rungs = [got[0]]
                if got[1]:
                    self.ladders[engine] = [_base_rung(base, self.p50.get(self._key(base.plan))), *qat_rungs]
                    self.say(f"{engine} ladder: QAT int8 holds the budget")
                    continue
            rungs, got2 = run_ladder(self, base, self.p50.get(self._key(base.plan)), self.spec)
            self.ladders[engine] = [rungs[0], *qat_rungs, *rungs[1:]]
            self.say(f"{engine} ladder: " + (f"{got2.plan.precision} ({got2.plan.recipe.name}) holds the budget"
                                             if got2 else "no rung met the budget"))

    def _qat_rung(self, engine: str, base: Built) -> tuple[Rung, bool]:
        if self._qat is None:  # trained once: the fine-tuning does not depend on the engine
            self._qat = self._compress("qat", CompressOptions(train=self.req.train, qat=True, **self._budget(1)))
        cands = self._search(*self._qat, engines=(engine,))
        mine = [c for c in cands if c.engine == engine and c.status in ("screened", "measured")]
        best = min(mine, key=lambda c: c.latency("p50") or float("inf"), default=None)
        if best is None:
            why = next((c.reason for c in cands if c.reason), "not built")
            return Rung(rung="qat", engine=engine, precision="int8", recipe=base.plan.recipe, reason=why), False
        ok = accuracy_ok(best, self.budgets)
        return Rung(rung="qat", engine=engine, precision="int8", recipe=best.recipe, accuracy_drop=best.accuracy_drop,
                    parity_passed=bool(best.accuracy and best.accuracy.parity_passed),
                    cosine=best.accuracy.cosine if best.accuracy else None, latency_p50_ms=best.latency("p50"),
                    quantized_ops=best.quantized_ops, total_ops=best.total_ops, accepted=ok,
                    reason="fake-quant fine-tuned, then the engine's int8; drop against the original model"), ok

    # -- prune + distill -----------------------------------------------------------------------------------
    def _prune_rungs(self) -> None:
        distill = "distill" in self.req.phases
        for i, ratio in enumerate(self.req.ratios):
            if self.out_of_time():
                return
            opts = CompressOptions(train=self.req.train, prune=ratio, distill=distill,
                                   **self._budget(len(self.req.ratios) - i))
            got = self._compress(f"prune {ratio:g}" + (" + distill" if distill else ""), opts)
            self._search(*got, engines=self._filters[0])

    def _budget(self, rungs_left: int) -> dict[str, Any]:
        """The training budget (and lr) of one compressed candidate: the user's, else a share of the time left."""
        lr = {} if self.req.lr is None else {"lr": self.req.lr}
        if self.req.train_seconds is not None or self.req.epochs is not None:
            return {"train_seconds": self.req.train_seconds, "epochs": self.req.epochs, **lr}
        left = max(5.0, self.deadline - time.monotonic())
        return {"train_seconds": min(DEFAULT_TRAIN_S, left / max(rungs_left, 1) / 2), "epochs": None, **lr}

    def original_accuracy(self) -> float:
        """The original model's top-1 on --eval: as the uncompressed builds measured it, else computed here."""
        if self._original is None:
            known = [c.accuracy.source_accuracy for c in self.cands
                     if c.compression is None and c.accuracy is not None and c.accuracy.measure == "labels"
                     and c.accuracy.source_accuracy is not None]
            self._original = known[0] if known else _original_accuracy(self.inp)
        return self._original

    def _compress(self, label: str, opts: Any) -> tuple[Any, dict[str, Any]]:
        """Compress the source with ``opts`` (``edgeify.compress``: training with its progress bar on stderr)."""

        self._rung_no += 1
        work = self.inp.work / f"compress-{self._rung_no}"
        budget = " / ".join(x for x in (f"{opts.budget_seconds:g} s" if opts.budget_seconds else "",
                                         f"{opts.epochs} epoch(s)" if opts.epochs else "") if x)
        self.say(f"compression rung {label}: fine-tuning on {self.req.train} ({budget})")
        source = open_source(self.inp.model, list(self.inp.input_shapes) or None, trust_source=self.inp.trust_source)
        comp = compress_source(source, opts, work / "model", self.say)
        rec = comp.record
        record = {"phases": list(rec["steps"]), "prune_ratio": opts.prune, "distilled": opts.distill,
                  "qat": opts.qat, "macs": rec.get("macs"), "params": rec.get("params"),
                  "original_accuracy": self.original_accuracy(),
                  "training": [rec[p] for p in ("distill", "qat") if p in rec], "seconds": rec["seconds"],
                  "model_sha256": rec["model_sha256"]}
        return comp, record

    def _search(self, comp: Any, record: dict[str, Any], engines: tuple[str, ...] | None) -> list[Candidate]:
        """Search the compressed model (int8; accuracy against the original), add its candidates; returns them."""
        self._rung_no += 1
        inp = dataclasses.replace(self.inp, model=str(comp.source.path), input_shapes=(),
                                  work=self.inp.work / f"compress-search-{self._rung_no}")
        inp.work.mkdir(parents=True)
        builder = _Rebased(self.builder, record["original_accuracy"])
        left = max(1.0, self.deadline - time.monotonic())
        sub = _RungSearch(inp, self.spec, self.facts, self.budgets.model_copy(update={"max_time_s": left}),
                          self.objective, self.device, self.run_id, self.full, self.say, engines=engines,
                          precisions=("int8",), builder=builder)
        sub.run()
        self.failures += sub.failures
        added = []
        for c in sub.cands:
            rec = {**record, "compressed_accuracy": builder.compressed, "accuracy_drop": c.accuracy_drop,
                   "on_front": None}
            added.append(c.model_copy(update={"compression": rec}))
        self.cands += added
        if sub.interrupted:
            raise KeyboardInterrupt
        return added


def _base_rung(base: Built, p50: float | None) -> Rung:
    return _rung("int8", base, p50, False, "missed the accuracy budget or parity gate")


def _original_accuracy(inp: Inputs) -> float:
    source = open_source(inp.model, list(inp.input_shapes) or None, trust_source=inp.trust_source)
    inputs, outputs = source.pre_signature()
    data = load_dataset(inp.eval or "", list(inputs), purpose="evaluation", need_labels=True,
                        preprocess=inp.preprocess, n_classes=n_classes(outputs) if outputs else None)
    return original_accuracy(source, data, len(outputs) if outputs else 1)


def mark_front(cands: Sequence[Candidate], percentile: str) -> list[Candidate]:
    """Each compressed candidate's ``compression.on_front``: on the run's Pareto front (latency, accuracy drop,
    size) or not; one off the front is not kept (never chosen; its row says why)."""
    front = set(pareto(cands, percentile))
    out = []
    for i, c in enumerate(cands):
        if c.compression is not None:
            on = i in front
            upd: dict[str, Any] = {"compression": {**c.compression, "on_front": on}}
            if not on and c.status in ("screened", "measured"):
                upd["reason"] = ((c.reason + "; ") if c.reason else "") + \
                    "not kept: compressed but not on the Pareto front (latency, accuracy drop, size)"
                upd["meets_budget"] = False
            c = c.model_copy(update=upd)
        out.append(c)
    return out


def choose_kept(cands: Sequence[Candidate], budgets: Budgets, objective: Objective) -> int | None:
    """``choose`` among the candidates kept: every uncompressed one, the compressed ones on the Pareto front. A
    compressed winner must beat the best uncompressed candidate beyond noise on the objective: tied, the
    uncompressed one is simpler (no fine-tuned weights) and wins."""
    keep = [i for i, c in enumerate(cands) if c.compression is None or c.compression.get("on_front") is not False]
    j = choose([cands[i] for i in keep], budgets, objective)
    if j is None:
        return None
    winner = cands[keep[j]]
    if winner.compression is not None:
        plain = [i for i in keep if cands[i].compression is None]
        k = choose([cands[i] for i in plain], budgets, objective)
        if k is not None and tied(cands[plain[k]], winner, objective, budgets.percentile):
            return plain[k]
    return keep[j]


def label(c: Candidate) -> str:
    """The table's short compression label: ``prune 0.5+kd``, ``qat``, ``prune 0.5+kd+qat``; '' when none."""
    comp = c.compression
    if not comp:
        return ""
    parts = [f"prune {comp['prune_ratio']:g}"] if comp.get("prune_ratio") else []
    parts += ["kd"] if comp.get("distilled") else []
    parts += ["qat"] if comp.get("qat") else []
    return "+".join(parts)
