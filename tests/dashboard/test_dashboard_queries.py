"""The dashboard's SQL against a real embedded ClickHouse (chDB), and its pure shaping.

One chDB engine per test process (chDB opens one engine directory per process);
every test has a database of its own in it.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tracewatch.config import ClickHouseSettings
from tracewatch.dashboard import queries
from tracewatch.dashboard.markers import BreakerOpening, MarkerHistory, breaker_markers, trace_ids
from tracewatch.errors import ConfigError
from tracewatch.schemas.alert import Alert
from tracewatch.schemas.breaker import BreakerSignal
from tracewatch.sinks.clickhouse import ClickHouseSink

BOUND = 0.01
HOUR = 3600
ROUTE = "support/chat"

# two routes over the last five hours; support/chat has a hole in its third hour
INSERT = """
INSERT INTO {db:Identifier}.events
    (event_id, trace_id, ts, kind, route, model, prompt_version, latency_ms, cost_usd, status,
     loop_depth, scores)
SELECT toString(number), concat('trace-', toString(number)),
       toDateTime64({t0:Float64} + number * {spacing:Float64}, 3, 'UTC') AS at,
       'llm', ['support/chat', 'agent/coder'][number % 3 % 2 + 1] AS r,
       ['gpt-4o', 'gpt-4o-mini'][number % 5 % 2 + 1], 'v1',
       300 * exp(randNormal(0, 0.5)), 0.002 * exp(randNormal(0, 0.8)),
       if(number % 13 = 0, 'error', 'ok'),
       if(number % 2 = 0, toUInt32(number % 7), NULL),
       if(number % 3 = 0, map('groundedness', randUniform(0.5, 1)), map())
