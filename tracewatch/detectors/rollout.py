"""Rollouts: a candidate variant of a route judged against its incumbent, per cohort.

Within a route, traffic splits by ``prompt_version``, separately by ``model``,
and by the event attribute the operator names (``TRACEWATCH_ROLLOUT_ATTRIBUTE``,
e.g. ``experiment_arm``): each is a *dimension*, each value a *variant*
(``prompt_version=v21``).
The variants seen in a route's first ``establish_s`` are established; the
incumbent of a dimension is the variant that carried most of the route's
traffic before a new one appeared (or the one the operator names). A variant
first seen later, with at least ``min_share`` of the route, is a **candidate**.

**Same minutes, not history**: from the candidate's first minute on, the judge
sums the candidate's and the incumbent's statistics over the same closed
minutes, overall and per cohort, and compares them on every automatic metric in
its direction: error rate (errors + timeouts, absolute), mean latency, cost,
input and output tokens, loop depth (relative, compared as the log of the ratio
of means with the delta-method variance), and every evaluator score's mean
(absolute; lower is better for ``hallucination`` and the configured names).
Evaluator events (``kind=eval``) count for their scores only.

**Sequential test** (``sequential.py``): each (metric, cohort) cell has a
normal-mixture confidence sequence (the always-valid mSPRT of Johari et al.
2017; Howard et al. 2021), so looking again every minute does not inflate the
false-verdict rate. Multiplicity: Bonferroni, ``alpha`` split evenly over the
cells a candidate can ever have ((``max_cohorts`` + 1 for "overall") x 14
metric slots), so the chance of any false rollback per (route, candidate) stays
below ``alpha`` over all metrics, cohorts and looks.

**Verdicts** per (route, candidate):

- ``rollback``: some cell is worse with confidence (its bound excludes 0) and
  its estimate is worse than the practical margin (``DEFAULT_MARGINS``: 10 %
  relative on cost and latency, 20 % on tokens and loop depth, 2 points of error
  rate, 0.03 on a score mean). Latched until the candidate is forgotten.
- ``promote``: after ``promote_after_s``, every overall metric is shown to be
  within its margin (the whole bound below it: non-inferiority) and no cell
  calls for a rollback.
- ``hold``: neither yet.

**Why the judge keeps its own statistics** rather than reading the minute
buckets: those are keyed by (route, model, prompt_version) without cohort, and
adding cohort to their key would multiply the rows of ``stats_1m``, the
sketches of every minute and the engine's per-route merge for every route, for
the benefit of the few routes with a canary. The tests need only counts, sums
and sums of squares (no sketches), so the judge folds each batch with a few
``np.bincount`` calls into per-minute partials of (route, prompt_version,
model, cohort), and only while a candidate is being judged does it keep running
sums per (candidate, cohort) and (incumbent, cohort): a (cohorts x 14 x 3)
array each. Minutes are folded when the Stage's watermark closes them, so the
worker and replay decide at the same event times.

Bounded state: ``max_routes`` routes (least recently seen first out),
``max_variants`` per dimension and ``max_cohorts`` per route (the rest fold into
``__other__``, never a candidate), ``max_candidates`` per route, ``MAX_SCORES``
score names (further names are not judged); variants unseen for
``forget_after_s`` are forgotten.

**A full switch** (100 % at once): the same minutes hold (almost) no incumbent
events, so after ``SWITCH_AFTER_S``, while the incumbent keeps under
``SWITCHED_SHARE`` of the two, its reference also takes in its last 10-20
minutes before the candidate appeared (the leading variant's two ``BLOCK_S``
blocks, kept per route and dimension): a before/after comparison with the same
tests, margins and verdicts ("for v20 before the switch" in the evidence). It
is weaker evidence than a canary (time confounds it: a daily swing within the
margins passes, a larger one would not), which the margins are there for.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from tracewatch.config import RolloutSettings, Settings
from tracewatch.detectors.buckets import ClosedBucket
from tracewatch.detectors.engine import Transition
from tracewatch.detectors.rollout_cells import (
    BASE_METRICS,
    DEFAULT_MARGINS,
    MAX_SCORES,
    SLOTS,
    CellResult,
    FloatArray,
    compare,
    deciding,
    evidence,
    group_sums,
    round6,
    threshold,
)
from tracewatch.schemas.alert import Alert
from tracewatch.schemas.breaker import VariantSignal, Verdict, variant_scope
from tracewatch.schemas.record import EventRecord

__all__ = [
    "ALERTNAME",
    "DEFAULT_MARGINS",
    "DIMENSIONS",
    "RolloutJudge",
    "RolloutOutput",
    "RolloutState",
]

ALERTNAME = "CanaryRegression"
OTHER = "__other__"
DIMENSIONS = ("prompt_version", "model")
#: per arm, the events a cohort cell needs to name the cohort of an overall regression
ATTRIBUTE_SAMPLES = 10
#: a full switch is judged against the incumbent's last 10-20 minutes (two blocks)
BLOCK_S = 600.0
#: and only after this long, when the same minutes hold too few incumbent events
SWITCH_AFTER_S = 180.0
SWITCHED_SHARE = 0.05
#: while held, a candidate's state is published again this often (share, evidence)
REFRESH_S = 300.0


@dataclass
class RolloutState:
    """The latest judgement of one candidate (the ``tracewatch rollouts`` row)."""

    route: str
    dimension: str
    candidate: str
    incumbent: str
    started: float
    verdict: Verdict = "hold"
    share: float = 0.0
    metric: str | None = None
    cohort: str | None = None
    evidence: str = "not enough events yet"
    n_candidate: int = 0
    n_incumbent: int = 0
    #: judged against the incumbent's minutes before a full switch
    switched: bool = False
    #: the cell the verdict names
    deciding: CellResult | None = None

    @property
    def variant(self) -> str:
        return f"{self.dimension}={self.candidate}"

    @property
    def incumbent_variant(self) -> str:
        return f"{self.dimension}={self.incumbent}"

    @property
    def weight(self) -> float:
        """The share the router may give the candidate now."""
        if self.verdict == "rollback":
            return 0.0
        if self.verdict == "promote":
            return round(min(1.0, max(2 * self.share, self.share + 0.1)), 3)
        return round(self.share, 3)


@dataclass
class RolloutOutput:
    signals: list[VariantSignal] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)


@dataclass
class _Variant:
    first: float
    last: float
    count: float = 0.0


@dataclass
class _Comparison:
    state: RolloutState
    candidate: FloatArray  # (cohorts, SLOTS, 3): n, sum, sum of squares
    incumbent: FloatArray
    route_count: float = 0.0
    #: the incumbent's minutes just before the candidate appeared (a full switch)
    before: FloatArray | None = None
    published_at: float = -math.inf
    published: Verdict | None = None
    alert: Alert | None = None


@dataclass
class _Route:
    first: float
    last: float
    cohorts: dict[str, int] = field(default_factory=dict)
    variants: dict[str, dict[str, _Variant]] = field(default_factory=dict)
    history: dict[str, _Leader] = field(default_factory=dict)
    comparisons: dict[tuple[str, str], _Comparison] = field(default_factory=dict)


@dataclass
class _Leader:
    """The leading variant of a dimension and its last 10-20 minutes (two blocks of
    ``BLOCK_S``), kept so that a full switch can be judged against them."""

    value: str
    start: float
    current: FloatArray
    previous: FloatArray | None = None

    def before(self) -> FloatArray:
        return self.current if self.previous is None else self.current + self.previous


#: (route, prompt_version, model[, the operator's attribute], cohort) after the caps
_Cell = tuple[str, ...]


class RolloutJudge:
    """Events in (``observe``), closed minutes judged (``close``); pure, event time."""

    def __init__(
        self,
        settings: RolloutSettings | None = None,
        lower_is_better: Iterable[str] = ("hallucination",),
        width_s: float = 60.0,
    ) -> None:
        self.settings = settings or RolloutSettings()
        self.lower_is_better = frozenset(lower_is_better)
        self.width_s = width_s
        self.scores: dict[str, int] = {}  # score name → slot
        self.routes: OrderedDict[str, _Route] = OrderedDict()
        self.pending: dict[float, dict[_Cell, FloatArray]] = {}
        self.folded_until = -math.inf
        cells = (self.settings.max_cohorts + 1) * SLOTS
        self.alpha_cell = self.settings.alpha / cells
        attribute = self.settings.attribute
        #: the fields traffic splits by: prompt_version, model, and the operator's attribute
        self.dimensions = DIMENSIONS + ((attribute,) if attribute else ())

    @classmethod
    def from_settings(cls, settings: Settings) -> RolloutJudge | None:
        """The judge the worker and replay both build; None when rollouts are off."""
        if not settings.rollout.enabled:
            return None
        return cls(settings.rollout, settings.detect.lower_is_better_scores)

    # -- events in -----------------------------------------------------------------------

    def observe(self, events: Sequence[EventRecord]) -> None:
        """Fold a batch into per-minute partials (a few vectorised sums per batch)."""
        if not events:
            return
        width, name = self.width_s, self.settings.attribute
        index: dict[tuple[str, str, str, str, float, str], int] = {}
        ids = np.fromiter(
            (
                index.setdefault(
                    (e.route, e.prompt_version or "", e.model or "", e.cohort or "",
                     e.ts // width * width,
                     str(e.attributes.get(name, "")) if name and e.attributes else ""),
                    len(index),
                )
                for e in events
            ),
            np.intp,
            len(events),
        )  # fmt: skip
        sums = group_sums(ids, len(index), self._values(events))
        for (route, pv, model, cohort, minute, attr), g in index.items():
            values = (pv, model, attr) if name else (pv, model)
            cell = self._capped(route, values, cohort, minute)
            if cell is None:
                continue
            bucket = self.pending.setdefault(minute, {})
            if cell in bucket:
                bucket[cell] += sums[g]
            else:
                bucket[cell] = sums[g].copy()

    def _values(self, events: Sequence[EventRecord]) -> FloatArray:
        """(events, SLOTS) values; NaN where a metric does not apply (one pass over the
        events for the request metrics, one over those with scores)."""
        n = len(events)
        out = np.full((n, SLOTS), np.nan)
        rows = np.array(
            [
                (e.kind != "eval", e.status != "ok", e.latency_ms, e.cost_usd,
                 e.input_tokens, e.output_tokens, e.loop_depth)
                for e in events
            ],
            dtype=np.float64,
        ).reshape(n, 7)  # fmt: skip
        request = rows[:, 0] > 0
        out[request, : len(BASE_METRICS)] = rows[request, 1:]
        at, slots, values = [], [], []
        known = self.scores
        for i, e in enumerate(events):
            if e.scores:
                for name, value in e.scores.items():
                    slot = known.get(name) or self._score_slot(name)
                    if slot is not None:
                        at.append(i)
                        slots.append(slot)
                        values.append(value)
        if at:
            out[at, slots] = values
        return out

    def _score_slot(self, name: str) -> int | None:
        slot = self.scores.get(name)
        if slot is None and len(self.scores) < MAX_SCORES:
            slot = self.scores[name] = len(BASE_METRICS) + len(self.scores)
        return slot

    def _capped(
        self, route: str, values: tuple[str, ...], cohort: str, minute: float
    ) -> _Cell | None:
        state = self._route(route, minute)
        if state is None:
            return None
        if cohort not in state.cohorts and len(state.cohorts) < self.settings.max_cohorts:
            state.cohorts[cohort] = len(state.cohorts)
        cohort = cohort if cohort in state.cohorts else OTHER
        capped = [
            self._variant(state, dimension, value, minute)
            for dimension, value in zip(self.dimensions, values, strict=True)
        ]
        return (route, *capped, cohort)

    def _route(self, route: str, minute: float) -> _Route | None:
        """The route's state (made if new, least recently seen evicted past the cap)."""
        state = self.routes.get(route)
        if state is None:
            if minute <= self.folded_until - self.settings.forget_after_s:
                return None  # a straggler of a route long gone
            variants: dict[str, dict[str, _Variant]] = {d: {} for d in self.dimensions}
            state = self.routes[route] = _Route(minute, minute, variants=variants)
            while len(self.routes) > self.settings.max_routes:
                self.routes.popitem(last=False)
        self.routes.move_to_end(route)
        return state

    def _variant(self, state: _Route, dimension: str, value: str, minute: float) -> str:
        known = state.variants[dimension]
        if value in known or value == "":
            return value
        if len(known) >= self.settings.max_variants:
            return OTHER
        known[value] = _Variant(minute, minute)
        return value

    # -- closed minutes judged -----------------------------------------------------------

    def close(self, until: float) -> RolloutOutput:
        """Fold and judge every pending minute that ends at or before ``until``."""
        out = RolloutOutput()
        for minute in sorted(m for m in self.pending if m + self.width_s <= until):
            self._fold(minute, self.pending.pop(minute), out)
        return out

    def finish(self) -> RolloutOutput:
        """Fold and judge every pending minute (the end of a replay)."""
        return self.close(math.inf)

    def _fold(self, minute: float, cells: dict[_Cell, FloatArray], out: RolloutOutput) -> None:
        end = minute + self.width_s
        self.folded_until = max(self.folded_until, end)
        by_route: dict[str, list[tuple[_Cell, FloatArray]]] = {}
        for cell, sums in cells.items():
            by_route.setdefault(cell[0], []).append((cell, sums))
        for route, items in by_route.items():
            state = self.routes.get(route)
            if state is not None:
                self._fold_route(route, state, minute, items, out)
        for route, state in list(self.routes.items()):
            self._forget(route, state, end, out)

    def _fold_route(
        self,
        route: str,
        state: _Route,
        minute: float,
        items: list[tuple[_Cell, FloatArray]],
        out: RolloutOutput,
    ) -> None:
        state.last = max(state.last, minute)
        for d, dimension in enumerate(self.dimensions):
            counts: dict[str, float] = {}
            for cell, sums in items:
                counts[cell[1 + d]] = counts.get(cell[1 + d], 0.0) + float(sums[:, 0].max())
            for value, count in counts.items():
                variant = state.variants[dimension].get(value)
                if variant is not None:
                    variant.count += count
                    variant.last = max(variant.last, minute)
            self._start_comparisons(route, state, dimension, minute)
            self._remember_leader(state, d, minute, items)
        total = sum(float(s[:, 0].max()) for _, s in items)
        for (dimension, value), comp in state.comparisons.items():
            d = 1 + self.dimensions.index(dimension)
            comp.route_count += total
            for cell, sums in items:
                cohort = state.cohorts.get(cell[-1], self.settings.max_cohorts)
                if cell[d] == value:
                    comp.candidate[cohort] += sums
                elif cell[d] == comp.state.incumbent:
                    comp.incumbent[cohort] += sums
            self._judge(route, state, comp, minute + self.width_s, out)

    def _start_comparisons(self, route: str, state: _Route, dimension: str, minute: float) -> None:
        for value, variant in list(state.variants[dimension].items()):
            if variant.first == minute:
                self._start_comparison(route, state, dimension, value, variant)

    def _start_comparison(
        self, route: str, state: _Route, dimension: str, value: str, variant: _Variant
    ) -> bool:
        """Judge ``value`` from now on if it is a candidate; whether it became one."""
        if (
            value == OTHER
            or variant.first < state.first + self.settings.establish_s
            or (dimension, value) in state.comparisons
            or len(state.comparisons) >= self.settings.max_candidates
        ):
            return False
        named = self.settings.incumbents.get(route, "")
        incumbent = self._incumbent(state.variants[dimension], dimension, named, value)
        if incumbent is None:
            return False
        shape = (self.settings.max_cohorts + 1, SLOTS, 3)
        leader = state.history.get(dimension)
        before = leader.before().copy() if leader and leader.value == incumbent else None
        state.comparisons[(dimension, value)] = _Comparison(
            RolloutState(route, dimension, value, incumbent, variant.first),
            np.zeros(shape),
            np.zeros(shape),
            before=before,
        )
        return True

    def _remember_leader(
        self, state: _Route, d: int, minute: float, items: list[tuple[_Cell, FloatArray]]
    ) -> None:
        """Fold this minute of the dimension's leading variant into its blocks."""
        dimension = self.dimensions[d]
        leader = state.history.get(dimension)
        if leader is None or minute >= leader.start + BLOCK_S:
            known = [(v.count, k) for k, v in state.variants[dimension].items() if k != OTHER]
            if not known:
                return
            top = max(known)[1]
            keep = leader.current if leader is not None and leader.value == top else None
            shape = (self.settings.max_cohorts + 1, SLOTS, 3)
            leader = state.history[dimension] = _Leader(top, minute, np.zeros(shape), keep)
        for cell, sums in items:
            if cell[1 + d] == leader.value:
                leader.current[state.cohorts.get(cell[-1], self.settings.max_cohorts)] += sums

    @staticmethod
    def _incumbent(
        variants: dict[str, _Variant], dimension: str, named: str, candidate: str
    ) -> str | None:
        prefix = f"{dimension}="
        if named.startswith(prefix) and named[len(prefix) :] in variants:
            return named[len(prefix) :]
        first = variants[candidate].first
        older = [(v.count, k) for k, v in variants.items() if v.first < first and k != OTHER]
        return max(older)[1] if older else None

    # -- the verdict ---------------------------------------------------------------------

    def _judge(
        self, route: str, state: _Route, comp: _Comparison, at: float, out: RolloutOutput
    ) -> None:
        s = comp.state
        n_cand = float(comp.candidate[:, :, 0].max(axis=1).sum())
        n_inc = float(comp.incumbent[:, :, 0].max(axis=1).sum())
        s.share = n_cand / comp.route_count if comp.route_count else 0.0
        s.n_candidate, s.n_incumbent = int(n_cand), int(n_inc)
        if s.share < self.settings.min_share:
            return
        if s.verdict != "rollback":
            self._decide(state, comp, at)
        due = at - comp.published_at >= REFRESH_S and s.verdict == "hold"
        if s.verdict != comp.published or due:
            out.signals.append(self._signal(s, at))
            comp.published, comp.published_at = s.verdict, at
        if s.verdict == "rollback" and comp.alert is None:
            comp.alert = self._alert(s, at)
            out.transitions.append(Transition(at, comp.alert))

    def _reference(self, comp: _Comparison, at: float) -> tuple[FloatArray, bool]:
        """The incumbent's same minutes; after a full switch (the incumbent kept under
        ``SWITCHED_SHARE`` of the two since), those plus its minutes before the switch;
        and whether it is the latter."""
        same = comp.incumbent
        if comp.before is None or at - comp.state.started < SWITCH_AFTER_S:
            return same, False
        n_same = same[:, :, 0].max(axis=1).sum()
        n_candidate = comp.candidate[:, :, 0].max(axis=1).sum()
        if n_same >= SWITCHED_SHARE * (n_same + n_candidate):
            return same, False
        return same + comp.before, True

    def _decide(self, state: _Route, comp: _Comparison, at: float) -> None:
        s = comp.state
        reference, s.switched = self._reference(comp, at)
        overall = self._cells(comp.candidate.sum(axis=0), reference.sum(axis=0), None)
        cohort_cells: list[CellResult] = []
        if len(state.cohorts) > 1:
            names = {i: c for c, i in state.cohorts.items()} | {self.settings.max_cohorts: OTHER}
            for i, name in names.items():
                cohort_cells += self._cells(
                    comp.candidate[i], reference[i], name or "(none)", ATTRIBUTE_SAMPLES
                )
        worst = deciding(overall, cohort_cells, self.settings.min_samples)
        if worst is not None:
            self._explain(s, "rollback", worst)
            return
        ready = at - s.started >= self.settings.promote_after_s
        if overall and ready and all(c.within_margin for c in overall):
            best = min(overall, key=lambda c: c.severity)
            self._explain(s, "promote", best)
        elif overall:
            blocking = max(overall, key=lambda c: c.interval.upper / c.margin)
            self._explain(s, "hold", blocking)

    def _explain(self, s: RolloutState, verdict: Verdict, cell: CellResult) -> None:
        s.verdict, s.metric, s.cohort, s.deciding = verdict, cell.metric, cell.cohort, cell
        incumbent = f"{s.incumbent} before the switch" if s.switched else s.incumbent
        s.evidence = evidence(cell, incumbent, verdict)

    def _cells(
        self, cand: FloatArray, inc: FloatArray, cohort: str | None, min_samples: int = 0
    ) -> list[CellResult]:
        results = []
        names = {slot: name for name, slot in self.scores.items()}
        least = min_samples or self.settings.min_samples
        for slot in range(SLOTS):
            if min(cand[slot, 0], inc[slot, 0]) < least:
                continue
            if slot < len(BASE_METRICS):
                metric, relative, _ = BASE_METRICS[slot]
                higher_is_worse = True
            else:
                metric, relative = f"score:{names[slot]}", False
                higher_is_worse = names[slot] in self.lower_is_better
            cell = self._compare(metric, relative, higher_is_worse, cand[slot], inc[slot], cohort)
            if cell is not None:
                results.append(cell)
        return results

    def _margin(self, metric: str) -> float:
        margins = self.settings.margins
        if metric.startswith("score:"):
            return margins.get(metric, margins.get("score", DEFAULT_MARGINS["score"]))
        return margins.get(metric, DEFAULT_MARGINS[metric])

    def _compare(
        self,
        metric: str,
        relative: bool,
        higher_is_worse: bool,
        cand: FloatArray,
        inc: FloatArray,
        cohort: str | None,
    ) -> CellResult | None:
        margin = self._margin(metric)
        return compare(
            metric, relative, higher_is_worse, cand, inc, cohort, margin, self.alpha_cell
        )

    # -- signals -------------------------------------------------------------------------

    def _signal(self, s: RolloutState, at: float) -> VariantSignal:
        return VariantSignal(
            scope=variant_scope(s.route, s.dimension, s.candidate),
            state="open" if s.verdict == "rollback" else "closed",
            reason=f"{s.verdict}: {s.evidence}",
            opened_at=_utc(at),
            ttl_s=None,
            verdict=s.verdict,
            weight=s.weight,
            route=s.route,
            variant=s.variant,
            incumbent=s.incumbent_variant,
            share=round(min(1.0, s.share), 4),
            metric=s.metric,
            cohort=s.cohort,
            evidence=s.evidence,
        )

    def _alert(self, s: RolloutState, at: float, ends: float | None = None) -> Alert:
        labels = {
            "route": s.route,
            "metric": s.metric or "",
            "variant": s.variant,
            "incumbent": s.incumbent_variant,
            "detector": "rollout",
            "severity": "critical",
        }
        if s.cohort is not None:
            labels["cohort"] = s.cohort
        identity = "\x1f".join([ALERTNAME, s.route, s.variant, str(s.started)])
        cell = s.deciding
        return Alert(
            fingerprint=hashlib.sha256(identity.encode()).hexdigest()[:16],
            status="firing" if ends is None else "resolved",
            alertname=ALERTNAME,
            labels=labels,
            # 6 significant digits: sums in another batch order differ in the last bits
            value=None if cell is None else round6(cell.candidate),
            baseline=None if cell is None else round6(cell.incumbent),
            threshold=None if cell is None else round6(threshold(cell)),
            starts_at=_utc(at),
            ends_at=None if ends is None else _utc(ends),
            summary=f"canary {s.variant} on {s.route}: {s.evidence}",
        )

    def _forget(self, route: str, state: _Route, now: float, out: RolloutOutput) -> None:
        horizon = now - self.settings.forget_after_s
        for dimension in self.dimensions:
            variants = state.variants[dimension]
            for value in [v for v, info in variants.items() if info.last + self.width_s < horizon]:
                del variants[value]
        for key, comp in list(state.comparisons.items()):
            dimension, value = key
            known = state.variants[dimension]
            if value in known and comp.state.incumbent in known:
                continue
            del state.comparisons[key]
            if comp.alert is not None:
                resolved = comp.alert.model_copy(
                    update={"status": "resolved", "ends_at": _utc(now)}
                )
                out.transitions.append(Transition(now, resolved))
        if state.last + self.width_s < horizon and not state.comparisons:
            del self.routes[route]

    # -- warm-up after a restart ---------------------------------------------------------

    def restore(self, history: Sequence[ClosedBucket]) -> int:
        """Rebuild which variants are candidates from the closed minutes of the last hour
        (``stats_1m``, the worker's warm-up); returns the candidates judged again.

        The minutes have no cohort and no sums of squares, so the comparisons start
        empty at the end of ``history``; each keeps its original start (its promotion
        clock, and the fingerprint of a ``CanaryRegression`` fired again). A canary
        that began more than about an hour before the restart counts as established.
        """
        for bucket in sorted(history, key=lambda b: b.start):
            if bucket.late or not bucket.stats.count:
                continue
            route, model, pv = bucket.key
            state = self._route(route, bucket.start)
            if state is None:
                continue
            for dimension, raw in zip(DIMENSIONS, (pv, model), strict=True):
                value = self._variant(state, dimension, raw, bucket.start)
                variant = state.variants[dimension].get(value)
                if variant is not None:
                    variant.first = min(variant.first, bucket.start)
                    variant.last = max(variant.last, bucket.start)
                    variant.count += bucket.stats.count
            state.first = min(state.first, bucket.start)
            state.last = max(state.last, bucket.start)
        started = 0
        for route, state in self.routes.items():
            for dimension in self.dimensions:
                for value, variant in list(state.variants[dimension].items()):
                    started += self._start_comparison(route, state, dimension, value, variant)
        if history:
            self.folded_until = max(b.start + b.width for b in history)
        return started

    # -- readings ------------------------------------------------------------------------

    def states(self) -> list[RolloutState]:
        """Every candidate being judged, by route."""
        return [c.state for r in self.routes.values() for c in r.comparisons.values()]

    def firing(self) -> list[Alert]:
        return [c.alert for r in self.routes.values() for c in r.comparisons.values() if c.alert]


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)
