"""The alert rules file: parsing, per-route resolution, and errors that point at the line."""

from __future__ import annotations

import dataclasses
import math
import textwrap
from pathlib import Path

import pytest

from tracewatch.detectors.breakers import BreakerLimits, RouteLimits, TraceLimits
from tracewatch.errors import ConfigError
from tracewatch.schemas.rules import (
    BaselineSpec,
    DriftSpec,
    ResolvedRule,
    RulesFile,
    load_rules,
    parse_duration,
    parse_rules,
)

VALID = """\
defaults:
  for: 2m
  resolve_after: 3m
  cooldown: 5m
  severity: warning
rules:
  - name: CostP95High
    metric: cost_usd
    stat: p95
    routes: ["refund/*"]
    above: 0.02
    severity: critical
    for: 1m
  - name: CostVsBaseline
    metric: cost_usd
    stat: p95
    baseline: {ratio_above: 2.0, window: 5m, history: 60m, min_z: 4}
  - name: GroundednessFloor
    metric: score:groundedness
    stat: mean
    below: 0.7
  - name: CostLevelShift
    metric: cost_usd
    stat: p95
    drift: {min_shift: 1.4, delta: 0.01, history: 90m}
overrides:
  - route: "refund/special"
    rule: CostP95High
    above: 0.005
    cooldown: 90s
  - route: "refund/off*"
    rule: CostP95High
    enabled: false
  - route: "support/*"
    rule: GroundednessFloor
    below: 0.8
    severity: info
"""


def parse(text: str) -> RulesFile:
    return parse_rules(textwrap.dedent(text), source="rules.yaml")


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return str(info.value)


def by_name(rules: list[ResolvedRule]) -> dict[str, ResolvedRule]:
    return {rule.name: rule for rule in rules}


# --------------------------------------------------------------------------- valid files


def test_full_file_parses() -> None:
    rules = parse(VALID)
    assert [rule.name for rule in rules.rules] == [
        "CostP95High",
        "CostVsBaseline",
        "GroundednessFloor",
        "CostLevelShift",
    ]
    assert rules.defaults.for_ == 120.0
    assert rules.rules[1].baseline == BaselineSpec(
        ratio_above=2.0, window=300.0, history=3600.0, min_z=4.0
    )
    assert len(rules.overrides) == 3


def test_route_matching_glob_gets_rule_with_rule_values_over_defaults() -> None:
    resolved = by_name(parse(VALID).for_route("refund/primary"))
    assert set(resolved) == {
        "CostP95High",
        "CostVsBaseline",
        "GroundednessFloor",
        "CostLevelShift",
    }
    cost = resolved["CostP95High"]
    assert cost == ResolvedRule(
        name="CostP95High",
        route="refund/primary",
        metric="cost_usd",
        stat="p95",
        severity="critical",
        above=0.02,
        below=None,
        baseline=None,
        for_s=60.0,
        resolve_after_s=180.0,
        cooldown_s=300.0,
    )
    assert cost.detector == "threshold"
    assert cost.threshold == 0.02


def test_rule_without_own_values_inherits_defaults() -> None:
    base = by_name(parse(VALID).for_route("anything"))["CostVsBaseline"]
    assert (base.for_s, base.resolve_after_s, base.cooldown_s) == (120.0, 180.0, 300.0)
    assert base.severity == "warning"
    assert base.detector == "baseline"
    assert base.threshold is None
    assert base.baseline is not None
    assert base.baseline.direction == "up"
    assert base.baseline.min_ratio == 2.0
    assert (base.baseline.window_minutes, base.baseline.history_minutes) == (5, 60)


def test_drift_rule_resolves_with_its_spec_and_detector() -> None:
    drift = by_name(parse(VALID).for_route("anything"))["CostLevelShift"]
    assert drift.detector == "drift"
    assert drift.threshold is None and drift.baseline is None
    assert drift.drift == DriftSpec(min_shift=1.4, delta=0.01, history=5400.0)
    assert (drift.drift.history_minutes, drift.drift.within_minutes) == (90, 30)
    assert drift.drift.direction == "both"


def test_drift_spec_defaults_are_the_detectors() -> None:
    from tracewatch.detectors.drift import LevelShiftDetector

    spec, detector = DriftSpec(), LevelShiftDetector()
    assert (spec.min_shift, spec.delta, spec.direction) == (
        detector.min_shift,
        detector.delta,
        detector.direction,
    )
    assert (spec.history_minutes, spec.within_minutes) == (
        detector.history_minutes,
        detector.within_minutes,
    )