FROM numbers({n:UInt64})
WHERE NOT (r = 'support/chat' AND at >= {hole:Float64} AND at < {hole:Float64} + 3600)
"""


@pytest.fixture
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseSink]:
    engine = tmp_path_factory.getbasetemp() / "chdb"  # one per process: every test shares it
    settings = ClickHouseSettings(dsn=f"chdb://{engine}", database=f"d_{uuid.uuid4().hex[:12]}")
    with ClickHouseSink(settings) as opened:
        yield opened


@pytest.fixture
def t0() -> int:
    return (math.floor(time.time() / HOUR) - 5) * HOUR


@pytest.fixture
def filled(sink: ClickHouseSink, t0: int) -> ClickHouseSink:
    params = {"db": sink.database, "t0": t0, "spacing": 5 * HOUR / 30000, "n": 30000}
    sink.query(INSERT, {**params, "hole": t0 + 2 * HOUR}, readonly=False)
    return sink


def run(sink: ClickHouseSink, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    return sink.query(sql, params).rows


def series(sink: ClickHouseSink, plan: queries.SeriesPlan) -> dict[str, Any]:
    return queries.shape_series(
        plan, run(sink, queries.series_sql(plan), plan.parameters(sink.database))
    )


def raw(sink: ClickHouseSink, sql: str, start: int, end: int) -> list[tuple[Any, ...]]:
    where = (
        "route = {route:String} AND ts >= toDateTime64({s:Int64}, 3) "
        "AND ts < toDateTime64({e:Int64}, 3)"
    )
    return run(
        sink, sql.format(where=where), {"db": sink.database, "route": ROUTE, "s": start, "e": end}
    )


def test_a_short_range_reads_raw_events_minute_by_minute(filled: ClickHouseSink, t0: int) -> None:
    start, end = t0 + 30 * 60, t0 + 90 * 60
    plan = queries.plan_series(ROUTE, start, end)
    assert (plan.source, plan.step, plan.points) == ("events", 60, 60)
    body = series(filled, plan)
    assert body["t"] == list(range(start, end, 60))
    want = raw(
        filled,
        "SELECT toUnixTimestamp(toStartOfMinute(ts)) AS m, count(), countIf(status != 'ok') "
        "/ count(), avgIf(scores['groundedness'], mapContains(scores, 'groundedness')), "
        "max(loop_depth) FROM {{db:Identifier}}.events WHERE {where} GROUP BY m ORDER BY m",
        start,
        end,
    )
    assert [r[0] for r in want] == body["t"]
    assert body["count"] == [r[1] for r in want]
    assert body["error_rate"] == pytest.approx([r[2] for r in want], rel=1e-12)
    assert body["scores"]["groundedness"] == pytest.approx([r[3] for r in want], rel=1e-9)
    assert body["loop_depth_max"] == [r[4] for r in want]


def within_bound(estimate: float, values: list[float], q: float) -> bool:
    rank = q * (len(values) - 1)
    low = values[max(math.floor(rank) - 1, 0)] * (1 - BOUND)
    return low <= estimate <= values[min(math.ceil(rank) + 1, len(values) - 1)] * (1 + BOUND)


def test_quantiles_from_either_table_keep_the_sketch_bound_and_agree(
    filled: ClickHouseSink, t0: int
) -> None:
    long = queries.plan_series(ROUTE, t0 - 7 * 86400, t0 + 5 * HOUR, step=HOUR)
    short = queries.plan_series(ROUTE, t0, t0 + 5 * HOUR, step=HOUR)
    assert (long.source, short.source) == ("stats_1h", "events")
    from_rollup, from_events = series(filled, long), series(filled, short)
    values = raw(
        filled,
        "SELECT toUnixTimestamp(toStartOfHour(ts)) AS h, arraySort(groupArray(cost_usd)), "
        "arraySort(groupArray(latency_ms)) FROM {{db:Identifier}}.events WHERE {where} "
        "GROUP BY h ORDER BY h",
        t0,
        t0 + 5 * HOUR,
    )
    assert [v[0] for v in values] == [t0, t0 + HOUR, t0 + 3 * HOUR, t0 + 4 * HOUR]  # the hole
    for hour, costs, latencies in values:
        i, j = from_rollup["t"].index(hour), from_events["t"].index(hour)
        for name, sample in (("cost", costs), ("latency", latencies)):
            for q in ("p50", "p95", "p99"):
                estimate = from_rollup[f"{name}_{q}"][i]
                assert estimate == pytest.approx(from_events[f"{name}_{q}"][j], rel=1e-9)
                assert within_bound(estimate, sample, float(f"0.{q[1:]}")), (name, q, hour)
    hole = from_rollup["t"].index(t0 + 2 * HOUR)
    assert from_rollup["count"][hole] is None and from_rollup["cost_p95"][hole] is None
    assert sum(c for c in from_rollup["count"] if c) == sum(c for c in from_events["count"] if c)


def test_routes_come_busiest_first_and_traces_find_their_route(
    filled: ClickHouseSink, t0: int
) -> None:
    rows = run(
        filled, queries.ROUTES_SQL, queries.routes_parameters(filled.database, t0, t0 + 5 * HOUR)
    )
    routes = queries.shape_routes(rows)
    counted = run(
        filled,
        "SELECT route, count() AS n FROM {db:Identifier}.events GROUP BY route ORDER BY n DESC",
        {"db": filled.database},
    )
    assert [(r["route"], r["events"]) for r in routes] == counted
    assert (
        sum(r["events"] for r in routes)
        == run(filled, "SELECT count() FROM {db:Identifier}.events", {"db": filled.database})[0][0]
    )
    found = dict(
        run(
            filled,
            queries.TRACE_ROUTES_SQL,
            {"db": filled.database, "ids": ["trace-0", "trace-1", "nope"]},
        )
    )
    assert found == {"trace-0": ROUTE, "trace-1": "agent/coder"}


def test_hostile_route_names_are_values_not_sql(filled: ClickHouseSink, t0: int) -> None:
    plan = queries.plan_series("x' OR 1=1 --", t0, t0 + HOUR)
    body = series(filled, plan)
    assert all(v is None for v in body["count"])


def test_plans_snap_steps_switch_tables_and_refuse_nonsense() -> None:
    assert queries.plan_series("r", 0, 900).step == 60
    six_hours = queries.plan_series("r", 0, 6 * HOUR)
    assert (six_hours.source, six_hours.step) == ("events", 120)
    day = queries.plan_series("r", 0, 86400)
    assert (day.source, day.step) == ("stats_1h", HOUR)
    month = queries.plan_series("r", 0, 30 * 86400)
    assert (month.source, month.step) == ("stats_1h", 3 * HOUR)
    assert queries.plan_series("r", 0, 86400, step=61).step == HOUR  # the rollup has hours
    assert queries.plan_series("r", 130, 3000, step=61).step == 120
    aligned = queries.plan_series("r", 130, 3000)
    assert (aligned.start, aligned.end) == (120, 3000)
    for args, message in [
        (("", 0, 60), "pick a route"),
        (("r", 60, 60), "`from` must be before `to`"),
        (("r", 0, 500 * 86400), "at most 400 days"),
        (("r", 0, float("nan")), "`from` must be before `to`"),
    ]:
        with pytest.raises(ConfigError, match=message):
            queries.plan_series(*args)


def test_shaping_fills_gaps_and_turns_nan_into_null() -> None:
    plan = queries.plan_series("r", 0, 300)
    rows = [
        (
            60,
            4,
            0.25,
            [0.1, 0.2, 0.3],
            [10.0, 20.0, 30.0],
            3,
            [1.0, 2.0, 3.0],
            {"g": 1.5},
            {"g": 2, "h": 1},
        ),
        (180, 1, 0.0, [math.nan] * 3, [5.0] * 3, None, [math.nan] * 3, {}, {}),
        (999, 1, 0.0, [1.0] * 3, [1.0] * 3, 1, [1.0] * 3, {}, {}),  # outside: ignored
    ]
    body = queries.shape_series(plan, rows)
    assert body["t"] == [0, 60, 120, 180, 240]
    assert body["count"] == [None, 4, None, 1, None]
    assert body["cost_p95"] == [None, 0.2, None, None, None]
    assert body["loop_depth_p95"] == [None, 2.0, None, None, None]
    assert body["scores"] == {
        "g": [None, 0.75, None, None, None],
        "h": [None, 0.0, None, None, None],
    }


def alert(status: str, starts: int, route: str = ROUTE, ends: int | None = None) -> Alert:
    return Alert(
        fingerprint=f"fp-{route}", status=status, alertname="CostP95High",
        labels={"route": route, "metric": "cost_usd", "severity": "warning"},
        starts_at=datetime.fromtimestamp(starts, UTC),
        ends_at=None if ends is None else datetime.fromtimestamp(ends, UTC), summary="s",
    )  # fmt: skip


def test_marker_history_folds_episodes_and_stays_bounded() -> None:
    history = MarkerHistory(limit=3)
    history.add_alert(alert("firing", 1000))
    history.add_alert(alert("resolved", 1000, ends=1600))
    history.add_alert(alert("firing", 1000))  # a re-send after a restart: still resolved
    history.add_alert(alert("firing", 5000, route="other"))
    [marker] = history.alerts(ROUTE, 0, 2000)
    assert (marker["at"], marker["end"], marker["status"]) == (1000, 1600, "resolved")
    assert history.alerts(ROUTE, 1001, 2000) == []
    for i in range(5):
        history.add_alert(alert("firing", 10_000 + i, route=f"r{i}"))
    assert history.alerts(ROUTE, 0, 2000) == [] and len(history) == 3


def test_breaker_markers_find_the_route_of_a_trace() -> None:
    history = MarkerHistory()
    at = datetime.fromtimestamp(2000, UTC)
    for scope in ("trace:t1", "trace:t2", f"route:{ROUTE}", "route:other"):
        history.add_breaker(BreakerSignal(scope=scope, state="open", reason="why", opened_at=at))
    history.add_breaker(BreakerSignal(scope="trace:t3", state="closed", opened_at=at))
    openings = history.openings(0, 3000)
    assert trace_ids(openings) == ["t1", "t2"]
    markers = breaker_markers(openings, ROUTE, {"t1": ROUTE, "t2": "other"})
    assert sorted(m["scope"] for m in markers) == [f"route:{ROUTE}", "trace:t1"]
    assert BreakerOpening("route:a", 1, "", None).trace_id is None
