"""Benchmark scenarios: determinism, valid events, incidents really in the data, scoring.

Streams take a few tenths of a second each, so each (kind, seed) used here is
built once per session and shared.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from tracewatch.demo.scenarios import (
    COST_FACTOR,
    DURATION_S,
    ERROR_MINUTES,
    ERROR_RATE,
    GROUNDEDNESS_MEAN,
    INCIDENT_KINDS,
    KINDS,
    LATENCY_FACTOR,
    MATCH_GRACE_S,
    ROUTES,
    START_MINUTES,
    Background,
    Incident,
    Scenario,
    make_scenario,
    scenario_labels,
)
from tracewatch.demo.scoring import format_table, score
from tracewatch.demo.traffic import Event
from tracewatch.schemas.alert import Alert
from tracewatch.schemas.validation import validate_message

IDS = ("event_id", "trace_id", "span_id", "parent_span_id")
T0 = 1_767_225_600.0  # the start of seed 0's streams


#: Incident and determinism tests run on half the traffic, which is twice as fast.
QUICK = 0.5


@cache
def stream(kind: str, seed: int = 0, volume: float = QUICK) -> Scenario:
    return make_scenario(kind, seed, volume=volume)


def full_clean() -> Scenario:
    """The benchmark's own clean stream for seed 0, for the checks on scale."""
    return stream("clean", 0, 1.0)


def route_events(s: Scenario, route: str) -> list[Event]:
    return [e for e in s.events if e["route"] == route]


def values(events: Sequence[Event], name: str) -> np.ndarray:
    return np.array([e[name] for e in events if name in e], dtype=float)


def window(events: Sequence[Event], lo: float, hi: float) -> list[Event]:
    return [e for e in events if lo <= float(e["ts"]) < hi]  # type: ignore[arg-type]


def error_rate(events: Sequence[Event]) -> float:
    return float(np.mean([e["status"] != "ok" for e in events]))


def without_ids(event: Event) -> Event:
    return {k: v for k, v in event.items() if k not in IDS}


# --- determinism -----------------------------------------------------------------------------


def test_same_seed_gives_the_same_stream() -> None:
    again = make_scenario("error_burst", 0, volume=QUICK)
    first = stream("error_burst")
    assert again.events == first.events
    assert again.incidents == first.incidents
    assert again.background == first.background
    assert (again.start, again.end) == (first.start, first.end)


def test_different_seeds_differ() -> None:
    a, b = stream("clean", 0), stream("clean", 1)
    assert a.start != b.start
    assert a.background != b.background
    assert [without_ids(e) for e in a.events[:100]] != [without_ids(e) for e in b.events[:100]]


def test_kinds_of_one_seed_share_the_background() -> None:
    """Only the incident (and the ids) differ from the clean stream of the same seed."""
    clean, cost = stream("clean"), stream("cost_jump")
    (incident,) = cost.incidents
    assert len(clean.events) == len(cost.events)
    assert {e["event_id"] for e in clean.events}.isdisjoint(e["event_id"] for e in cost.events)
    for a, b in zip(clean.events[::7], cost.events[::7], strict=True):
        if b["route"] != incident.route:
            assert without_ids(a) == without_ids(b)
    pairs = zip(
        route_events(clean, incident.route), route_events(cost, incident.route), strict=True
    )
    for a, b in pairs:
        a, b = without_ids(a), without_ids(b)
        if "cost_usd" in b:
            ratio = float(b.pop("cost_usd")) / float(a.pop("cost_usd"))  # type: ignore[arg-type]
            if b["ts"] < incident.start:  # type: ignore[operator]
                assert ratio == pytest.approx(1.0, rel=1e-3)
            elif b["ts"] > incident.start + 300:  # type: ignore[operator]
                assert ratio == pytest.approx(incident.magnitude, rel=1e-3)
            else:  # a request that started before the change may end after it
                assert ratio == pytest.approx(1.0, rel=1e-3) or ratio == pytest.approx(
                    incident.magnitude, rel=1e-3
                )
        assert a == b


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="kind"):
        make_scenario("meteor_strike", 0)
    with pytest.raises(ValueError, match="seed"):
        scenario_labels("clean", -1)


