"""The alert rules file: pydantic models, a loader, and per-route resolution.

A rules file says which statistic of which metric to watch, on which routes,
and when it is bad: above or below a static threshold, far from its own
recent baseline, or shifted to a new level (ADWIN drift detection)::

    defaults:                 # optional; every rule inherits what it does not set
      for: 2m
      resolve_after: 3m
      cooldown: 5m
      severity: warning
    rules:
      - name: CostP95High     # the alertname
        metric: cost_usd
        stat: p95
        routes: ["refund/*"]  # fnmatch globs; omitted = every route
        above: 0.02
      - name: CostVsBaseline
        metric: cost_usd
        stat: p95
        baseline: {ratio_above: 2.0, window: 5m, history: 60m, min_z: 4}
      - name: CostLevelShift
        metric: cost_usd
        stat: p95
        drift: {min_shift: 1.3, delta: 0.01, history: 60m}
    overrides:                # optional, applied in file order, later ones win
      - route: support/chat
        rule: CostP95High
        above: 0.005
    breakers:                 # optional: circuit-breaker limits (detectors/breakers.py)
      trace: {max_loop_depth: 25, max_same_tool_calls: 5, max_cost_usd: 5,
              max_steps_per_minute: 60, ttl: 10m}
      route: {error_rate: 0.5, min_calls: 20, window: 1m, spend_ratio: 5,
              history: 30m, min_history: 10m, min_spend_usd: 1, min_baseline_traces: 5,
              max_spend_usd: 50, open_for: 1m, probe_calls: 5}
      overrides:              # in file order, later ones win
        - route: "agent/*"
          trace: {max_loop_depth: 40}
          route_limits: {error_rate: 0.3}

Every key of ``breakers:`` is optional; what is not set keeps the default of
``TraceLimits`` / ``RouteLimits``. ``RulesFile.breaker_limits(route)`` gives the
limits of one route: defaults, then the section, then each matching override.

Everything here is pure: ``parse_rules`` takes text, ``load_rules`` only reads
the file it is given. Every problem raises ``ConfigError`` with one line per
problem, each naming the file, the line and column in the YAML, the field path
and what to change, e.g.
``rules.yaml:7:5: rules[1].stat: 'p96' is not one of p50, p95, p99, mean, max, rate``.

Lifecycle durations (``for``, ``resolve_after``, ``cooldown``) may be 0 (fire at
the first breach, resolve at the first clear, no cooldown), as in
``LifecyclePolicy``; baseline and drift windows must be whole minutes, as in
``BaselineDetector`` and ``LevelShiftDetector``.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tracewatch.detectors.breakers import BreakerLimits
from tracewatch.errors import ConfigError

if TYPE_CHECKING:
    from tracewatch.detectors.lifecycle import LifecyclePolicy

__all__ = [
    "BaselineSpec",
    "BreakerOverride",
    "BreakersSpec",
    "Defaults",
    "DriftSpec",
    "Override",
    "ResolvedRule",
    "RouteBreakerSpec",
    "Rule",
    "RulesFile",
    "TraceBreakerSpec",
    "load_rules",
    "parse_duration",
    "parse_rules",
]

Severity = Literal["info", "warning", "critical"]
Stat = Literal["p50", "p95", "p99", "mean", "max", "rate"]

PLAIN_METRICS: tuple[str, ...] = (
    "cost_usd",
    "latency_ms",
    "error_rate",
    "loop_depth",
    "input_tokens",
    "output_tokens",
)
# Which statistics make sense for which metric ("score:*" stands for every score).
_STATS_FOR: dict[str, tuple[str, ...]] = {
    "error_rate": ("rate",),
    "score:*": ("mean",),
    "loop_depth": ("max", "p95"),
    "cost_usd": ("p50", "p95", "p99", "mean", "max"),
    "latency_ms": ("p50", "p95", "p99", "mean", "max"),
    # per-minute token statistics are sums and means (no sketch: tokens are not a tail metric)
    "input_tokens": ("mean",),
    "output_tokens": ("mean",),
}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_SCORE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_DURATION = re.compile(r"\s*([+-]?\d+(?:\.\d+)?|[+-]?\.\d+)\s*(ms|s|m|h|d)?\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_MAX_REPORTED = 10


# --------------------------------------------------------------------------- durations


def _seconds(value: object) -> float:
    """Seconds from ``90``, ``"90s"``, ``"2m"``, ``"1h"``; ``ValueError`` says what is wrong."""
    hint = 'use a number of seconds or a number with a unit: "90s", "2m", "1h"'
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a duration; {hint}")
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration; {hint}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    else:
        seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a finite duration; {hint}")
    if seconds < 0:
        raise ValueError(f"duration {value!r} is negative; durations must be >= 0, e.g. 2m")
    return seconds


def parse_duration(value: object) -> float:
    """Seconds from a duration: ``90``, ``"90s"``, ``"2m"``, ``"1h"`` (also ``ms``, ``d``).

    Raises ``ConfigError`` for anything else, including negative, NaN and
    infinite values and booleans.
    """
    try:
        return _seconds(value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _whole_minutes(value: object) -> float:
    seconds = _seconds(value)
    if seconds < 60 or seconds % 60:
        raise ValueError(
            f"{value!r} is not a whole number of minutes (at least 1m); "
            "the detectors work per minute, e.g. 5m or 60m"
        )
    return seconds


Duration = Annotated[float, BeforeValidator(_seconds)]
Minutes = Annotated[float, BeforeValidator(_whole_minutes)]
Threshold = Annotated[float, Field(strict=True, allow_inf_nan=False)]


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value) or len(value) > 128:
        raise ValueError(
            f"{value!r} is not a valid rule name; it becomes the alertname, so start with a "
            "letter and use only letters, digits and _ (at most 128), e.g. CostP95High"
        )
    return value


def _check_metric(value: str) -> str:
    if value in PLAIN_METRICS:
        return value
    if value.startswith("score:") and _SCORE_NAME.fullmatch(value[len("score:") :]):
        return value
    raise ValueError(
        f"{value!r} is not a metric; use one of {', '.join(PLAIN_METRICS)} "
        "or score:<name> (e.g. score:groundedness)"
    )


def _check_pattern(value: str) -> str:
    if not value.strip():
        raise ValueError("a route or route glob must not be empty; e.g. refund/* or support/chat")
    return value


RuleName = Annotated[str, Field(strict=True), AfterValidator(_check_name)]
Metric = Annotated[str, Field(strict=True), AfterValidator(_check_metric)]
RoutePattern = Annotated[str, Field(strict=True), AfterValidator(_check_pattern)]

Issue = tuple[tuple[str | int, ...], str]


def _fail(issues: list[Issue]) -> PydanticCustomError:
    """One validation error carrying several (relative location, message) problems."""
    return PydanticCustomError(
        "rules_invalid", "{message}", {"message": issues[0][1], "issues": issues}
    )


def _stats_for(metric: str) -> tuple[str, ...]:
    return _STATS_FOR["score:*" if metric.startswith("score:") else metric]


def _threshold_problem(metric: str, key: str, value: float) -> str | None:
    """Why a static threshold can never be crossed meaningfully, or ``None``."""
    if metric == "error_rate" or metric.startswith("score:"):
        if not 0.0 <= value <= 1.0:
            return f"{value!r} is outside [0, 1]; {metric} is a fraction, e.g. {key}: 0.05"
    elif value < 0:
        return f"{value!r} is negative; {metric} is never negative, so use a value >= 0"
    return None


# --------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Defaults(_Model):
    """What every rule inherits unless it says otherwise (durations in seconds)."""

    for_: Duration = Field(120.0, alias="for")
    resolve_after: Duration = 180.0
    cooldown: Duration = 300.0
    severity: Severity = "warning"


class BaselineSpec(_Model):
    """Alert when the window's statistic is far from its own recent history.

    ``ratio_above: 2`` fires when the window is at least twice the baseline,
    ``ratio_below: 0.5`` when it is at most half of it; ``min_z`` is the robust
    z-score the move must also reach (``BaselineDetector.min_z``).
    """

    ratio_above: Threshold | None = None
    ratio_below: Threshold | None = None
    window: Minutes = 300.0
    history: Minutes = 3600.0
    min_z: Threshold = 4.0

    @model_validator(mode="after")
    def _check(self) -> BaselineSpec:
        issues: list[Issue] = []
        if self.ratio_above is None and self.ratio_below is None:
            issues.append(((), "set one of ratio_above (e.g. 2.0) or ratio_below (e.g. 0.5)"))
        elif self.ratio_above is not None and self.ratio_below is not None:
            issues.append(
                (("ratio_below",), "set only one of ratio_above or ratio_below, not both")
            )
        if self.ratio_above is not None and self.ratio_above <= 1.0:
            issues.append(
                (
                    ("ratio_above",),
                    f"{self.ratio_above!r} must be > 1 (2.0 means twice the baseline)",
                )
            )
        if self.ratio_below is not None and not 0.0 < self.ratio_below < 1.0:
            issues.append(
                (
                    ("ratio_below",),
                    f"{self.ratio_below!r} must be between 0 and 1 (0.5 means half the baseline)",
                )
            )
        if self.min_z < 0:
            issues.append((("min_z",), f"{self.min_z!r} is negative; use a value >= 0, e.g. 4"))
        if issues:
            raise _fail(issues)
        return self

    @property
    def direction(self) -> Literal["up", "down"]:
        return "up" if self.ratio_above is not None else "down"

    @property
    def min_ratio(self) -> float:
        """The factor as ``BaselineDetector`` takes it (>= 1 in either direction)."""
        if self.ratio_above is not None:
            return self.ratio_above
        assert self.ratio_below is not None
        return 1.0 / self.ratio_below

    @property
    def window_minutes(self) -> int:
        return int(self.window // 60)

    @property
    def history_minutes(self) -> int:
        return int(self.history // 60)


class DriftSpec(_Model):
    """Alert when the statistic settled at a new level (``LevelShiftDetector``, river's ADWIN).

    ``min_shift: 1.3`` fires when ADWIN detected a change within the last
    ``within`` and the level since then is at least 1.3x (or, ``direction``
    permitting, at most 1/1.3x) the median of the previous ``history``;
    ``delta`` is ADWIN's confidence (smaller: fewer false alarms, later alerts).
    Slower than a baseline rule, and blind to slow drift by design.
    """

    min_shift: Threshold = 1.3
    delta: Threshold = 0.01
    history: Minutes = 3600.0
    within: Minutes = 1800.0
    direction: Literal["up", "down", "both"] = "both"

    @model_validator(mode="after")
    def _check(self) -> DriftSpec:
        issues: list[Issue] = []
        if self.min_shift <= 1.0:
            issues.append(
                (
                    ("min_shift",),
                    f"{self.min_shift!r} must be > 1 (1.3 means 1.3x the earlier level, or 1/1.3x)",
                )
            )
        if not 0.0 < self.delta < 1.0:
            issues.append(
                (
                    ("delta",),
                    f"{self.delta!r} must be between 0 and 1 (ADWIN's confidence, e.g. 0.01)",
                )
            )
        if self.history < 20 * 60:
            issues.append(
                (
                    ("history",),
                    f"{self.history / 60:g}m is too short; the reference needs at least 20m",
                )
            )
        if issues:
            raise _fail(issues)
        return self

    @property
    def history_minutes(self) -> int:
        return int(self.history // 60)

    @property
    def within_minutes(self) -> int:
        return int(self.within // 60)


_KINDS = ("above", "below", "baseline", "drift")


class Rule(_Model):
    """One alert condition; unset lifecycle fields and severity come from ``defaults``."""

    name: RuleName
    metric: Metric
    stat: Stat
    routes: list[RoutePattern] | None = None
    above: Threshold | None = None
    below: Threshold | None = None
    baseline: BaselineSpec | None = None
    drift: DriftSpec | None = None
    severity: Severity | None = None
    for_: Duration | None = Field(None, alias="for")
    resolve_after: Duration | None = None
    cooldown: Duration | None = None
    enabled: StrictBool = True

    @field_validator("routes")
    @classmethod
    def _some_routes(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("an empty list matches no route; omit routes to match every route")
        return value

    @model_validator(mode="after")
    def _check(self) -> Rule:
        issues: list[Issue] = []
        allowed = _stats_for(self.metric)
        if self.stat not in allowed:
            issues.append(
                (
                    ("stat",),
                    f"{self.stat!r} does not fit metric {self.metric}; use {' or '.join(allowed)}",
                )
            )
        given = [key for key in _KINDS if getattr(self, key) is not None]
        if not given:
            issues.append(
                (
                    (),
                    "set exactly one of above, below, baseline or drift; none is set "
                    "(e.g. above: 0.02, baseline: {ratio_above: 2.0} or drift: {min_shift: 1.3})",
                )
            )
        elif len(given) > 1:
            issues.append(
                (
                    (given[1],),
                    f"set exactly one of above, below, baseline or drift; this rule sets "
                    f"{' and '.join(given)}: keep one and remove the others",
                )
            )
        if self.drift is not None and self.metric == "error_rate":
            issues.append(
                (
                    ("drift",),
                    "drift compares log(value / earlier level) and error_rate is often 0; "
                    "use baseline or above for error_rate",
                )
            )
        for key in ("above", "below"):
            value = getattr(self, key)
            problem = None if value is None else _threshold_problem(self.metric, key, value)
            if problem is not None:
                issues.append(((key,), problem))
        if issues:
            raise _fail(issues)
        return self

    def matches(self, route: str) -> bool:
        """Whether this rule watches ``route`` (every route when ``routes`` is omitted)."""
        return self.routes is None or any(fnmatchcase(route, glob) for glob in self.routes)


class Override(_Model):
    """A change to one named rule on the routes matching ``route`` (exact or glob)."""

    route: RoutePattern
    rule: RuleName
    above: Threshold | None = None
    below: Threshold | None = None
    severity: Severity | None = None
    for_: Duration | None = Field(None, alias="for")
    resolve_after: Duration | None = None
    cooldown: Duration | None = None
    enabled: StrictBool | None = None

    @model_validator(mode="after")
    def _check(self) -> Override:
        changes = ("above", "below", "severity", "for_", "resolve_after", "cooldown", "enabled")
        if all(getattr(self, key) is None for key in changes):
            raise _fail(
                [
                    (
                        (),
                        "this override changes nothing; set at least one of above, below, "
                        "severity, for, resolve_after, cooldown or enabled",
                    )
                ]
            )
        return self

    def matches(self, route: str) -> bool:
        return route == self.route or fnmatchcase(route, self.route)


def _none_is_empty(value: object) -> object:
    """``rules:`` with nothing under it is an empty list, not an error."""
    return [] if value is None else value


# --------------------------------------------------------------------------- breakers


def _count_from(low: int) -> Any:
    def check(value: int) -> int:
        if value < low:
            raise ValueError(f"{value!r} is too small; use a whole number >= {low}")
        return value

    return AfterValidator(check)


def _usd(value: float) -> float:
    if value < 0:
        raise ValueError(f"{value!r} is negative; use an amount in USD >= 0, e.g. 5")
    return value


def _non_negative(value: float) -> float:
    if value < 0:
        raise ValueError(f"{value!r} is negative; use a number >= 0, e.g. 3")
    return value


def _positive_usd(value: float) -> float:
    if value <= 0:
        raise ValueError(f"{value!r} must be > 0 (USD per window), e.g. 50")
    return value


def _fraction(value: float) -> float:
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{value!r} is outside (0, 1]; an error rate is a fraction, e.g. 0.5")
    return value


def _ratio(value: float) -> float:
    if value < 1.0:
        raise ValueError(f"{value!r} must be >= 1 (5 means five times the route's average)")
    return value


def _positive_seconds(value: object) -> float:
    seconds = _seconds(value)
    if seconds <= 0:
        raise ValueError(f"{value!r} must be longer than 0, e.g. 1m")
    return seconds


def _whole_seconds(value: object) -> float:
    seconds = _seconds(value)
    if seconds < 1 or seconds % 1:
        raise ValueError(
            f"{value!r} is not a whole number of seconds (at least 1s); "
            "the windows count per second, e.g. 60s or 1m"
        )
    return seconds


def _history(value: object) -> float:
    seconds = _seconds(value)
    if seconds < 60:
        raise ValueError(f"{value!r} is too short; the spend history needs at least 1m, e.g. 30m")
    return seconds


Count0 = Annotated[int, Field(strict=True), _count_from(0)]
Count1 = Annotated[int, Field(strict=True), _count_from(1)]
Usd = Annotated[float, Field(strict=True, allow_inf_nan=False), AfterValidator(_usd)]
PositiveUsd = Annotated[
    float, Field(strict=True, allow_inf_nan=False), AfterValidator(_positive_usd)
]
NonNegative = Annotated[
    float, Field(strict=True, allow_inf_nan=False), AfterValidator(_non_negative)
]
Fraction = Annotated[float, Field(strict=True, allow_inf_nan=False), AfterValidator(_fraction)]
Ratio = Annotated[float, Field(strict=True, allow_inf_nan=False), AfterValidator(_ratio)]
PositiveDuration = Annotated[float, BeforeValidator(_positive_seconds)]
WholeSeconds = Annotated[float, BeforeValidator(_whole_seconds)]
History = Annotated[float, BeforeValidator(_history)]


class _LimitsSpec(_Model):
    """Optional limits; ``changes()`` gives the set ones as limits-dataclass arguments."""

    #: YAML name -> field of ``TraceLimits`` / ``RouteLimits`` where they differ.
    RENAMED: ClassVar[dict[str, str]] = {}

    def changes(self) -> dict[str, Any]:
        return {
            self.RENAMED.get(name, name): value
            for name, value in self
            if value is not None and name in self.model_fields_set
        }


class TraceBreakerSpec(_LimitsSpec):
    """Per-trace limits (``TraceLimits``); ``ttl`` is a duration, e.g. 10m."""

    RENAMED: ClassVar[dict[str, str]] = {"ttl": "ttl_s"}

    max_loop_depth: Count0 | None = None
    max_same_tool_calls: Count1 | None = None
    max_cost_usd: Usd | None = None
    max_steps_per_minute: Count1 | None = None
    ttl: PositiveDuration | None = None


class RouteBreakerSpec(_LimitsSpec):
    """Per-route limits (``RouteLimits``); ``window``, ``history``, ``open_for`` are durations."""

    RENAMED: ClassVar[dict[str, str]] = {
        "window": "window_s",
        "history": "history_s",
        "min_history": "min_history_s",
        "open_for": "open_s",
    }

    error_rate: Fraction | None = None
    min_calls: Count1 | None = None
    window: WholeSeconds | None = None
    spend_ratio: Ratio | None = None
    history: History | None = None
    min_history: Duration | None = None
    min_spend_usd: Usd | None = None
    min_baseline_traces: NonNegative | None = None
    max_spend_usd: PositiveUsd | None = None
    open_for: PositiveDuration | None = None
    probe_calls: Count1 | None = None


class BreakerOverride(_Model):
    """Breaker limits for the routes matching ``route`` (exact or glob)."""

    route: RoutePattern
    trace: TraceBreakerSpec | None = None
    route_limits: RouteBreakerSpec | None = None

    @model_validator(mode="after")
    def _check(self) -> BreakerOverride:
        if not (self.trace and self.trace.changes()) and not (
            self.route_limits and self.route_limits.changes()
        ):
            raise _fail(
                [
                    (
                        (),
                        "this override changes nothing; set trace: {...} or route_limits: {...}, "
                        "e.g. trace: {max_loop_depth: 40}",
                    )
                ]
            )
        return self

    def matches(self, route: str) -> bool:
        return route == self.route or fnmatchcase(route, self.route)


def _none_is_spec(value: object) -> object:
    """``trace:`` with nothing under it keeps every default."""
    return {} if value is None else value


class BreakersSpec(_Model):
    """The ``breakers:`` section: limits for every route, then overrides per route."""

    trace: Annotated[TraceBreakerSpec, BeforeValidator(_none_is_spec)] = (
        TraceBreakerSpec.model_validate({})
    )
    route: Annotated[RouteBreakerSpec, BeforeValidator(_none_is_spec)] = (
        RouteBreakerSpec.model_validate({})
    )
    overrides: Annotated[list[BreakerOverride], BeforeValidator(_none_is_empty)] = Field(
        default_factory=list
    )

    def limits_for(self, route: str) -> BreakerLimits:
        """Defaults, then this section, then each override matching ``route`` in file order."""
        limits = _apply(BreakerLimits(), self.trace, self.route)
        for override in self.overrides:
            if override.matches(route):
                limits = _apply(limits, override.trace, override.route_limits)
        return limits


def _apply(
    limits: BreakerLimits, trace: TraceBreakerSpec | None, route: RouteBreakerSpec | None
) -> BreakerLimits:
    """``limits`` with the values ``trace`` and ``route`` set."""
    trace_changes = trace.changes() if trace is not None else {}
    route_changes = route.changes() if route is not None else {}
    if not trace_changes and not route_changes:
        return limits
    return BreakerLimits(
        trace=replace(limits.trace, **trace_changes),
        route=replace(limits.route, **route_changes),
    )


class RulesFile(_Model):
    """A whole rules file; ``for_route`` gives the rules that apply to one route."""

    defaults: Defaults = Defaults.model_validate({})
    rules: Annotated[list[Rule], BeforeValidator(_none_is_empty)] = Field(default_factory=list)
    overrides: Annotated[list[Override], BeforeValidator(_none_is_empty)] = Field(
        default_factory=list
    )
    breakers: BreakersSpec = BreakersSpec.model_validate({})

    @model_validator(mode="before")
    @classmethod
    def _none_is_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(
            data.get(key, ...) is None for key in ("defaults", "breakers")
        ):
            return {key: value for key, value in data.items() if value is not None}
        return data

    @model_validator(mode="after")
    def _check(self) -> RulesFile:
        issues: list[Issue] = []
        first: dict[str, int] = {}
        for index, rule in enumerate(self.rules):
            if rule.name in first:
                issues.append(
                    (
                        ("rules", index, "name"),
                        f"{rule.name!r} is already the name of rules[{first[rule.name]}]; "
                        "rule names become alertnames and must be unique",
                    )
                )
            else:
                first[rule.name] = index
        by_name = {rule.name: rule for rule in self.rules}
        for index, override in enumerate(self.overrides):
            target = by_name.get(override.rule)
            if target is None:
                close = difflib.get_close_matches(override.rule, list(by_name), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                known = ", ".join(by_name) or "none"
                issues.append(
                    (
                        ("overrides", index, "rule"),
                        f"no rule is named {override.rule!r}{hint} (rules: {known})",
                    )
                )
                continue
            for key in ("above", "below"):
                value = getattr(override, key)
                if value is None:
                    continue
                if getattr(target, key) is None:
                    uses = next(k for k in _KINDS if getattr(target, k) is not None)
                    issues.append(
                        (
                            ("overrides", index, key),
                            f"rule {target.name} uses {uses}, not {key}; "
                            f"an override can only change the threshold the rule has",
                        )
                    )
                    continue
                problem = _threshold_problem(target.metric, key, value)
                if problem is not None:
                    issues.append((("overrides", index, key), problem))
        if issues:
            raise _fail(issues)
        return self

    def for_route(self, route: str) -> list[ResolvedRule]:
        """The enabled rules for ``route``, defaults and matching overrides applied."""
        resolved: list[ResolvedRule] = []
        for rule in self.rules:
            if not rule.matches(route):
                continue
            values: dict[str, Any] = {
                "above": rule.above,
                "below": rule.below,
                "severity": rule.severity or self.defaults.severity,
                "for_": _first(rule.for_, self.defaults.for_),
                "resolve_after": _first(rule.resolve_after, self.defaults.resolve_after),
                "cooldown": _first(rule.cooldown, self.defaults.cooldown),
                "enabled": rule.enabled,
            }
            for override in self.overrides:
                if override.rule == rule.name and override.matches(route):
                    for key in values:
                        change = getattr(override, key)
                        if change is not None:
                            values[key] = change
            if not values["enabled"]:
                continue
            resolved.append(
                ResolvedRule(
                    name=rule.name,
                    route=route,
                    metric=rule.metric,
                    stat=rule.stat,
                    severity=values["severity"],
                    above=values["above"],
                    below=values["below"],
                    baseline=rule.baseline,
                    drift=rule.drift,
                    for_s=values["for_"],
                    resolve_after_s=values["resolve_after"],
                    cooldown_s=values["cooldown"],
                )
            )
        return resolved

    def breaker_limits(self, route: str) -> BreakerLimits:
        """The breaker limits of ``route``: defaults, ``breakers:``, matching overrides in order."""
        return self.breakers.limits_for(route)


def _first(value: float | None, default: float) -> float:
    return default if value is None else value


@dataclass(frozen=True)
class ResolvedRule:
    """One rule as it applies to one route: everything a detector needs, seconds for times."""

    name: str
    route: str
    metric: str
    stat: Stat
    severity: Severity
    above: float | None
    below: float | None
    baseline: BaselineSpec | None
    for_s: float
    resolve_after_s: float
    cooldown_s: float
    drift: DriftSpec | None = None

    @property
    def detector(self) -> Literal["threshold", "baseline", "drift"]:
        """The ``labels.detector`` of this rule's alerts."""
        if self.drift is not None:
            return "drift"
        return "baseline" if self.baseline is not None else "threshold"

    @property
    def threshold(self) -> float | None:
        """The static threshold (``above`` or ``below``), ``None`` for baseline and drift rules."""
        return self.above if self.above is not None else self.below

    def lifecycle_policy(self, max_states: int = 10_000) -> LifecyclePolicy:
        from tracewatch.detectors.lifecycle import LifecyclePolicy

        return LifecyclePolicy(
            for_s=self.for_s,
            resolve_after_s=self.resolve_after_s,
            cooldown_s=self.cooldown_s,
            max_states=max_states,
        )


# --------------------------------------------------------------------------- loading


def load_rules(path: Path) -> RulesFile:
    """Read and validate a rules file; ``ConfigError`` names the file, line and field."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the rules file is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the rules file ({exc.strerror or exc}); check --rules"
        ) from None
    return parse_rules(text, source=str(path))


def compose_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The YAML node tree (for line/column marks) and the data; a syntax error is a
    ``ConfigError`` at its line and column."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(
            f"{where}: YAML syntax error: {problem}; check indentation, colons and quotes"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: YAML syntax error: {exc}") from None
    return root, data


def parse_rules(text: str, source: str = "<rules>") -> RulesFile:
    """Validate rules YAML text; ``source`` names it in error messages."""
    root, data = compose_yaml(text, source)

    marks: dict[tuple[str | int, ...], tuple[int, int]] = {}
    problems: list[str] = []
    if root is not None:
        for path, line, col, duplicate in _walk(root, ()):
            if duplicate:
                problems.append(
                    f"{source}:{line}:{col}: {_path(path)}: key {path[-1]!r} appears twice "
                    "in this mapping; keep one"
                )
            else:
                marks.setdefault(path, (line, col))
        marks[()] = (root.start_mark.line + 1, root.start_mark.column + 1)
    if problems:
        raise ConfigError("\n".join(problems[:_MAX_REPORTED]))

    if data is None:
        data = {}
    if not isinstance(data, dict):
        line, col = marks.get((), (1, 1))
        raise ConfigError(
            f"{source}:{line}:{col}: (top level): expected a mapping with 'rules:' "
            f"(and optional 'defaults:', 'overrides:', 'breakers:'), got a {_yaml_type(data)}"
        )
    try:
        return RulesFile.model_validate(data)
    except ValidationError as exc:
        located = [
            _format(source, marks, loc, message)
            for loc, message in _issues(exc.errors(include_url=False))
        ]
    lines = [text for _, _, text in sorted(located, key=lambda item: item[:2])]
    extra = len(lines) - _MAX_REPORTED
    shown = lines[:_MAX_REPORTED]
    if extra > 0:
        shown.append(f"{source}: ... and {extra} more problem{'s' if extra > 1 else ''}")
    raise ConfigError("\n".join(shown))


def _walk(
    node: yaml.Node, path: tuple[str | int, ...], depth: int = 0
) -> Iterator[tuple[tuple[str | int, ...], int, int, bool]]:
    """(path, line, column, is_duplicate_key) for every mapping key and list item."""
    if depth > 50:
        return
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = (*path, key)
            mark = key_node.start_mark
            yield child, mark.line + 1, mark.column + 1, key in seen and key != "<<"
            seen.add(key)
            yield from _walk(value_node, child, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            yield child, item.start_mark.line + 1, item.start_mark.column + 1, False
            yield from _walk(item, child, depth + 1)


def _issues(errors: list[Any]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(absolute location, message) for every pydantic error, our grouped ones expanded."""
    for error in errors:
        loc: tuple[str | int, ...] = tuple(error["loc"])
        ctx = error.get("ctx") or {}
        if error["type"] == "rules_invalid":
            for relative, message in ctx["issues"]:
                yield (*loc, *relative), message
        else:
            yield loc, _message(loc, error)


def _message(loc: tuple[str | int, ...], error: Mapping[str, Any]) -> str:
    kind: str = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key {loc[-1]!r}; {hint}allowed keys here: {', '.join(allowed)}"
    if kind == "missing":
        return f"required key {loc[-1]!r} is missing"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"{value!r} is not one of {', '.join(choices)}"
    if kind == "finite_number":
        return f"{_yaml_scalar(value)} is not a finite number; use a plain number, e.g. 0.02"
    if kind in {"value_error", "assertion_error"}:
        return re.sub(r"^(Value error|Assertion failed), ", "", str(error["msg"]))
    if kind in {"model_type", "model_attributes_type", "dict_type"}:
        return f"expected a mapping (key: value lines), got a {_yaml_type(value)}"
    if kind == "list_type":
        return f'expected a list (e.g. ["refund/*"]), got a {_yaml_type(value)}'
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        return f"expected a whole number, got {_yaml_scalar(value)} ({_yaml_type(value)})"
    if kind in {"float_type", "float_parsing"}:
        return f"expected a number, got {_yaml_scalar(value)} ({_yaml_type(value)})"
    if kind == "bool_type":
        return f"expected true or false, got {_yaml_scalar(value)}"
    if kind == "string_type":
        return f"expected a string, got {_yaml_scalar(value)} ({_yaml_type(value)})"
    return f"{error['msg']} (got {_yaml_scalar(value)})"


def _allowed_keys(loc: tuple[str | int, ...]) -> list[str]:
    """The keys the model at ``loc`` accepts (by their YAML names)."""
    model: type[BaseModel] = RulesFile
    if loc[:1] == ("defaults",):
        model = Defaults
    elif loc[:1] == ("rules",):
        specs: dict[tuple[str | int, ...], type[BaseModel]] = {
            ("baseline",): BaselineSpec,
            ("drift",): DriftSpec,
        }
        model = specs.get(loc[2:3], Rule)
    elif loc[:1] == ("overrides",):
        model = Override
    elif loc[:1] == ("breakers",):
        model = _breakers_model(loc[1:])
    return [field.alias or name for name, field in model.model_fields.items()]


def _breakers_model(loc: tuple[str | int, ...]) -> type[BaseModel]:
    """The model at ``loc`` inside ``breakers:``."""
    specs: dict[str, type[BaseModel]] = {
        "trace": TraceBreakerSpec,
        "route": RouteBreakerSpec,
        "route_limits": RouteBreakerSpec,
    }
    if loc[:1] == ("overrides",):
        return specs.get(str(loc[2]), BreakerOverride) if len(loc) > 2 else BreakerOverride
    return specs.get(str(loc[0]), BreakersSpec) if loc else BreakersSpec


def _format(
    source: str,
    marks: Mapping[tuple[str | int, ...], tuple[int, int]],
    loc: tuple[str | int, ...],
    message: str,
) -> tuple[int, int, str]:
    """``file:line:col: path: message``, at the nearest node of ``loc`` the YAML has."""
    probe = loc
    while probe not in marks and probe:
        probe = probe[:-1]
    line, col = marks.get(probe, (1, 1))
    return line, col, f"{source}:{line}:{col}: {_path(loc)}: {message}"


def _path(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _yaml_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _yaml_scalar(value: object) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
