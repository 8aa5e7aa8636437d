"""The daily questions of ``tracewatch query``, run against a real embedded ClickHouse (chDB).

Events go in through the sink's own insert path; every test has a database of
its own in the one chDB engine of this test process. Expected values are
computed here in Python from the same events.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tracewatch.config import ClickHouseSettings
from tracewatch.errors import ConfigError
from tracewatch.queries import (
    compare_periods,
    filter_alerts,
    parse_duration,
    prompt_change_query,
    prompt_first_seen_query,
    top_routes_query,
    trace_timeline_query,
)
from tracewatch.schemas.alert import Alert
from tracewatch.schemas.record import EventRecord
from tracewatch.sinks.arrow_events import events_table
from tracewatch.sinks.clickhouse import ClickHouseSink, QueryResult

T0 = float(int(time.time() // 3600) * 3600 - 6 * 3600)  # recent enough for the events TTL


@pytest.fixture
def open_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], ClickHouseSink]]:
    """A connected sink on a database of its own, in the process's one chDB engine dir."""
    engine_dir: Path = tmp_path_factory.getbasetemp() / "chdb"
    sinks: list[ClickHouseSink] = []

    def make() -> ClickHouseSink:
        settings = ClickHouseSettings(
            dsn=f"chdb://{engine_dir}", database=f"t_{uuid.uuid4().hex[:12]}"
        )
        sinks.append(ClickHouseSink(settings).connect())
        return sinks[-1]

    yield make
    for sink in sinks:
        sink.close()


def event(n: int, **fields: Any) -> EventRecord:
    values: dict[str, Any] = {
        "event_id": f"e{n}-{uuid.uuid4().hex[:6]}",
        "trace_id": f"t{n}",
        "kind": "llm",
        "route": "support/chat",
        **fields,
    }
    return EventRecord(**values)


def store(sink: ClickHouseSink, events: list[EventRecord]) -> None:
    n = len(events)
    sink.write_event_table(events_table(events, [0] * n, list(range(n))), uuid.uuid4().hex)


def run(sink: ClickHouseSink, sql: str, **params: Any) -> QueryResult:
    return sink.query(sql, {"db": sink.database, **params})


def exact_quantile(values: list[float], level: float) -> float:
    """ClickHouse's ``quantileExact``: the element at ``floor(level * n)`` of the sorted values."""
    return sorted(values)[int(level * len(values))]


def prompt_rollout() -> tuple[list[EventRecord], dict[str, list[Any]]]:
    """v12 for 100 minutes, then v13 (dearer, slower, more errors), plus noise to ignore."""
    events, before, after = [], [], []
    for i in range(100):
        cost, latency = 0.001 + i * 0.00001, 200.0 + i
        status = "error" if i % 10 == 0 else "ok"
        score = {"groundedness": 0.9} if i % 2 else {}
        events.append(
            event(
                i,
                ts=T0 + 60 * i,
                prompt_version="v12",
                cost_usd=cost,
                latency_ms=latency,
                status=status,
                scores=score,
            )
        )
        before.append((cost, latency, status))
    first_seen = T0 + 6000
    for i in range(50):
        cost, latency = 0.002 + i * 0.00003, 300.0 + 2 * i
        status = "error" if i % 5 == 0 else "ok"
        events.append(
            event(
                1000 + i,
                ts=first_seen + 60 * i,
                prompt_version="v13",
                cost_usd=cost,
                latency_ms=latency,
                status=status,
                scores={"groundedness": 0.6},
            )
        )
        after.append((cost, latency, status))
    noise = [
        event(5000, ts=T0 - 60, route="other/route", prompt_version="v13", cost_usd=9.0),
        event(5001, ts=T0 + 30, prompt_version="v11", cost_usd=5.0, latency_ms=9000.0),
        event(5002, ts=first_seen + 90, prompt_version="v12", cost_usd=7.0),  # old, after
        event(5003, ts=T0 - 2 * 86400, prompt_version="v12", cost_usd=3.0),  # outside 24h
    ]
    return events + noise, {"before": before, "after": after}


def test_prompt_change_compares_raw_rows_before_and_after(
    open_sink: Callable[[], ClickHouseSink],
) -> None:
    sink = open_sink()
    events, sides = prompt_rollout()
    store(sink, events)
    params = {"route": "support/chat", "to_version": "v13", "from_version": "v12"}
    [(first_seen_ms, n)] = run(sink, prompt_first_seen_query(), **params).rows
    assert (first_seen_ms, n) == ((T0 + 6000) * 1000, 50)

    window = {"first_seen_ms": first_seen_ms, "window_s": int(parse_duration("24h"))}
    table = compare_periods(run(sink, prompt_change_query(), **params, **window))
    assert table.columns == ["statistic", "before", "after", "ratio"]
    got = {name: (b, a, r) for name, b, a, r in table.rows}
    for side, column in (("before", 1), ("after", 2)):
        costs = [c for c, _, _ in sides[side]]
        latencies = [lat for _, lat, _ in sides[side]]
        errors = sum(s != "ok" for _, _, s in sides[side]) / len(sides[side])
        assert got["n"][column - 1] == len(sides[side])
        assert got["error_rate"][column - 1] == pytest.approx(errors)
        assert got["cost_p95"][column - 1] == pytest.approx(exact_quantile(costs, 0.95))
        assert got["latency_p95"][column - 1] == exact_quantile(latencies, 0.95)
        assert got["cost_p50"][column - 1] == pytest.approx(exact_quantile(costs, 0.5))
    assert got["score:groundedness"][:2] == pytest.approx((0.9, 0.6))
    assert got["n"][2] == 0.5
    assert got["cost_p95"][2] == round(got["cost_p95"][1] / got["cost_p95"][0], 3)