# --- valid events, realistic background ------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_events_are_valid_contract_events(kind: str) -> None:
    s = stream(kind)
    rng = np.random.default_rng(0)
    sample = set(rng.choice(len(s.events), 300, replace=False).tolist())
    first_of_shape: dict[tuple[object, ...], int] = {}
    for i, e in enumerate(s.events):  # one of every (route, kind, status, scored) shape too
        first_of_shape.setdefault((e["route"], e["kind"], e["status"], "scores" in e), i)
    for i in sorted(sample | set(first_of_shape.values())):
        event = validate_message(json.dumps(s.events[i]).encode())
        assert event.event_id == s.events[i]["event_id"]
    assert len({e["event_id"] for e in s.events}) == len(s.events)
    ts = values(s.events, "ts")
    assert np.all(np.diff(ts) >= 0)
    assert s.start <= ts[0] and ts[-1] < s.end == s.start + DURATION_S
    assert {e["route"] for e in s.events} == set(s.routes) == {r.name for r in ROUTES}


def test_write_jsonl_round_trips(tmp_path: Path) -> None:
    s = stream("clean")
    small = Scenario(s.kind, s.seed, s.start, s.end, s.routes, s.background, [], s.events[:50])
    path = tmp_path / "events.jsonl"
    assert small.write_jsonl(path) == 50
    assert [json.loads(line) for line in path.read_text().splitlines()] == small.events
    assert [json.loads(line) for line in small.lines()] == small.events


def test_volume_scales_the_traffic_only() -> None:
    full, half = full_clean(), stream("clean")
    assert len(half.events) / len(full.events) == pytest.approx(0.5, abs=0.02)
    assert (half.start, half.background, half.volume) == (full.start, full.background, 0.5)
    with pytest.raises(ValueError, match="volume"):
        make_scenario("clean", 0, volume=0)


def test_the_start_is_a_fixed_epoch_per_seed() -> None:
    s = stream("clean")
    assert s.start % 60 == 0
    assert datetime.fromtimestamp(s.start, UTC).year == 2026
    assert stream("clean", 1).start - s.start == 86_400
    # in the past, or the worker refuses the events as future_timestamp
    assert s.start + 300 * 86_400 < datetime(2026, 12, 1, tzinfo=UTC).timestamp()


def test_background_routes_span_three_orders_of_magnitude() -> None:
    s = full_clean()
    assert 30_000 <= len(s.events) <= 60_000
    cost = {r: np.median(values(route_events(s, r), "cost_usd")) for r in s.routes}
    latency = {
        r: np.median(values([e for e in route_events(s, r) if e["kind"] == "llm"], "latency_ms"))
        for r in s.routes
    }
    per_min = {r: len(route_events(s, r)) / (DURATION_S / 60) for r in s.routes}
    assert min(cost.values()) < 0.0003 and max(cost.values()) > 0.15
    assert min(latency.values()) < 200 and max(latency.values()) > 6000
    assert min(per_min.values()) >= 12 and max(per_min.values()) <= 160
    assert max(per_min.values()) / min(per_min.values()) > 4


def test_background_noise_errors_scores_and_agents() -> None:
    s = full_clean()
    assert 0.007 < error_rate(s.events) < 0.014
    assert {e["status"] for e in s.events} == {"ok", "error", "timeout"}
    scored = [e for e in s.events if "scores" in e]
    assert 0.02 < len(scored) / len(s.events) < 0.5
    assert all(0 <= v <= 1 for e in scored for v in e["scores"].values())  # type: ignore[attr-defined]
    g = [e["scores"]["groundedness"] for e in scored if "groundedness" in e["scores"]]  # type: ignore[index, operator]
    assert np.mean(g) == pytest.approx(0.85, abs=0.02)
    agent = [e for e in s.events if "loop_depth" in e]
    assert {e["kind"] for e in agent} == {"llm", "tool"}
    assert max(values(agent, "loop_depth")) >= 5
    assert all("tool_name" in e for e in agent if e["kind"] == "tool")


