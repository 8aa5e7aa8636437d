"""The alert engine: closed minutes in, contract alerts out, the same however batched."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from tracewatch.detectors.buckets import ClosedBucket
from tracewatch.detectors.columns import EventColumns, KeyTuple
from tracewatch.detectors.engine import AlertEngine, Transition
from tracewatch.detectors.lifecycle import fingerprint
from tracewatch.detectors.route_minutes import route_minutes
from tracewatch.detectors.stats import BucketStats
from tracewatch.schemas.event import TraceEvent
from tracewatch.schemas.rules import parse_rules

T0 = 1_795_341_600.0  # a minute boundary
ROUTE = "refund/primary"

Shape = Callable[[int, np.random.Generator], dict[str, object]]


def bucket(
    minute: int,
    events: Sequence[dict[str, object]],
    key: KeyTuple = (ROUTE, "gpt-4o-mini", "v1"),
    late: bool = False,
) -> ClosedBucket:
    start = T0 + 60 * minute
    parsed = [
        TraceEvent.model_validate(
            {
                "event_id": f"e{minute}-{i}",
                "trace_id": "t",
                "ts": start + i * 0.5,
                "kind": "llm",
                "route": key[0],
                "model": key[1],
                "prompt_version": key[2],
                **e,
            }
        )
        for i, e in enumerate(events)
    ]
    stats = BucketStats()
    stats.add(EventColumns.from_events(parsed))
    return ClosedBucket(key, start, 60.0, late, stats)


def normal_call(_minute: int, rng: np.random.Generator) -> dict[str, object]:
    return {
        "cost_usd": float(0.002 * rng.lognormal(0, 0.3)),
        "latency_ms": float(400 * rng.lognormal(0, 0.3)),
        "input_tokens": int(rng.integers(400, 600)),
        "output_tokens": int(rng.integers(80, 120)),
        "status": "error" if rng.random() < 0.01 else "ok",
        "scores": {"groundedness": float(rng.beta(17, 3))},
    }


def stream(
    minutes: int,
    shape: Shape = normal_call,
    per_minute: int = 40,
    seed: int = 7,
    key_at: Callable[[int], KeyTuple] | None = None,
) -> list[ClosedBucket]:
    rng = np.random.default_rng(seed)
    out = []
    for m in range(minutes):
        events = [shape(m, rng) for _ in range(per_minute)]
        out.append(bucket(m, events, key_at(m) if key_at else (ROUTE, "gpt-4o-mini", "v1")))
    return out


def run(engine: AlertEngine, buckets: Sequence[ClosedBucket], batch: int = 1) -> list[Transition]:
    out: list[Transition] = []
    for i in range(0, len(buckets), batch):
        out += engine.observe(buckets[i : i + batch])
    return out


def minute_of(ts: float) -> float:
    return (ts - T0) / 60


def test_a_quiet_route_raises_nothing_over_four_hours() -> None:
    assert run(AlertEngine(), stream(240)) == []


def test_a_cost_step_fires_within_minutes_with_route_model_and_wording() -> None:
    def shape(m: int, rng: np.random.Generator) -> dict[str, object]:
        call = normal_call(m, rng)
        if m >= 90:
            call["cost_usd"] = 3 * float(call["cost_usd"])  # type: ignore[arg-type]
        return call

    out = run(AlertEngine(), stream(120, shape))
    firing = [t for t in out if t.alert.status == "firing"]
    assert [t.alert.alertname for t in firing] == ["CostP95High"]
    first = firing[0]
    assert 90 < minute_of(first.at) <= 96  # decided within six minutes of event time
    alert = first.alert
    assert alert.labels == {
        "route": ROUTE, "metric": "cost_usd", "detector": "baseline", "severity": "warning",
        "model": "gpt-4o-mini", "prompt_version": "v1",
    }  # fmt: skip
    identity = {k: v for k, v in alert.labels.items() if k not in ("model", "prompt_version")}
    assert alert.fingerprint == fingerprint("CostP95High", identity)
    assert alert.value is not None and alert.baseline is not None
    assert 2.3 < alert.value / alert.baseline < 3.8
    assert f"p95 cost per request on {ROUTE} is" in alert.summary
    assert "x its baseline" in alert.summary
    assert alert.starts_at.timestamp() <= first.at


def test_a_step_resolves_once_it_becomes_the_baseline_with_the_same_labels() -> None:
    def shape(m: int, rng: np.random.Generator) -> dict[str, object]:
        call = normal_call(m, rng)
        if m >= 90:
            call["latency_ms"] = 3 * float(call["latency_ms"])  # type: ignore[arg-type]
        return call

    out = run(AlertEngine(), stream(200, shape))
    alerts = [t.alert for t in out if t.alert.alertname == "LatencyP95High"]
    assert [a.status for a in alerts] == ["firing", "resolved"]
    firing, resolved = alerts
    assert resolved.fingerprint == firing.fingerprint
    assert resolved.labels == firing.labels
    assert resolved.starts_at == firing.starts_at
    assert resolved.ends_at is not None and resolved.ends_at > firing.starts_at


def test_a_prompt_version_change_that_drops_a_score_names_the_new_version() -> None:
    def shape(m: int, rng: np.random.Generator) -> dict[str, object]:
        call = normal_call(m, rng)
        if m >= 100:
            call["scores"] = {"groundedness": float(rng.beta(6, 4))}  # mean 0.6
        return call

    def key_at(m: int) -> KeyTuple:
        return (ROUTE, "gpt-4o-mini", "v2" if m >= 100 else "v1")

    out = run(AlertEngine(), stream(130, shape, key_at=key_at))
    firing = [t for t in out if t.alert.status == "firing"]
    assert [t.alert.alertname for t in firing] == ["ScoreLow"]
    alert = firing[0].alert
    assert alert.labels["metric"] == "score:groundedness"
    assert alert.labels["prompt_version"] == "v2"
    assert "after prompt_version v1 -> v2" in alert.summary
    assert minute_of(firing[0].at) <= 106


def test_lower_is_better_scores_alert_when_they_rise() -> None:
    def shape(m: int, rng: np.random.Generator) -> dict[str, object]:
        call = normal_call(m, rng)
        call["scores"] = {"hallucination": float(rng.beta(2, 30 if m < 90 else 6))}
        return call

    out = run(AlertEngine(), stream(120, shape))
    assert [(t.alert.alertname, t.alert.labels["metric"]) for t in out[:1]] == [
        ("ScoreHigh", "score:hallucination")
    ]


def test_an_error_burst_fires_and_resolves_after_it_ends() -> None:
    def shape(m: int, rng: np.random.Generator) -> dict[str, object]:
        call = normal_call(m, rng)
        if 90 <= m < 100:
            call["status"] = "error" if rng.random() < 0.2 else "ok"
        return call

    out = run(AlertEngine(), stream(140, shape))
    alerts = [(t.alert.alertname, t.alert.status, minute_of(t.at)) for t in out]
    assert [a[:2] for a in alerts] == [("ErrorRateHigh", "firing"), ("ErrorRateHigh", "resolved")]
    assert 90 < alerts[0][2] <= 95
    assert 100 < alerts[1][2] <= 115
    assert "error rate on refund/primary is" in out[0].alert.summary


def test_transitions_do_not_depend_on_how_minutes_are_batched() -> None:
    def shape(m: int, rng: np.random.Generator) -> dict[str, object]:
        call = normal_call(m, rng)
        if 60 <= m < 75:
            call["status"] = "error" if rng.random() < 0.3 else "ok"
        if m >= 110:
            call["cost_usd"] = 4 * float(call["cost_usd"])  # type: ignore[arg-type]
        return call

    buckets = stream(180, shape)
    one = run(AlertEngine(), buckets, batch=1)
    assert len(one) >= 3
    assert run(AlertEngine(), buckets, batch=7) == one
    assert run(AlertEngine(), buckets, batch=len(buckets)) == one


def test_late_partials_are_not_judged() -> None:
    buckets = stream(100)
    spike = bucket(99, [{"cost_usd": 50.0}] * 40, late=True)
    assert run(AlertEngine(), [*buckets, spike]) == []


def test_threshold_rules_fire_after_their_duration_with_their_name_and_severity() -> None:
    rules = parse_rules(
        """