def test_prompt_change_without_from_takes_every_earlier_version(
    open_sink: Callable[[], ClickHouseSink],
) -> None:
    sink = open_sink()
    events, sides = prompt_rollout()
    store(sink, events)
    params = {"route": "support/chat", "to_version": "v13", "from_version": ""}
    [(first_seen_ms, _)] = run(sink, prompt_first_seen_query(), **params).rows
    window = {"first_seen_ms": first_seen_ms, "window_s": 86400}
    got = {
        r[0]: r[1:]
        for r in compare_periods(run(sink, prompt_change_query(), **params, **window)).rows
    }
    assert got["n"][:2] == (len(sides["before"]) + 1, len(sides["after"]))  # + the v11 event
    hour = {"first_seen_ms": first_seen_ms, "window_s": 3600}
    short = {
        r[0]: r[1:]
        for r in compare_periods(run(sink, prompt_change_query(), **params, **hour)).rows
    }
    assert short["n"][:2] == (60, 50)  # the last hour of v12 only, and the first of v13


def test_a_version_never_seen_has_no_first_appearance(
    open_sink: Callable[[], ClickHouseSink],
) -> None:
    sink = open_sink()
    store(sink, prompt_rollout()[0])
    params = {"route": "support/chat", "to_version": "v99"}
    assert run(sink, prompt_first_seen_query(), **params).rows == [(None, 0)]
    missing = compare_periods(QueryResult(["period", "n"], [("before", 10)]))
    assert ("n", 10, None, None) in missing.rows


def test_trace_timeline_is_ordered_with_a_running_cost(
    open_sink: Callable[[], ClickHouseSink],
) -> None:
    sink = open_sink()
    steps = [
        event(3, trace_id="agent-1", ts=T0 + 2.5, kind="tool", tool_name="search", latency_ms=40.0),
        event(1, trace_id="agent-1", ts=T0, cost_usd=0.002, loop_depth=1, latency_ms=800.0),
        event(4, trace_id="agent-1", ts=T0 + 4.0, cost_usd=0.003, loop_depth=2, status="error"),
        event(2, trace_id="agent-1", ts=T0 + 1.25, cost_usd=0.001, loop_depth=1),
        event(9, trace_id="someone-else", ts=T0 + 1.0, cost_usd=1.0),
    ]
    store(sink, steps)
    result = run(sink, trace_timeline_query(), trace="agent-1", limit=100)
    rows = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
    assert [r["at_ms"] for r in rows] == [0, 1250, 2500, 4000]
    assert [r["kind"] for r in rows] == ["llm", "llm", "tool", "llm"]
    assert [r["tool"] for r in rows] == ["", "", "search", ""]
    assert [r["loop_depth"] for r in rows] == [1, 1, None, 2]
    assert [r["cost_so_far"] for r in rows] == pytest.approx([0.002, 0.003, 0.003, 0.006])
    assert [r["status"] for r in rows][-1] == "error"
    assert run(sink, trace_timeline_query(), trace="agent-1", limit=2).rows == result.rows[:2]
    assert run(sink, trace_timeline_query(), trace="x' OR 1=1 --", limit=100).rows == []


def test_top_routes_cost_quantiles_hold_below_one_dollar(
    open_sink: Callable[[], ClickHouseSink],
) -> None:
    sink = open_sink()
    costs = [0.00002 * (1.001**i) for i in range(2000)]  # 20 to 150 micro-dollars
    store(sink, [event(i, ts=T0 + i, cost_usd=c) for i, c in enumerate(costs)])
    since, until = datetime.fromtimestamp(T0, UTC), datetime.fromtimestamp(T0 + 3600, UTC)
    result = run(
        sink, top_routes_query("cost_p95"), since=_text(since), until=_text(until), limit=5
    )
    row = dict(zip(result.columns, result.rows[0], strict=True))
    for level in (0.5, 0.95, 0.99):
        want = exact_quantile(costs, level)
        got = row[f"cost_p{round(level * 100)}"]
        assert abs(got - want) <= 0.01 * want  # quantileDD's bound, as configured


def _text(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.000")


def alert(status: str, at: datetime, route: str, ends: datetime | None = None) -> Alert:
    return Alert(
        fingerprint=f"fp-{route}",
        status=status,
        alertname="CostP95High",
        labels={"route": route, "metric": "cost_p95"},
        starts_at=at,
        ends_at=ends,
    )


def test_alert_history_filters_by_route_and_transition_time() -> None:
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    old_fire = alert("firing", now - timedelta(hours=30), "a")
    old_resolve = alert("resolved", now - timedelta(hours=30), "a", now - timedelta(hours=2))
    recent = alert("firing", now - timedelta(hours=1), "b")
    other = alert("firing", now - timedelta(hours=3), "a")
    history = [recent, old_fire, other, old_resolve]
    since = now - timedelta(hours=24)
    assert filter_alerts(history, since) == [other, old_resolve, recent]
    assert filter_alerts(history, since, route="a") == [other, old_resolve]
    assert filter_alerts(history, now, route="a") == []


def test_durations() -> None:
    assert parse_duration("24h") == 86400
    assert parse_duration("90s") == 90
    with pytest.raises(ConfigError, match="30s, 15m, 24h or 7d"):
        parse_duration("a day")