def test_volume_swings_diurnally_within_the_stream() -> None:
    s = full_clean()
    counts, _ = np.histogram(values(s.events, "ts"), bins=16, range=(s.start, s.end))
    amplitude = s.background.diurnal_amplitude
    assert counts.max() / counts.min() > 2.0
    assert counts.max() / counts.min() < (1 + amplitude) / (1 - amplitude) * 1.3


def test_the_slow_drift_is_small_per_hour() -> None:
    s = full_clean()
    bg = s.background
    assert bg.drift_metric == "cost_usd" and 0.25 <= bg.drift_total <= 0.30
    events = [e for e in route_events(s, bg.drift_route) if "cost_usd" in e]
    price_in, price_out = next(r.profile for r in ROUTES if r.name == bg.drift_route).price_per_mtok
    list_price = np.array(
        [(e["input_tokens"] * price_in + e["output_tokens"] * price_out) / 1e6 for e in events]  # type: ignore[operator]
    )
    hours = (values(events, "ts") - s.start) / 3600
    factor = values(events, "cost_usd") / list_price  # the drift, exactly
    slope = np.polyfit(hours, factor, 1)[0]
    assert slope == pytest.approx(bg.drift_total / 4, rel=0.05)  # about +7 % an hour
    assert factor.min() > 0.99 and factor.max() < 1 + bg.drift_total + 0.01
    last, first = (np.median(factor[hours >= 3]), np.median(factor[hours < 1]))
    assert 1.15 < last / first < 1.3


# --- the incidents are in the data -----------------------------------------------------------


@pytest.mark.parametrize("kind", INCIDENT_KINDS)
def test_incident_labels_are_within_the_stated_ranges(kind: str) -> None:
    low, high = {
        "cost_jump": COST_FACTOR,
        "latency_regression": LATENCY_FACTOR,
        "prompt_quality_drop": GROUNDEDNESS_MEAN,
        "error_burst": ERROR_RATE,
    }[kind]
    for seed in range(40):
        start = T0 + seed * 86_400
        background, (incident,) = scenario_labels(kind, seed)
        assert incident.kind == kind and incident.route != background.drift_route
        assert START_MINUTES[0] <= (incident.start - start) / 60 <= START_MINUTES[1]
        assert low <= incident.magnitude <= high
        if kind == "error_burst":
            assert incident.end is not None
            assert ERROR_MINUTES[0] <= (incident.end - incident.start) / 60 <= ERROR_MINUTES[1]
        else:
            assert incident.end is None
    assert scenario_labels("clean", 0)[1] == []


def test_incident_routes_and_starts_vary_with_the_seed() -> None:
    labels = [scenario_labels("latency_regression", seed)[1][0] for seed in range(30)]
    assert len({i.route for i in labels}) >= 4
    assert len({i.start % 86_400 for i in labels}) >= 25


def p95_ratio(s: Scenario, name: str) -> float:
    (incident,) = s.incidents
    events = route_events(s, incident.route)
    before = values(window(events, s.start, incident.start), name)
    after = values(window(events, incident.start + 60, s.end), name)
    return float(np.quantile(after, 0.95) / np.quantile(before, 0.95))


def test_cost_jump_raises_the_routes_p95_cost_and_nothing_else() -> None:
    s = stream("cost_jump")
    (incident,) = s.incidents
    assert incident.metric == "cost_usd"
    ratio = p95_ratio(s, "cost_usd")
    assert COST_FACTOR[0] * 0.9 <= ratio <= COST_FACTOR[1] * 1.1
    assert ratio == pytest.approx(incident.magnitude, rel=0.2)
    assert p95_ratio(s, "latency_ms") == pytest.approx(1.0, abs=0.15)


