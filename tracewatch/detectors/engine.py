"""Closed minutes in, alert transitions out: detectors, rules and lifecycle together.

The worker and ``tracewatch replay`` both feed this engine the buckets the
watermark closed, in event time, and publish what it returns; nothing here reads
a clock or does I/O, so the same events give the same alerts in both.

Per route (see ``route_minutes`` for why not per model and prompt version):

- **Automatic watches**, no configuration: p95 cost, p95 latency, mean input and
  output tokens and every evaluator score's mean are judged by a step test
  (``StepDetector``: the recent window against the route's local trend, with a
  standard error from the per-minute dispersion and counts, and a practical
  minimum effect per metric), with the older ratio test (``BaselineDetector``:
  5-minute median >= 1.5x the 60-minute median and robust z > 4) beside it:
  either one breaching is a breach. p95 loop depth has the ratio test alone.
  Scores are watched downwards, or upwards for lower-is-better scores such as
  ``hallucination``. Rates (``RateDetector``, a two-proportion test): errors
  (errors + timeouts), timeouts alone, calls retried, and per guardrail name
  its block and redact rates. Alertnames ``CostP95High``, ``LatencyP95High``,
  ``InputTokensHigh``, ``OutputTokensHigh``, ``LoopDepthHigh``, ``ScoreLow``,
  ``ScoreHigh`` (``detector`` label ``baseline``), ``ErrorRateHigh``
  (``error_rate``), ``TimeoutRateHigh``, ``RetryRateHigh``,
  ``GuardrailBlockRateHigh``, ``GuardrailRedactRateHigh`` (``rate``; the last
  two with a ``guardrail`` context label and the name in ``metric``).
  A model or prompt version first seen on the route at a step's estimated start
  (``DEPLOY_LEAD_S`` before it at most) is named as its likely change point:
  context label ``change_point`` and a line in the summary.
- **Drift watches**, opt-in (``AlertEngine(drift=True)``, or ``drift:`` rules):
  a sustained level shift of p95 cost (``CostLevelShift``) and p95 latency
  (``LatencyLevelShift``), ``detector`` label ``drift``, severity ``info``. See
  "Drift watches" below.
- **Rules** from the rules file: static thresholds (``detector=threshold``),
  baseline-relative rules (``detector=baseline``) and drift rules
  (``detector=drift``), each with its own lifecycle durations and severity,
  per-route overrides applied.

Every observation goes through an ``AlertLifecycle`` (pending → firing →
resolved in event time). Labels: ``route``, ``metric``, ``detector``,
``severity`` identify the alert (the fingerprint); ``model`` and
``prompt_version`` name what carried the route's traffic when it fired.

State is bounded: at most ``max_routes`` routes (least recently seen evicted),
at most ``MAX_SCORES_PER_ROUTE`` score names per route, and one small detector
per route and metric (about 65 minutes of values, plus one ADWIN per drift watch).

Drift watches (``LevelShiftDetector``): river's ADWIN over the *normalised*
minute statistic ``log(value / reference)`` -- never raw dollars or ms, so one
``delta`` fits a $0.0002 route and a $0.2 one -- where the reference is the
median of the statistic over the previous ``history`` (60) accepted minutes,
excluding the newest 5. A watch is **breached** while ADWIN detected a change
within the last ``within`` (30) minutes of event time AND the level since that
change is at least ``min_shift`` times the reference (or at most 1/``min_shift``
of it; either way unless the rule says ``direction: up`` or ``down``). So it
fires on a sustained level shift -- ADWIN needs a quarter of an hour of the new
level, the baseline watches a few minutes -- and resolves when the level is back
or the detection is old (the reference takes in a kept new level after about
half its history). A slow drift moves the ratio to a trailing reference by a
few per cent only (+30 % over 4 h: about 1.04), so it never reaches
``min_shift``. Summaries read "p95 cost per request on X shifted to 1.40x its
earlier level (ADWIN): $0.0042 vs $0.0030 over the previous 60 min"; the alert's
``value`` is that level, ``baseline`` the reference, ``threshold`` reference x
(or /) ``min_shift``.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, NamedTuple

from tracewatch.config import DetectSettings
from tracewatch.detectors.baseline import BaselineDetector, RateDetector
from tracewatch.detectors.buckets import ClosedBucket
from tracewatch.detectors.drift import LevelShiftDetector
from tracewatch.detectors.lifecycle import AlertLifecycle, LifecyclePolicy, Observation
from tracewatch.detectors.route_minutes import RouteMinute, route_minutes
from tracewatch.detectors.stats import BucketStats
from tracewatch.detectors.step import Scale, StepDetector
from tracewatch.schemas.alert import Alert
from tracewatch.schemas.rules import ResolvedRule, RulesFile, load_rules

__all__ = [
    "AUTO_POLICY",
    "AUTO_WATCHES",
    "DRIFT_WATCHES",
    "AlertEngine",
    "AutoWatch",
    "DriftWatch",
    "Transition",
    "describe",
]

MAX_SCORES_PER_ROUTE = 32
#: Guardrails (by ``guardrail_name``) watched per route, and their alertnames.
MAX_GUARDRAILS = 16
GUARDRAIL_ALERTS = ("GuardrailBlockRateHigh", "GuardrailRedactRateHigh")
#: Models and prompt versions remembered per route, to tell a new one (a deployment).
MAX_CARRIERS_PER_ROUTE = 64
#: A deployment this long before a step's estimated start still counts as its
#: likely cause: the estimate is the first minute of the window that tested best,
#: and a canary can carry a new version for a few minutes before it takes over.
DEPLOY_LEAD_S = 10 * 60.0

#: Lifecycle of automatic alerts: a breach must still hold one closed minute
#: later, clear for five minutes to resolve, and then ten minutes pass before the
#: same alert can fire again. bench/detection over 30 seeds: firing at once
#: (for 0) was a minute faster but raised one false alarm on clean traffic (an
#: agent route's heavy-tailed latency); with the minute of hold, none.
AUTO_POLICY = LifecyclePolicy(for_s=60.0, resolve_after_s=300.0, cooldown_s=600.0)


class Transition(NamedTuple):
    """An alert transition and the event time at which the engine decided it."""

    at: float
    alert: Alert


@dataclass(frozen=True)
class AutoWatch:
    """One automatic watch: which statistic, which way is bad, how sensitive."""

    alertname: str
    metric: str
    stat: str
    direction: Literal["up", "down"] = "up"
    min_ratio: float = 1.5
    min_z: float = 4.0
    min_count: int = 5
    #: the evidence-based step test (``StepDetector``) beside the ratio test
    #: (``BaselineDetector`` with ``min_ratio``/``min_z``); None: the ratio test alone
    scale: Scale | None = "log"
    min_effect: float = 0.15


#: The automatic watches of every route (score watches are added per score name).
AUTO_WATCHES: tuple[AutoWatch, ...] = (
    AutoWatch("CostP95High", "cost_usd", "p95"),
    AutoWatch("LatencyP95High", "latency_ms", "p95"),
    AutoWatch("InputTokensHigh", "input_tokens", "mean", min_effect=0.2),
    AutoWatch("OutputTokensHigh", "output_tokens", "mean", min_effect=0.2),
    # a p95 of small integers moves in whole steps (3 -> 4 is x1.33): the ratio test
    AutoWatch("LoopDepthHigh", "loop_depth", "p95", scale=None),
)
#: The step test's significance bar (``StepDetector.min_z``) for the automatic watches.
STEP_MIN_Z = 4.0
#: The practical minimum a score mean must fall (or a lower-is-better one rise).
SCORE_MIN_EFFECT = 0.03
#: Below this many observations a minute the step test's bar is raised
#: (``StepDetector.low_count``): 60 for p95s (a p95 of fewer calls is nearly
#: their maximum, far from normal) and token means (heavy-tailed: with 10, a mean
#: of ~20 output tokens counts raised a false alarm in bench/detection seed 4);
#: 10 for score means (bounded, so a mean of 45 scores is close to normal: with
#: 60, bench/sensitivity seeds 100-109 caught a 0.05 groundedness drop at
#: 3 requests/s in 7 of 10 streams, with 10 in all).
STEP_LOW_COUNT = 60
MEAN_LOW_COUNT = 10
#: The automatic error-rate watch judges a 5-minute window from 20 calls on
#: (RateDetector's default of 50 left a 15-calls-a-minute route blind at its
#: daily low; bench/detection missed 2 of 20 error bursts there).
RATE_MIN_WINDOW_EVENTS = 20


@dataclass(frozen=True)
class DriftWatch:
    """One automatic drift watch (``AlertEngine(drift=True)``): which statistic, how big a shift."""

    alertname: str
    metric: str
    stat: str
    min_shift: float = 1.3
    delta: float = 0.01


#: The drift watches every route gets when drift detection is switched on.
#: Defaults measured with the demo scenarios (pure pipeline, seeds 0-9, then 10-19
#: held out): x2-3 cost and latency steps seen after a median 16 (15-18) minutes,
#: at worst 36; no false alarm in 2 000 route-hours (400 of distinct background:
#: the kinds of a seed share it), and no ADWIN detection at all on a route without
#: an incident, the slowly drifting one included. A delta of 0.05 was 3 minutes
#: faster, but ADWIN then fired on quiet routes and only min_shift stood between
#: them and an alert (levels up to 1.24); 0.2 raised false alarms (report/writer
#: latency, heavy-tailed at 15 calls a minute); 0.002 took 4 minutes longer.
DRIFT_WATCHES: tuple[DriftWatch, ...] = (
    DriftWatch("CostLevelShift", "cost_usd", "p95"),
    DriftWatch("LatencyLevelShift", "latency_ms", "p95"),
)
DRIFT_SEVERITY = "info"

# Scores live in [0, 1]: a drop from 0.85 to 0.6 is only a factor 1.42, so the
# relative guard is smaller than for costs. Evaluators score a fraction of the
# calls, so a minute often has only a few scores: a minute counts from 3, and
# the z guard is 3 (against the scatter of single minutes, for a 5-minute
# median) — at 5 and 4, a quality drop on a quiet route took up to 17 minutes.
_SCORE_MIN_RATIO = 1.2
_SCORE_MIN_Z = 3.0
_SCORE_MIN_COUNT = 3


def _score_watch(name: str, lower_is_better: bool, min_effect: float) -> AutoWatch:
    metric = f"score:{name}"
    if lower_is_better:
        return AutoWatch(
            "ScoreHigh", metric, "mean", "up", 1.5, _SCORE_MIN_Z, _SCORE_MIN_COUNT,
            "linear", min_effect,
        )  # fmt: skip
    return AutoWatch(
        "ScoreLow", metric, "mean", "down", _SCORE_MIN_RATIO, _SCORE_MIN_Z, _SCORE_MIN_COUNT,
        "linear", min_effect,
    )  # fmt: skip


# --------------------------------------------------------------------------- wording

_NOUNS = {
    "cost_usd": "cost per request",
    "latency_ms": "latency",
    "input_tokens": "input tokens per call",
    "output_tokens": "output tokens per call",
    "loop_depth": "agent loop depth",
    "error_rate": "error rate",
    "timeout_rate": "timeout rate",
    "retry_rate": "share of calls retried",
}
#: Rate metrics of one guardrail (``<prefix><guardrail_name>``) and their words.
GUARDRAIL_RATES = {"guardrail_block_rate:": "block", "guardrail_redact_rate:": "redact"}


def describe(metric: str, stat: str) -> str:
    """Words for a statistic: ``p95 cost per request``, ``mean groundedness score``."""
    if metric.startswith("score:"):
        return f"mean {metric[len('score:') :]} score"
    for prefix, action in GUARDRAIL_RATES.items():
        if metric.startswith(prefix):
            return f"{action} rate of guardrail {metric[len(prefix) :]}"
    noun = _NOUNS[metric]
    return noun if stat == "rate" else f"{stat} {noun}"


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric == "cost_usd":
        return f"${value:.4g}"
    if metric == "latency_ms":
        return f"{value:,.0f} ms"
    if metric.endswith("_rate") or "_rate:" in metric:
        return f"{value:.1%}"
    if metric.startswith("score:"):
        return f"{value:.3f}"
    return f"{value:,.1f}"


# --------------------------------------------------------------------------- watches


@dataclass
class _Watch:
    """One detector on one route, and how its observations are labelled and worded."""

    alertname: str
    metric: str
    stat: str
    detector: str  # the labels.detector value
    severity: str
    lifecycle: AlertLifecycle
    baseline: BaselineDetector | None = None
    rate: RateDetector | None = None
    rule: ResolvedRule | None = None
    drift: LevelShiftDetector | None = None
    step: StepDetector | None = None

    def observe(self, minute: RouteMinute, context: dict[str, str]) -> Observation | None:
        """Fold the minute in; None when the minute says nothing (no data, too few calls)."""
        if self.rate is not None:
            return self._observe_rate(minute, context)
        value, weight = minute.value(self.metric, self.stat)
        if self.step is not None:
            return self._observe_step(minute, value, weight, context)
        if self.drift is not None:
            self.drift.update(minute.end, value, weight)
            if self.drift.last_ts != minute.end:
                return None
            return self._drift_observation(minute, context)
        if self.baseline is not None:
            self.baseline.update(minute.end, value, weight)
            if self.baseline.last_ts != minute.end:
                return None
            return self._baseline_observation(minute, context)
        if value is None or self.rule is None:
            return None
        return self._threshold_observation(minute, value, context)

    def _labels(self, route: str) -> dict[str, str]:
        return {
            "route": route,
            "metric": self.metric,
            "detector": self.detector,
            "severity": self.severity,
        }

    def _baseline_observation(self, m: RouteMinute, context: dict[str, str]) -> Observation:
        d = self.baseline
        assert d is not None
        base, now = d.baseline_value, d.window_value
        threshold = None
        if base is not None:
            threshold = base * d.min_ratio if d.direction == "up" else base / d.min_ratio
        summary = ""
        if d.ratio is not None:
            what = describe(self.metric, self.stat)
            moved = "is" if d.ratio >= 1 else "fell to"
            summary = (
                f"{what} on {m.route} {moved} {d.ratio:.2f}x its baseline "
                f"({_fmt(self.metric, now)} vs {_fmt(self.metric, base)} over the previous "
                f"{d.baseline_minutes} min)"
            )
        return Observation(
            self.alertname,
            self._labels(m.route),
            m.end,
            d.breached,
            value=now,
            baseline=base,
            threshold=threshold,
            summary=summary,
            context=context,
        )

    def _observe_step(
        self, m: RouteMinute, value: float | None, weight: int, context: dict[str, str]
    ) -> Observation | None:
        """The step test, with the ratio test (``min_ratio`` and ``min_z``) beside it.

        Either breaching is a breach: the ratio test still catches the large steps
        of the noisiest routes (heavy tails at a few calls a minute), where the step
        test's normal approximation is not trusted with a low bar.
        """
        step, ratio = self.step, self.baseline
        assert step is not None
        step.update(m.end, value, weight)
        if ratio is not None:
            ratio.update(m.end, value, weight)
            if ratio.breached and ratio.last_ts == m.end and not step.breached:
                return self._baseline_observation(m, context)
        if step.last_ts != m.end:
            return None
        return self._step_observation(m, context)

    def _step_observation(self, m: RouteMinute, context: dict[str, str]) -> Observation:
        d = self.step
        assert d is not None
        now, expected, effect = d.window_value, d.baseline_value, d.effect
        summary = ""
        if effect is not None and d.z is not None and d.change_ts is not None:
            what = describe(self.metric, self.stat)
            if d.scale == "log":
                moved = f"{'is' if effect >= 1 else 'fell to'} {effect:.2f}x its baseline"
            else:
                way = "rose" if effect >= 0 else "fell"
                moved = f"{way} by {abs(effect):.3f} from its baseline"
            minutes = round((m.end - d.change_ts) / 60.0)
            summary = (
                f"{what} on {m.route} {moved} ({_fmt(self.metric, now)} vs "
                f"{_fmt(self.metric, expected)} expected from the previous "
                f"{d.baseline_minutes} min; z={d.z:.1f} over the last {minutes} min)"
            )
        return Observation(
            self.alertname,
            self._labels(m.route),
            m.end,
            d.breached,
            value=now,
            baseline=expected,
            threshold=d.threshold,
            summary=summary,
            context=context,
        )

    def _drift_observation(self, m: RouteMinute, context: dict[str, str]) -> Observation:
        d = self.drift
        assert d is not None
        base, level, now = d.reference, d.level, d.value
        threshold, summary = None, ""
        if base is not None and level is not None:
            up = d.direction == "up" or (d.direction == "both" and level >= 1)
            threshold = base * d.min_shift if up else base / d.min_shift
            summary = (
                f"{describe(self.metric, self.stat)} on {m.route} shifted to {level:.2f}x its "
                f"earlier level (ADWIN): {_fmt(self.metric, now)} vs {_fmt(self.metric, base)} "
                f"over the previous {d.history_minutes} min"
            )
        return Observation(
            self.alertname,
            self._labels(m.route),
            m.end,
            d.breached,
            value=now,
            baseline=base,
            threshold=threshold,
            summary=summary,
            context=context,
        )

    def _observe_rate(self, m: RouteMinute, context: dict[str, str]) -> Observation | None:
        d = self.rate
        assert d is not None
        hits, count = _rate_counts(self.metric, m.stats)
        d.update(m.end, hits, count)
        if d.last_ts != m.end:
            return None
        now, base = d.window_value, d.baseline_value
        summary = ""
        if now is not None and base is not None:
            summary = (
                f"{describe(self.metric, 'rate')} on {m.route} is {now:.1%} over the last "
                f"{d.window_minutes} min against {base:.1%} over the previous "
                f"{d.baseline_minutes} min (+{(now - base) * 100:.1f} points)"
            )
        for prefix in GUARDRAIL_RATES:
            if self.metric.startswith(prefix):
                context = {**context, "guardrail": self.metric[len(prefix) :]}
        return Observation(
            self.alertname,
            self._labels(m.route),
            m.end,
            d.breached,
            value=now,
            baseline=base,
            threshold=None if base is None else base + d.min_delta,
            summary=summary,
            context=context,
        )

    def _threshold_observation(
        self, m: RouteMinute, value: float, context: dict[str, str]
    ) -> Observation:
        rule = self.rule
        assert rule is not None
        if rule.above is not None:
            breached, side, threshold = value > rule.above, "above", rule.above
        else:
            assert rule.below is not None
            breached, side, threshold = value < rule.below, "below", rule.below
        summary = (
            f"{describe(self.metric, self.stat)} on {m.route} is {_fmt(self.metric, value)}, "
            f"{'' if breached else 'not '}{side} the {_fmt(self.metric, threshold)} threshold"
        )
        return Observation(
            self.alertname,
            self._labels(m.route),
            m.end,
            breached,
            value=value,
            threshold=threshold,
            summary=summary,
            context=context,
        )


def _rate_counts(metric: str, s: BucketStats) -> tuple[int, int]:
    """(hits, out of) for a rate metric of one minute."""
    if metric == "error_rate":
        return s.error_count + s.timeout_count, s.count
    if metric == "timeout_rate":
        return s.timeout_count, s.count
    if metric == "retry_rate":
        return s.retried_count, s.count
    for column, prefix in enumerate(GUARDRAIL_RATES, start=1):
        if metric.startswith(prefix):
            counts = s.guardrails.get(metric[len(prefix) :], [0, 0, 0])
            return counts[column], counts[0]
    raise ValueError(f"{metric!r} is not a rate metric")


@dataclass
class _Route:
    watches: list[_Watch]
    scores: dict[str, _Watch] = field(default_factory=dict)
    # per guardrail_name, its block-rate and redact-rate watches
    guardrails: dict[str, list[_Watch]] = field(default_factory=dict)
    # the (model, prompt_version) that carried each recent minute, for "what changed"
    carriers: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=70))
    # deployments: when each model / prompt version was first seen on the route
    # (-inf for those of its first minute), least recently seen first; bounded
    first_seen: OrderedDict[tuple[str, str], float] = field(default_factory=OrderedDict)

    def note_carriers(self, minute: RouteMinute) -> None:
        first = not self.first_seen
        pairs = minute.carriers or ((minute.model, minute.prompt_version),)
        for model, prompt in pairs:
            for key in (("model", model), ("prompt_version", prompt)):
                if not key[1]:
                    continue
                if key in self.first_seen:
                    self.first_seen.move_to_end(key)
                    continue
                self.first_seen[key] = -math.inf if first else minute.start
                if len(self.first_seen) > MAX_CARRIERS_PER_ROUTE:
                    self.first_seen.popitem(last=False)

    def deployments(self, since: float, until: float) -> list[tuple[str, str, float]]:
        """(kind, name, first seen) of the models and prompt versions new in [since, until]."""
        found = [(k, n, ts) for (k, n), ts in self.first_seen.items() if since <= ts <= until]
        return sorted(found, key=lambda d: (d[2], d[0], d[1]))


# --------------------------------------------------------------------------- engine


class AlertEngine:
    """Per-route detectors and rules over closed minutes; pure, deterministic, bounded.

    ``drift=True`` adds the ``DRIFT_WATCHES`` to every route (whether or not
    ``auto`` is on); by default there are none.
    """

    def __init__(
        self,
        rules: RulesFile | None = None,
        auto: bool = True,
        lower_is_better_scores: Iterable[str] = ("hallucination",),
        max_routes: int = 10_000,
        auto_policy: LifecyclePolicy = AUTO_POLICY,
        drift: bool = False,
        min_effect: Mapping[str, float] | None = None,
        step_min_z: float = STEP_MIN_Z,
    ) -> None:
        """``min_effect``: per metric (``cost_usd``, ``latency_ms``, ``input_tokens``,
        ``output_tokens``, ``score`` for every score, or ``score:<name>``), the smallest
        move the automatic step test reports (relative for the first four, absolute for
        scores); ``step_min_z`` its significance bar."""
        if max_routes < 1:
            raise ValueError("max_routes must be >= 1")
        self.min_effect = dict(min_effect or {})
        self.step_min_z = step_min_z
        self.rules = rules
        self.auto = auto
        self.drift = drift
        self.lower_is_better = frozenset(lower_is_better_scores)
        self.max_routes = max_routes
        self.auto_policy = auto_policy
        self._lifecycles: dict[LifecyclePolicy, AlertLifecycle] = {}
        self._routes: OrderedDict[str, _Route] = OrderedDict()
        self.minutes_seen = 0
        self.watermark = float("-inf")

    @classmethod
    def from_settings(cls, detect: DetectSettings, rules: RulesFile | None = None) -> AlertEngine:
        """The engine the worker and replay build; reads the rules file unless given it."""
        if rules is None and detect.rules_file is not None:
            rules = load_rules(detect.rules_file)
        return cls(
            rules=rules,
            auto=detect.auto,
            lower_is_better_scores=detect.lower_is_better_scores,
            max_routes=detect.max_routes,
            drift=detect.drift,
            min_effect=detect.min_effect,
            step_min_z=detect.step_min_z,
        )

    # -- public ------------------------------------------------------------------------

    def observe(self, closed: Sequence[ClosedBucket]) -> list[Transition]:
        """Judge newly closed buckets; the transitions they cause, in event-time order."""
        out: list[Transition] = []
        minutes = route_minutes(closed)
        for minute in minutes:
            out += self._observe_minute(minute)
            self.watermark = max(self.watermark, minute.end)
        if minutes:
            for lifecycle in self._lifecycles.values():
                out += [Transition(self.watermark, a) for a in lifecycle.advance(self.watermark)]
        return out

    def firing(self) -> list[Alert]:
        """Every alert open now (to re-send to Alertmanager)."""
        return [a for lifecycle in self._lifecycles.values() for a in lifecycle.firing()]

    @property
    def routes(self) -> int:
        return len(self._routes)

    # -- internals ---------------------------------------------------------------------

    def _observe_minute(self, minute: RouteMinute) -> list[Transition]:
        self.minutes_seen += 1
        route = self._route(minute.route)
        route.carriers.append((minute.model, minute.prompt_version))
        route.note_carriers(minute)
        context = {
            name: value
            for name, value in (("model", minute.model), ("prompt_version", minute.prompt_version))
            if value
        }
        out: list[Transition] = []
        for watch in self._watches(route, minute):
            obs = watch.observe(minute, context)
            if obs is None:
                continue
            if obs.breached:
                obs = _with_change_note(obs, route, watch)
                obs = _with_deployment(obs, route, watch)
            out += [Transition(minute.end, a) for a in watch.lifecycle.observe(obs)]
        return out

    def _watches(self, route: _Route, minute: RouteMinute) -> list[_Watch]:
        if self.auto:
            # sorted, so watch order (and transition order) does not depend on batching
            for name in sorted(minute.stats.score_counts):
                if name not in route.scores and len(route.scores) < MAX_SCORES_PER_ROUTE:
                    effect = self.min_effect.get(
                        f"score:{name}", self.min_effect.get("score", SCORE_MIN_EFFECT)
                    )
                    route.scores[name] = self._auto_watch(
                        _score_watch(name, name in self.lower_is_better, effect)
                    )
            for name in sorted(minute.stats.guardrails):
                if name not in route.guardrails and len(route.guardrails) < MAX_GUARDRAILS:
                    route.guardrails[name] = [
                        self._rate_watch(alertname, f"{prefix}{name}", "rate")
                        for prefix, alertname in zip(GUARDRAIL_RATES, GUARDRAIL_ALERTS, strict=True)
                    ]
        guardrails = [w for pair in route.guardrails.values() for w in pair]
        return [*route.watches, *route.scores.values(), *guardrails]

    def _rate_watch(self, alertname: str, metric: str, detector: str) -> _Watch:
        return _Watch(
            alertname,
            metric,
            "rate",
            detector,
            "warning",
            self._lifecycle(self.auto_policy),
            rate=RateDetector(min_window_events=RATE_MIN_WINDOW_EVENTS),
        )

    def _route(self, name: str) -> _Route:
        route = self._routes.get(name)
        if route is not None:
            self._routes.move_to_end(name)
            return route
        if len(self._routes) >= self.max_routes:
            self._routes.popitem(last=False)
        watches = [self._auto_watch(w) for w in AUTO_WATCHES] if self.auto else []
        if self.auto:
            # after the baseline watches: the order transitions come in
            watches.append(self._rate_watch("ErrorRateHigh", "error_rate", "error_rate"))
            watches.append(self._rate_watch("TimeoutRateHigh", "timeout_rate", "rate"))
            watches.append(self._rate_watch("RetryRateHigh", "retry_rate", "rate"))
        if self.drift:
            watches += [self._drift_watch(w) for w in DRIFT_WATCHES]
        if self.rules is not None:
            watches += [self._rule_watch(rule) for rule in self.rules.for_route(name)]
        route = _Route(watches)
        self._routes[name] = route
        return route

    def _auto_watch(self, spec: AutoWatch) -> _Watch:
        watch = _Watch(
            spec.alertname,
            spec.metric,
            spec.stat,
            "baseline",
            "warning",
            self._lifecycle(self.auto_policy),
        )
        watch.baseline = BaselineDetector(
            direction=spec.direction,
            min_ratio=spec.min_ratio,
            min_z=spec.min_z,
            min_count=spec.min_count,
        )
        if spec.scale is not None:
            watch.step = StepDetector(
                direction=spec.direction,
                scale=spec.scale,
                min_effect=self.min_effect.get(spec.metric, spec.min_effect),
                min_z=self.step_min_z,
                min_count=spec.min_count,
                low_count=MEAN_LOW_COUNT if spec.metric.startswith("score:") else STEP_LOW_COUNT,
            )
        return watch

    def _drift_watch(self, spec: DriftWatch) -> _Watch:
        return _Watch(
            spec.alertname,
            spec.metric,
            spec.stat,
            "drift",
            DRIFT_SEVERITY,
            self._lifecycle(self.auto_policy),
            drift=LevelShiftDetector(min_shift=spec.min_shift, delta=spec.delta),
        )

    def _rule_watch(self, rule: ResolvedRule) -> _Watch:
        watch = _Watch(
            rule.name,
            rule.metric,
            rule.stat,
            rule.detector,
            rule.severity,
            self._lifecycle(rule.lifecycle_policy()),
            rule=rule,
        )
        spec = rule.baseline
        if spec is not None:
            history = int(spec.history // 60)
            watch.baseline = BaselineDetector(
                window_minutes=int(spec.window // 60),
                baseline_minutes=history,
                min_baseline_points=min(20, history),
                direction=spec.direction,
                min_ratio=spec.min_ratio,
                min_z=spec.min_z,
            )
        if rule.drift is not None:
            watch.drift = LevelShiftDetector(
                min_shift=rule.drift.min_shift,
                delta=rule.drift.delta,
                history_minutes=rule.drift.history_minutes,
                within_minutes=rule.drift.within_minutes,
                direction=rule.drift.direction,
            )
        return watch

    def _lifecycle(self, policy: LifecyclePolicy) -> AlertLifecycle:
        lifecycle = self._lifecycles.get(policy)
        if lifecycle is None:
            lifecycle = self._lifecycles[policy] = AlertLifecycle(policy)
        return lifecycle


def _with_change_note(obs: Observation, route: _Route, watch: _Watch) -> Observation:
    """Add "after prompt_version v1 -> v2" when the carrier of the traffic changed."""
    window = watch.baseline.window_minutes if watch.baseline is not None else 5
    carriers = list(route.carriers)
    before, recent = carriers[:-window], carriers[-window:]
    if not before or not obs.summary:
        return obs
    old_model, old_prompt = Counter(before).most_common(1)[0][0]
    new_model, new_prompt = recent[-1]
    notes = [
        f"{name} {old} -> {new}"
        for name, old, new in (
            ("model", old_model, new_model),
            ("prompt_version", old_prompt, new_prompt),
        )
        if old != new
    ]
    if not notes:
        return obs
    return dataclasses.replace(obs, summary=f"{obs.summary}, after {' and '.join(notes)}")


def _with_deployment(obs: Observation, route: _Route, watch: _Watch) -> Observation:
    """Name a model or prompt version that appeared at the step as its likely change point.

    A deployment is the usual cause of an abrupt step, and the one a person
    checks first; the ``change_point`` context label (``prompt_version v13``,
    ``model gpt-4.1``) lets an Alertmanager route or inhibit on it. Only for the
    step watches, which estimate when the change began (``StepDetector.change_ts``).
    """
    step = watch.step
    if step is None or step.change_ts is None:
        return obs
    found = route.deployments(step.change_ts - DEPLOY_LEAD_S, obs.ts)
    if not found:
        return obs
    names = ", ".join(f"{kind} {name}" for kind, name, _ in found)
    started = min(ts for _, _, ts in found)
    when = datetime.fromtimestamp(started, tz=UTC).strftime("%H:%M")
    summary = f"{obs.summary}; {names} appeared at {when} UTC, a likely change point"
    context = {**obs.context, "change_point": names}
    return dataclasses.replace(obs, summary=summary, context=context)