def test_route_outside_glob_does_not_get_rule() -> None:
    names = [rule.name for rule in parse(VALID).for_route("support/chat")]
    assert names == ["CostVsBaseline", "GroundednessFloor", "CostLevelShift"]
    # "refund/*" must not match a route that merely contains "refund".
    assert "CostP95High" not in by_name(parse(VALID).for_route("old-refund/x"))


def test_override_changes_threshold_only_for_its_route() -> None:
    rules = parse(VALID)
    special = by_name(rules.for_route("refund/special"))["CostP95High"]
    other = by_name(rules.for_route("refund/primary"))["CostP95High"]
    assert special.above == 0.005
    assert special.cooldown_s == 90.0
    assert special.severity == "critical"  # untouched fields keep the rule's values
    assert other.above == 0.02
    assert other.cooldown_s == 300.0


def test_override_glob_and_severity() -> None:
    ground = by_name(parse(VALID).for_route("support/chat"))["GroundednessFloor"]
    assert (ground.below, ground.severity) == (0.8, "info")
    elsewhere = by_name(parse(VALID).for_route("refund/primary"))["GroundednessFloor"]
    assert (elsewhere.below, elsewhere.severity) == (0.7, "warning")


def test_enabled_false_drops_rule_for_that_route_only() -> None:
    rules = parse(VALID)
    assert "CostP95High" not in by_name(rules.for_route("refund/offline"))
    assert "CostVsBaseline" in by_name(rules.for_route("refund/offline"))
    assert "CostP95High" in by_name(rules.for_route("refund/online"))


def test_overrides_apply_in_file_order_later_wins() -> None:
    rules = parse("""\
        rules:
          - name: Slow
            metric: latency_ms
            stat: p99
            above: 1000
            enabled: false
        overrides:
          - {route: "chat/*", rule: Slow, enabled: true, above: 2000}
          - {route: "chat/fast", rule: Slow, above: 500}
        """)
    assert rules.for_route("other") == []
    assert by_name(rules.for_route("chat/slow"))["Slow"].above == 2000
    assert by_name(rules.for_route("chat/fast"))["Slow"].above == 500


def test_lifecycle_policy_from_resolved_rule() -> None:
    rule = by_name(parse(VALID).for_route("refund/primary"))["CostP95High"]
    policy = rule.lifecycle_policy()
    assert (policy.for_s, policy.resolve_after_s, policy.cooldown_s) == (60.0, 180.0, 300.0)


def test_empty_file_is_valid_with_no_rules() -> None:
    for text in ("", "# only a comment\n", "rules:\n"):
        rules = parse(text)
        assert rules.rules == []
        assert rules.for_route("refund/primary") == []


def test_load_rules_reads_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(VALID, encoding="utf-8")
    assert len(load_rules(path).rules) == 4


def test_load_rules_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules(tmp_path / "nope.yaml")


def test_load_rules_names_the_file_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "my-rules.yaml"
    path.write_text("rules:\n  - name: A\n    metric: cost_usd\n    stat: p96\n    above: 1\n")
    with pytest.raises(ConfigError) as info:
        load_rules(path)
    assert str(info.value).startswith(f"{path}:4:5: rules[0].stat: 'p96' is not one of")


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("90s", 90.0), ("2m", 120.0), ("1h", 3600.0), (30, 30.0), (1.5, 1.5), ("45", 45.0)],
)
def test_durations_parse(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value", ["2x", "m", "", "1h30", "-5m", -1, True, None, math.nan, math.inf, [1]]
)
def test_bad_durations_fail(value: object) -> None:
    with pytest.raises(ConfigError):
        parse_duration(value)


def test_durations_in_file_become_seconds() -> None:
    rules = parse("""\
        defaults: {for: 90s, resolve_after: 1h, cooldown: 30}
        rules: []
        """)
    assert (rules.defaults.for_, rules.defaults.resolve_after, rules.defaults.cooldown) == (
        90.0,
        3600.0,
        30.0,
    )


# --------------------------------------------------------------------------- errors

RULE = """\
rules:
  - name: Good
    metric: cost_usd
    stat: p95
    above: 0.02
  - name: Bad
    metric: {metric}
    stat: {stat}
    {extra}
"""


def bad_rule(metric: str = "cost_usd", stat: str = "p95", extra: str = "above: 1") -> str:
    return RULE.format(metric=metric, stat=stat, extra=extra)