rules:
  - name: CostP95Budget
    metric: cost_usd
    stat: p95
    routes: ["refund/*"]
    above: 0.004
    for: 3m
    severity: critical
overrides:
  - route: other/route
    rule: CostP95Budget
    above: 1.0
"""
    )

    def shape(m: int, rng: np.random.Generator) -> dict[str, object]:
        call = normal_call(m, rng)
        call["cost_usd"] = 0.006 if m >= 10 else 0.001
        return call

    out = run(AlertEngine(rules=rules, auto=False), stream(20, shape))
    assert len(out) == 1
    alert = out[0].alert
    assert (alert.alertname, alert.status, alert.threshold) == ("CostP95Budget", "firing", 0.004)
    assert alert.labels["detector"] == "threshold" and alert.labels["severity"] == "critical"
    assert minute_of(alert.starts_at.timestamp()) == 11  # the first breached minute's end
    assert minute_of(out[0].at) == 14  # held for 3 minutes
    assert "above the $0.004 threshold" in alert.summary


def test_an_override_can_raise_a_threshold_for_one_route() -> None:
    rules = parse_rules(
        """
rules:
  - {name: LatencyBudget, metric: latency_ms, stat: p50, above: 100, for: 0}
overrides:
  - {route: refund/primary, rule: LatencyBudget, above: 100000}