def test_latency_regression_raises_the_routes_p95_latency() -> None:
    s, clean = stream("latency_regression"), stream("clean")
    (incident,) = s.incidents
    assert incident.metric == "latency_ms"
    ratio = p95_ratio(s, "latency_ms")
    assert LATENCY_FACTOR[0] * 0.9 <= ratio <= LATENCY_FACTOR[1] * 1.1
    assert ratio == pytest.approx(incident.magnitude, rel=0.2)
    assert p95_ratio(s, "cost_usd") == pytest.approx(1.0, abs=0.15)
    for route in set(s.routes) - {incident.route}:  # other routes are untouched
        for name in ("ts", "latency_ms", "cost_usd"):
            assert np.array_equal(
                values(route_events(s, route), name), values(route_events(clean, route), name)
            )


def test_prompt_quality_drop_changes_the_version_and_lowers_groundedness() -> None:
    s = stream("prompt_quality_drop")
    (incident,) = s.incidents
    assert incident.metric == "score:groundedness"
    events = route_events(s, incident.route)
    before = window(events, s.start, incident.start)
    after = window(events, incident.start + 60, s.end)
    assert len({e["prompt_version"] for e in before}) == 1
    assert len({e["prompt_version"] for e in after}) == 1
    assert before[0]["prompt_version"] != after[0]["prompt_version"]

    def mean(evs: list[Event], name: str) -> float:
        return float(np.mean([e["scores"][name] for e in evs if "scores" in e]))  # type: ignore[index]

    assert mean(before, "groundedness") == pytest.approx(0.85, abs=0.03)
    assert mean(after, "groundedness") == pytest.approx(incident.magnitude, abs=0.03)
    profile = next(r.profile for r in ROUTES if r.name == incident.route)
    other = next(spec.name for spec in profile.scores if spec.name != "groundedness")
    assert mean(after, other) == pytest.approx(mean(before, other), abs=0.03)
    assert p95_ratio(s, "cost_usd") == pytest.approx(1.0, abs=0.15)
    assert error_rate(after) < 0.03


def test_error_burst_is_high_in_its_window_and_back_after() -> None:
    s = stream("error_burst")
    (incident,) = s.incidents
    assert incident.metric == "error_rate" and incident.end is not None
    events = route_events(s, incident.route)
    during = window(events, incident.start + 30, incident.end)
    after = window(events, incident.end + 60, incident.end + 3600)
    before = window(events, s.start, incident.start)
    p = incident.magnitude  # a binomial share: allow five standard errors
    assert error_rate(during) == pytest.approx(p, abs=5 * (p * (1 - p) / len(during)) ** 0.5)
    assert error_rate(during) > 0.08
    assert error_rate(before) < 0.02 and error_rate(after) < 0.025
    failed = [e for e in during if e["status"] != "ok"]
    assert all("cost_usd" not in e and "output_tokens" not in e for e in failed)
    assert p95_ratio(s, "latency_ms") == pytest.approx(1.0, abs=0.15)


# --- scoring ---------------------------------------------------------------------------------


def labelled(kind: str, incidents: list[Incident], hours: float = 4.0) -> Scenario:
    bg = Background(0.5, 0.0, "search/suggest", "cost_usd", 0.25)
    routes = ["a", "b", "c", "d", "e"]
    return Scenario(kind, 0, T0, T0 + hours * 3600, routes, bg, incidents, [])


def incident(kind: str = "cost_jump", end: float | None = None) -> Incident:
    metric = {"cost_jump": "cost_usd", "error_burst": "error_rate"}[kind]
    return Incident(kind, "a", metric, T0 + 6000, end, 2.5, "test incident")


def alert(
    route: str = "a", metric: str = "cost_usd", status: str = "firing", fp: str = "fp1"
) -> Alert:
    return Alert(
        fingerprint=fp,
        status=status,  # type: ignore[arg-type]
        alertname="CostP95High",
        labels={"route": route, "metric": metric},
        starts_at=datetime.fromtimestamp(T0, UTC),
    )