def test_error_unknown_key_typo() -> None:
    message = error_of(bad_rule(extra="thresold: 0.02\n    above: 1"))
    assert "rules.yaml:9:5: rules[1].thresold: unknown key 'thresold'" in message


def test_error_unknown_key_suggests_the_right_one() -> None:
    message = error_of(bad_rule(extra="abvoe: 1"))
    assert "rules.yaml:9:5: rules[1].abvoe:" in message
    assert "did you mean 'above'?" in message


def test_error_bad_stat() -> None:
    message = error_of(bad_rule(stat="p96"))
    assert message == (
        "rules.yaml:8:5: rules[1].stat: 'p96' is not one of p50, p95, p99, mean, max, rate"
    )


def test_error_bad_metric() -> None:
    message = error_of(bad_rule(metric="costs"))
    assert message.startswith("rules.yaml:7:5: rules[1].metric: 'costs' is not a metric")


def test_error_score_metric_with_p95() -> None:
    message = error_of(bad_rule(metric="score:groundedness", stat="p95", extra="below: 0.7"))
    assert message.startswith("rules.yaml:8:5: rules[1].stat: 'p95' does not fit metric")
    assert "use mean" in message


@pytest.mark.parametrize(
    ("metric", "stat"),
    [("error_rate", "p95"), ("loop_depth", "mean"), ("cost_usd", "rate")],
)
def test_error_other_bad_combinations(metric: str, stat: str) -> None:
    extra = "above: 0.1"
    assert f"rules.yaml:8:5: rules[1].stat: '{stat}' does not fit" in error_of(
        bad_rule(metric=metric, stat=stat, extra=extra)
    )


@pytest.mark.parametrize(("metric", "stat"), [("error_rate", "rate"), ("loop_depth", "max")])
def test_sensible_combinations_pass(metric: str, stat: str) -> None:
    assert len(parse(bad_rule(metric=metric, stat=stat, extra="above: 0.1")).rules) == 2


def test_error_two_of_above_below_baseline() -> None:
    message = error_of(bad_rule(extra="above: 1\n    below: 0.5"))
    assert message.startswith("rules.yaml:10:5: rules[1].below: set exactly one of")
    assert "above and below" in message


def test_error_threshold_and_baseline() -> None:
    message = error_of(bad_rule(extra="above: 1\n    baseline: {ratio_above: 2}"))
    assert message.startswith("rules.yaml:10:5: rules[1].baseline: set exactly one of")


def test_error_none_of_above_below_baseline() -> None:
    message = error_of(bad_rule(extra="severity: info"))
    assert message.startswith("rules.yaml:6:5: rules[1]: set exactly one of")
    assert "none is set" in message


def test_error_drift_and_baseline() -> None:
    message = error_of(bad_rule(extra="baseline: {ratio_above: 2}\n    drift: {min_shift: 1.5}"))
    assert message.startswith(
        "rules.yaml:10:5: rules[1].drift: set exactly one of above, below, baseline or drift; "
        "this rule sets baseline and drift"
    )


@pytest.mark.parametrize(
    ("spec", "where", "problem"),
    [
        ("min_shift: 0.8", "10:7: rules[1].drift.min_shift", "0.8 must be > 1"),
        ("min_shift: .inf", "10:7: rules[1].drift.min_shift", "not a finite number"),
        ("delta: 1.5", "10:7: rules[1].drift.delta", "1.5 must be between 0 and 1"),
        ("history: 10m", "10:7: rules[1].drift.history", "10m is too short"),
        ("within: 90s", "10:7: rules[1].drift.within", "'90s' is not a whole number of minutes"),
        ("direction: sideways", "10:7: rules[1].drift.direction", "'sideways' is not one of"),
        ("min_shfit: 1.5", "10:7: rules[1].drift.min_shfit", "did you mean 'min_shift'?"),
    ],
)
def test_error_drift_spec_points_at_the_field(spec: str, where: str, problem: str) -> None:
    message = error_of(bad_rule(extra=f"drift:\n      {spec}"))
    assert message.startswith(f"rules.yaml:{where}: ")
    assert problem in message


def test_error_drift_on_error_rate() -> None:
    message = error_of(bad_rule(metric="error_rate", stat="rate", extra="drift: {}"))
    assert message.startswith("rules.yaml:9:5: rules[1].drift: drift compares log(value")
    assert "use baseline or above for error_rate" in message