"""
    )
    assert run(AlertEngine(rules=rules, auto=False), stream(10)) == []


def test_baseline_rules_use_their_own_window_and_ratio() -> None:
    rules = parse_rules(
        """
rules:
  - name: TokensVsBaseline
    metric: output_tokens
    stat: mean
    for: 0
    baseline: {ratio_above: 1.2, window: 2m, history: 30m, min_z: 3}
"""
    )

    def shape(m: int, rng: np.random.Generator) -> dict[str, object]:
        call = normal_call(m, rng)
        if m >= 40:
            call["output_tokens"] = int(rng.integers(120, 160))  # +40 %
        return call

    out = run(AlertEngine(rules=rules), stream(60, shape))
    assert [(t.alert.alertname, t.alert.status) for t in out[:1]] == [
        ("TokensVsBaseline", "firing")
    ]
    # the automatic step watch sees a +40 % step on 40 calls a minute too, after its hold
    auto = [t for t in out if t.alert.alertname == "OutputTokensHigh"]
    assert auto and auto[0].at > out[0].at


def test_without_auto_detection_or_rules_nothing_is_watched() -> None:
    def shape(m: int, rng: np.random.Generator) -> dict[str, object]:
        call = normal_call(m, rng)
        call["cost_usd"] = 10.0 if m > 80 else 0.001
        return call

    assert run(AlertEngine(auto=False), stream(100, shape)) == []


def test_route_state_is_bounded() -> None:
    engine = AlertEngine(max_routes=2)
    for i, route in enumerate(["a", "b", "c"]):
        engine.observe([bucket(i, [{"cost_usd": 0.1}], key=(route, "m", "v"))])
    assert engine.routes == 2


def test_route_minutes_merge_keys_and_name_the_busiest_one() -> None:
    a = bucket(0, [{"cost_usd": 1.0}] * 30, key=(ROUTE, "big", "v1"))
    b = bucket(0, [{"cost_usd": 100.0}] * 10, key=(ROUTE, "small", "v2"))
    other = bucket(0, [{"cost_usd": 5.0}], key=("other", "m", "v"))
    minutes = route_minutes([b, other, a])
    assert [(m.route, m.stats.count, m.model, m.prompt_version) for m in minutes] == [
        ("other", 1, "m", "v"),
        (ROUTE, 40, "big", "v1"),
    ]
    p95, n = minutes[1].value("cost_usd", "p95")
    assert n == 40 and p95 == pytest.approx(100.0, rel=0.01)
    assert minutes[1].value("cost_usd", "mean")[0] == pytest.approx((30 + 1000) / 40)
    assert minutes[1].value("cost_usd", "max")[0] == 100.0
    assert minutes[1].value("latency_ms", "p95") == (None, 0)


# --------------------------------------------------------------------------- drift watches


def cost_times(factor: Callable[[int], float]) -> Shape:
    def shape(m: int, rng: np.random.Generator) -> dict[str, object]:
        call = normal_call(m, rng)
        call["cost_usd"] = factor(m) * float(call["cost_usd"])  # type: ignore[arg-type]
        return call

    return shape


def drift_transitions(out: list[Transition]) -> list[Transition]:
    return [t for t in out if t.alert.labels["detector"] == "drift"]


def test_a_level_shift_fires_a_drift_alert_and_resolves() -> None:
    buckets = stream(200, cost_times(lambda m: 2.5 if m >= 100 else 1.0))
    out = run(AlertEngine(auto=False, drift=True), buckets)
    assert [(t.alert.alertname, t.alert.status) for t in out] == [
        ("CostLevelShift", "firing"),
        ("CostLevelShift", "resolved"),
    ]
    firing = out[0]
    assert 100 < minute_of(firing.at) <= 130  # ADWIN needs minutes of the new level
    alert = firing.alert
    assert alert.labels == {
        "route": ROUTE, "metric": "cost_usd", "detector": "drift", "severity": "info",
        "model": "gpt-4o-mini", "prompt_version": "v1",
    }  # fmt: skip
    assert alert.value is not None and alert.baseline is not None
    assert 1.8 < alert.value / alert.baseline < 3.5
    assert alert.threshold == pytest.approx(alert.baseline * 1.3)
    assert f"p95 cost per request on {ROUTE} shifted to " in alert.summary
    assert "x its earlier level (ADWIN)" in alert.summary
    assert minute_of(out[1].at) < 200


def test_a_slow_drift_of_30_percent_over_four_hours_raises_nothing() -> None:
    def shape(m: int, rng: np.random.Generator) -> dict[str, object]:
        call = cost_times(lambda m: 1.0 + 0.3 * m / 240)(m, rng)
        call["latency_ms"] = (1.0 + 0.3 * m / 240) * float(call["latency_ms"])  # type: ignore[arg-type]
        return call

    assert run(AlertEngine(drift=True), stream(240, shape)) == []


def test_drift_watches_are_absent_by_default() -> None:
    buckets = stream(200, cost_times(lambda m: 2.5 if m >= 100 else 1.0))
    assert run(AlertEngine(auto=False), buckets) == []
    out = run(AlertEngine(), buckets)
    assert out and drift_transitions(out) == []
    with_drift = run(AlertEngine(drift=True), buckets)
    assert [t.alert.alertname for t in drift_transitions(with_drift)][:1] == ["CostLevelShift"]
    # drift watches only add alerts: the automatic ones are unchanged
    assert [t for t in with_drift if t.alert.labels["detector"] != "drift"] == out


def test_transitions_do_not_depend_on_batching_with_drift_on() -> None:
    buckets = stream(200, cost_times(lambda m: 3.0 if m >= 90 else 1.0), seed=11)
    one = run(AlertEngine(drift=True), buckets, batch=1)
    assert drift_transitions(one)
    assert run(AlertEngine(drift=True), buckets, batch=7) == one
    assert run(AlertEngine(drift=True), buckets, batch=len(buckets)) == one


def test_drift_rules_use_their_own_shift_and_direction() -> None:
    rules = parse_rules(
        """