def test_a_firing_alert_inside_the_window_detects_with_its_delay() -> None:
    s = labelled("cost_jump", [incident()])
    table = score([(s, [(T0 + 6180, alert()), (T0 + 6600, alert(fp="fp2"))])])
    (k,) = table.kinds
    assert (k.kind, k.incidents, k.detected, k.missed) == ("cost_jump", 1, 1, 0)
    assert k.median_delay_s == k.max_delay_s == 180  # the first one counts
    assert table.false_alarm_count == 0 and table.all_detected


@pytest.mark.parametrize(
    ("decided_at", "labels"),
    [
        (T0 + 6180, {"route": "b"}),  # wrong route
        (T0 + 6180, {"metric": "latency_ms"}),  # wrong metric
        (T0 + 5999, {}),  # before the start
        (T0 + 4 * 3600 + MATCH_GRACE_S + 1, {}),  # after the stream's end + grace
    ],
)
def test_an_alert_that_matches_no_incident_is_a_false_alarm(
    decided_at: float, labels: dict[str, str]
) -> None:
    s = labelled("cost_jump", [incident()])
    table = score([(s, [(decided_at, alert(**labels))])])
    assert table.false_alarm_count == 1 and table.kinds[0].missed == 1
    (fa,) = table.false_alarms
    assert fa.scenario == s.name and fa.minute == pytest.approx((decided_at - T0) / 60)


def test_an_ended_incident_matches_until_its_end_plus_grace() -> None:
    end = T0 + 6600
    s = labelled("error_burst", [incident("error_burst", end)])
    on_time = [(end + MATCH_GRACE_S, alert(metric="error_rate"))]
    late = [(end + MATCH_GRACE_S + 1, alert(metric="error_rate"))]
    assert score([(s, on_time)]).kinds[0].detected == 1
    assert score([(s, late)]).false_alarm_count == 1


def test_repeated_firing_of_an_open_episode_counts_once() -> None:
    s = labelled("clean", [])
    again = [(T0 + 100, alert()), (T0 + 160, alert()), (T0 + 220, alert())]
    assert score([(s, again)]).false_alarm_count == 1
    reopened = [*again, (T0 + 300, alert(status="resolved")), (T0 + 900, alert())]
    assert score([(s, reopened)]).false_alarm_count == 2
    other = [(T0 + 100, alert()), (T0 + 100, alert(fp="fp2"))]
    assert score([(s, other)]).false_alarm_count == 2


def test_resolution_after_an_ended_incident_is_reported() -> None:
    end = T0 + 6600
    s = labelled("error_burst", [incident("error_burst", end)])
    fired, resolved = alert(metric="error_rate"), alert(metric="error_rate", status="resolved")
    table = score([(s, [(T0 + 6120, fired), (end + 240, resolved)])])
    (k,) = table.kinds
    assert (k.detected, k.resolved, k.median_resolution_s) == (1, 1, 240)
    (d,) = table.detections
    assert d.delay_s == 120 and d.resolution_delay_s == 240
    still_firing = score([(s, [(T0 + 6120, fired)])])
    assert still_firing.kinds[0].resolved == 0 and still_firing.detections[0].resolved_at is None


def test_false_alarms_per_route_hour_and_on_clean_streams() -> None:
    clean, jump = labelled("clean", []), labelled("cost_jump", [incident()])
    runs = [
        (clean, [(T0 + 60, alert(route="c"))]),
        (jump, [(T0 + 6100, alert()), (T0 + 60, alert(route="d", fp="x"))]),
    ]
    table = score(runs)
    assert table.route_hours == 40 and table.clean_route_hours == 20
    assert table.false_alarm_count == 2 and table.clean_false_alarms == 1
    assert table.false_alarms_per_route_hour == pytest.approx(2 / 40)
    text = format_table(table)
    assert "cost_jump" in text and "false alarms: 2 over 40 route-hours" in text
    assert "on clean streams: 1 over 20" in text and "route=d" in text


def test_missed_incidents_are_listed() -> None:
    table = score([(labelled("cost_jump", [incident()]), [])])
    assert not table.all_detected
    assert table.kinds[0].median_delay_s is None
    assert "missed" in format_table(table) and "test incident" in format_table(table)