def test_error_override_threshold_on_a_drift_rule() -> None:
    text = bad_rule(extra="drift: {}") + "overrides:\n  - {route: x, rule: Bad, above: 1}\n"
    assert error_of(text).startswith("rules.yaml:11:27: overrides[0].above: rule Bad uses drift")


def test_error_duplicate_rule_names() -> None:
    message = error_of(bad_rule().replace("name: Bad", "name: Good"))
    assert message.startswith("rules.yaml:6:5: rules[1].name: 'Good' is already the name")


def test_error_override_names_missing_rule() -> None:
    message = error_of(bad_rule() + "overrides:\n  - route: a/b\n    rule: Goood\n    above: 2\n")
    assert message.startswith("rules.yaml:12:5: overrides[0].rule: no rule is named 'Goood'")
    assert "did you mean 'Good'?" in message


def test_error_negative_duration() -> None:
    message = error_of(bad_rule(extra="above: 1\n    cooldown: -5m"))
    assert message.startswith("rules.yaml:10:5: rules[1].cooldown: duration '-5m' is negative")


def test_error_negative_duration_in_defaults() -> None:
    message = error_of("defaults:\n  severity: info\n  for: -30\n")
    assert message.startswith("rules.yaml:3:3: defaults.for:")


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", ".NaN"])
def test_error_non_finite_threshold(value: str) -> None:
    message = error_of(bad_rule(extra=f"above: {value}"))
    assert message.startswith("rules.yaml:9:5: rules[1].above:")
    assert "not a finite number" in message


def test_error_yaml_syntax() -> None:
    message = error_of("rules:\n  - name: A\n    stat: [p95\n  - name: B\n")
    assert message.startswith("rules.yaml:4:")
    assert "YAML syntax error" in message


def test_error_yaml_bad_indentation() -> None:
    message = error_of("rules:\n  - name: A\n   metric: cost_usd\n")
    assert message.startswith("rules.yaml:3:")
    assert "YAML syntax error" in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_error_top_level_not_a_mapping(text: str) -> None:
    message = error_of(text)
    assert message.startswith("rules.yaml:1:1: (top level): expected a mapping")


def test_error_missing_required_field_points_at_rule() -> None:
    message = error_of("rules:\n  - name: A\n    stat: p95\n    above: 1\n")
    assert message == "rules.yaml:2:5: rules[0].metric: required key 'metric' is missing"


def test_error_bad_name() -> None:
    message = error_of(bad_rule().replace("name: Bad", "name: 9lives"))
    assert message.startswith("rules.yaml:6:5: rules[1].name: '9lives' is not a valid rule name")


def test_error_baseline_ratio() -> None:
    message = error_of(bad_rule(extra="baseline:\n      ratio_above: 0.5"))
    assert message.startswith("rules.yaml:10:7: rules[1].baseline.ratio_above: 0.5 must be > 1")


def test_error_baseline_window_not_whole_minutes() -> None:
    message = error_of(bad_rule(extra="baseline:\n      ratio_below: 0.5\n      window: 90s"))
    assert message.startswith("rules.yaml:11:7: rules[1].baseline.window: '90s' is not a whole")


def test_error_override_threshold_the_rule_does_not_have() -> None:
    message = error_of(bad_rule() + "overrides:\n  - {route: x, rule: Good, below: 0.1}\n")
    assert message.startswith("rules.yaml:11:28: overrides[0].below: rule Good uses above")


def test_error_duplicate_yaml_key() -> None:
    message = error_of(bad_rule(extra="above: 1\n    above: 2"))
    assert message.startswith("rules.yaml:10:5: rules[1].above: key 'above' appears twice")


def test_all_errors_reported_one_per_line_in_file_order() -> None:
    message = error_of("""\
        defaults:
          severity: loud
        rules:
          - name: A
            metric: cost_usd
            stat: p96
            above: .inf
          - name: B
            metric: latency_ms
            stat: p99
            below: 1
            enabled: maybe
        """)
    lines = message.splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        "rules.yaml:2:3",
        "rules.yaml:6:5",
        "rules.yaml:7:5",
        "rules.yaml:12:5",
    ]
    assert lines[0].startswith("rules.yaml:2:3: defaults.severity: 'loud' is not one of info")


def test_at_most_ten_errors_reported() -> None:
    rules = "".join(
        f"  - name: R{i}\n    metric: cost_usd\n    stat: p96\n    above: 1\n" for i in range(15)
    )
    lines = error_of("rules:\n" + rules).splitlines()
    assert len(lines) == 11
    assert lines[-1] == "rules.yaml: ... and 5 more problems"