rules:
  - name: CostDown
    metric: cost_usd
    stat: p50
    severity: warning
    for: 0
    drift: {min_shift: 1.5, direction: down, history: 40m}
  - name: CostUp
    metric: cost_usd
    stat: p50
    drift: {direction: up}
"""
    )
    buckets = stream(160, cost_times(lambda m: 0.4 if m >= 90 else 1.0))
    out = run(AlertEngine(rules=rules, auto=False), buckets)
    assert [(t.alert.alertname, t.alert.status) for t in out][:1] == [("CostDown", "firing")]
    assert not any(t.alert.alertname == "CostUp" for t in out)
    alert = out[0].alert
    assert (alert.labels["detector"], alert.labels["severity"]) == ("drift", "warning")
    assert f"p50 cost per request on {ROUTE} shifted to 0." in alert.summary
    assert alert.threshold == pytest.approx(alert.baseline / 1.5)  # type: ignore[operator]


# --------------------------------------------------------------------------- step watches


def latency_times(factor: Callable[[int], float]) -> Shape:
    def shape(m: int, rng: np.random.Generator) -> dict[str, object]:
        call = normal_call(m, rng)
        call["latency_ms"] = factor(m) * float(call["latency_ms"])  # type: ignore[arg-type]
        return call

    return shape


def test_a_40_percent_latency_step_on_a_busy_route_fires_within_minutes() -> None:
    buckets = stream(130, latency_times(lambda m: 1.4 if m >= 100 else 1.0), per_minute=120)
    firing = [t for t in run(AlertEngine(), buckets) if t.alert.status == "firing"]
    assert [t.alert.alertname for t in firing] == ["LatencyP95High"]
    assert 100 < minute_of(firing[0].at) <= 110
    alert = firing[0].alert
    assert alert.labels["detector"] == "baseline"  # the identity labels did not change
    assert "x its baseline" in alert.summary and "z=" in alert.summary
    assert "change_point" not in alert.labels  # nothing was deployed


def test_a_daily_swing_and_a_slow_drift_do_not_fire() -> None:
    def shape(m: int, rng: np.random.Generator) -> dict[str, object]:
        call = latency_times(lambda m: 1.0 + 0.5 * math.sin(2 * math.pi * (m + 300) / 1440))(m, rng)
        call["cost_usd"] = (1.0 + 0.3 * m / 240) * float(call["cost_usd"])  # type: ignore[arg-type]
        return call

    assert run(AlertEngine(), stream(240, shape, per_minute=100)) == []


def test_a_new_prompt_version_with_a_step_is_named_as_the_likely_change_point() -> None:
    def key_at(m: int) -> KeyTuple:
        return (ROUTE, "gpt-4o-mini", "v2" if m >= 100 else "v1")

    shape = latency_times(lambda m: 1.5 if m >= 100 else 1.0)
    out = run(AlertEngine(), stream(120, shape, per_minute=80, key_at=key_at))
    firing = [t.alert for t in out if t.alert.status == "firing"]
    assert [a.alertname for a in firing] == ["LatencyP95High"]
    assert firing[0].labels["change_point"] == "prompt_version v2"
    assert firing[0].labels["prompt_version"] == "v2"
    assert "prompt_version v2 appeared at" in firing[0].summary
    assert "a likely change point" in firing[0].summary


def test_a_new_prompt_version_that_changes_nothing_raises_nothing() -> None:
    def key_at(m: int) -> KeyTuple:
        return (ROUTE, "gpt-4o-mini", f"v{1 + m // 60}")

    assert run(AlertEngine(), stream(240, per_minute=80, key_at=key_at)) == []


def test_the_minimum_effect_is_configurable_per_metric() -> None:
    buckets = stream(130, latency_times(lambda m: 1.4 if m >= 100 else 1.0), per_minute=120)
    assert run(AlertEngine(min_effect={"latency_ms": 0.6}), buckets) == []


# --------------------------------------------------------------------------- guardrails, timeouts


def guardrail_call(block_rate: Callable[[int], float]) -> Shape:
    def shape(m: int, rng: np.random.Generator) -> dict[str, object]:
        blocked = rng.random() < block_rate(m)
        return {
            "kind": "guardrail",
            "latency_ms": float(20 * rng.lognormal(0, 0.3)),
            "guardrail_name": "prompt_injection",
            "guardrail_action": "block" if blocked else "allow",
        }

    return shape


def test_a_guardrail_block_rate_from_1_to_5_percent_fires_with_the_guardrail_name() -> None:
    shape = guardrail_call(lambda m: 0.05 if m >= 90 else 0.01)
    out = run(AlertEngine(), stream(110, shape, per_minute=180))
    firing = [t for t in out if t.alert.status == "firing"]
    assert [t.alert.alertname for t in firing] == ["GuardrailBlockRateHigh"]
    assert 90 < minute_of(firing[0].at) <= 100
    alert = firing[0].alert
    assert alert.labels["metric"] == "guardrail_block_rate:prompt_injection"
    assert alert.labels["guardrail"] == "prompt_injection"
    assert "block rate of guardrail prompt_injection on" in alert.summary


def test_timeouts_are_watched_apart_from_errors() -> None:
    def shape(m: int, rng: np.random.Generator) -> dict[str, object]:
        call = normal_call(m, rng)
        if 90 <= m < 100 and rng.random() < 0.15:
            call["status"] = "timeout"
        return call

    out = run(AlertEngine(), stream(110, shape, per_minute=60))
    names = {t.alert.alertname for t in out if t.alert.status == "firing"}
    assert {"TimeoutRateHigh", "ErrorRateHigh"} <= names


def test_retries_are_watched() -> None:
    def shape(m: int, rng: np.random.Generator) -> dict[str, object]:
        call = normal_call(m, rng)
        call["retry_count"] = int(rng.random() < (0.2 if m >= 90 else 0.01))
        return call

    out = run(AlertEngine(), stream(110, shape, per_minute=60))
    assert [t.alert.alertname for t in out if t.alert.status == "firing"] == ["RetryRateHigh"]