def test_models_reject_unknown_keys_from_python_too() -> None:
    with pytest.raises(ValueError, match="thresold"):
        RulesFile.model_validate(
            {"rules": [{"name": "A", "metric": "cost_usd", "stat": "p95", "thresold": 1}]}
        )


# --------------------------------------------------------------------------- breakers

BREAKERS = """\
rules: []
breakers:
  trace: {max_loop_depth: 25, max_same_tool_calls: 5, max_cost_usd: 5,
          max_steps_per_minute: 60, ttl: 10m}
  route:
    error_rate: 0.5
    min_calls: 20
    window: 1m
    spend_ratio: 5
    history: 45m
    max_spend_usd: 200
    open_for: 90s
  overrides:
    - route: "agent/*"
      trace: {max_loop_depth: 40}
    - route: "agent/coder"
      trace: {max_cost_usd: 12.5}
      route_limits: {error_rate: 0.8, probe_calls: 3}
"""


def test_breakers_section_gives_limits_per_route() -> None:
    rules = parse(BREAKERS)
    plain = rules.breaker_limits("support/chat")
    assert plain.trace == TraceLimits(ttl_s=600.0)
    assert plain.route == RouteLimits(history_s=2700.0, max_spend_usd=200.0, open_s=90.0)
    researcher = rules.breaker_limits("agent/researcher")
    assert researcher.trace == TraceLimits(max_loop_depth=40)
    assert researcher.route == plain.route
    coder = rules.breaker_limits("agent/coder")  # both overrides, in file order
    assert coder.trace == TraceLimits(max_loop_depth=40, max_cost_usd=12.5)
    assert coder.route == dataclasses.replace(plain.route, error_rate=0.8, probe_calls=3)


@pytest.mark.parametrize("text", ["rules: []\n", "rules: []\nbreakers:\n", "breakers: {trace:}\n"])
def test_no_breakers_section_means_the_defaults(text: str) -> None:
    assert parse(text).breaker_limits("any/route") == BreakerLimits()


def test_breakers_unknown_key_suggests_the_right_one() -> None:
    message = error_of(BREAKERS.replace("min_calls: 20", "min_cals: 20"))
    assert message.startswith(
        "rules.yaml:7:5: breakers.route.min_cals: unknown key 'min_cals'; "
        "did you mean 'min_calls'? allowed keys here: error_rate, min_calls, window,"
    )


def test_breakers_unknown_key_in_an_override() -> None:
    message = error_of(BREAKERS.replace("route_limits:", "route_limit:"))
    assert message.startswith(
        "rules.yaml:18:7: breakers.overrides[1].route_limit: unknown key 'route_limit'; "
        "did you mean 'route_limits'? allowed keys here: route, trace, route_limits"
    )


@pytest.mark.parametrize(
    ("old", "new", "where", "problem"),
    [
        ("error_rate: 0.5", "error_rate: 50", "6:5: breakers.route.error_rate", "outside (0, 1]"),
        ("min_calls: 20", "min_calls: 2.5", "7:5: breakers.route.min_calls", "whole number"),
        ("window: 1m", "window: 1.5s", "8:5: breakers.route.window", "whole number of seconds"),
        ("history: 45m", "history: 30s", "10:5: breakers.route.history", "at least 1m"),
        ("open_for: 90s", "open_for: 0", "12:5: breakers.route.open_for", "longer than 0"),
        ("open_for: 90s", "open_for: soon", "12:5: breakers.route.open_for", "not a duration"),
        ("max_loop_depth: 25", "max_loop_depth: -1", "3:11: breakers.trace.max_loop_depth", ">= 0"),
        (
            "max_cost_usd: 12.5",
            "max_cost_usd: -1",
            "17:15: breakers.overrides[1].trace.max_cost_usd",
            "negative",
        ),
    ],
)
def test_breakers_bad_value_at_its_line(old: str, new: str, where: str, problem: str) -> None:
    assert BREAKERS.count(old) == 1
    message = error_of(BREAKERS.replace(old, new))
    assert message.startswith(f"rules.yaml:{where}"), message
    assert problem in message


def test_breakers_override_that_changes_nothing() -> None:
    message = error_of("breakers:\n  overrides:\n    - route: agent/*\n      trace: {}\n")
    assert message.startswith(
        "rules.yaml:3:7: breakers.overrides[0]: this override changes nothing"
    )
