"""The hourly rollup and the retention settings, against a real embedded ClickHouse (chDB).

Every test has a database of its own in one chDB engine per test process (chDB
opens one engine directory per process). Events are generated in SQL, so what is
checked is ClickHouse itself: the view, the states, the TTL clauses.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from tracewatch.config import ClickHouseSettings
from tracewatch.sinks.clickhouse import ClickHouseSink
from tracewatch.sinks.clickhouse_schema import (
    COST_SCALE,
    LATENCY_SCALE,
    ROLLUP_QUANTILES,
    backfill_rollup_sql,
    migrate,
    ttl_clause,
    ttl_days_of,
    ttl_migrations,
)

BOUND = 0.01  # the relative accuracy every quantilesDD state is built with
HOUR = 3600

INSERT_EVENTS = """
INSERT INTO {db:Identifier}.events
    (event_id, trace_id, ts, kind, route, model, prompt_version, latency_ms, input_tokens,
     output_tokens, cost_usd, status, loop_depth, scores)
SETTINGS insert_deduplication_token = {token:String}
SELECT concat({token:String}, '-', toString(number)),
       toString(intDiv(number, 7)),
       toDateTime64({t0:Float64} + number * {spacing:Float64}, 3, 'UTC'),
       'llm',
       ['support/chat', 'agent/coder'][number % 2 + 1],
       ['gpt-4o', 'gpt-4o-mini'][intDiv(number, 2) % 2 + 1],
       ['v1', 'v2'][intDiv(number, 5) % 2 + 1],
       if(number % 10 = 0, NULL, 300 * exp(randNormal(0, 0.6))),
       if(number % 9 = 0, NULL, toUInt32(100 + number % 400)),
       toUInt32(20 + number % 50),
       if(number % 11 = 0, NULL, 0.002 * exp(randNormal(0, 1))),
       multiIf(number % 17 = 0, 'error', number % 29 = 0, 'timeout', 'ok'),
       if(number % 3 = 0, NULL, toUInt32(number % 13)),
       if(number % 4 = 0,
          map('groundedness', randUniform(0, 1), 'hallucination', randUniform(0, 0.2)),
          map())
FROM numbers({n:UInt64})
"""

# the same aggregates per (route, model, prompt_version, hour), from the rollup and the raw rows
FROM_ROLLUP = """
SELECT route, model, prompt_version, hour, sum(count), sum(error_count), sum(timeout_count),
       sum(input_tokens_sum), sum(input_tokens_count), sum(output_tokens_sum), sum(cost_count),
       sum(cost_sum), sum(latency_sum), sum(loop_depth_sum), sum(loop_depth_count),
       max(loop_depth_max), sumMap(score_sums), sumMap(score_counts)
FROM {db:Identifier}.stats_1h
GROUP BY route, model, prompt_version, hour ORDER BY route, model, prompt_version, hour
"""
FROM_EVENTS = """
SELECT route, model, prompt_version, toStartOfHour(toDateTime(ts, 'UTC')) AS hour, count(),
       countIf(status = 'error'), countIf(status = 'timeout'), sum(ifNull(input_tokens, 0)),
       count(input_tokens), sum(ifNull(output_tokens, 0)), count(cost_usd),
       sum(ifNull(cost_usd, 0)), sum(ifNull(latency_ms, 0)), sum(ifNull(loop_depth, 0)),
       count(loop_depth), max(loop_depth), sumMap(scores),
       sumMap(mapApply((k, v) -> (k, toUInt64(1)), scores))
FROM {db:Identifier}.events
GROUP BY route, model, prompt_version, hour ORDER BY route, model, prompt_version, hour
"""


@pytest.fixture
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one chDB engine directory of this test process: every test shares it."""
    return tmp_path_factory.getbasetemp() / "chdb"


@pytest.fixture
def open_sink(engine_dir: Path) -> Iterator[Callable[..., ClickHouseSink]]:
    """``open_sink(database=None, **settings)``: a connected sink on a database of its own."""
    sinks: list[ClickHouseSink] = []

    def make(database: str | None = None, **settings: Any) -> ClickHouseSink:
        name = database or f"t_{uuid.uuid4().hex[:12]}"
        sink = ClickHouseSink(
            ClickHouseSettings(dsn=f"chdb://{engine_dir}", database=name, **settings)
        )
        sinks.append(sink.connect())
        return sink

    yield make
    for sink in sinks:
        sink.close()


def insert_events(sink: ClickHouseSink, n: int, t0: float, spacing: float, token: str) -> None:
    sink.query(
        INSERT_EVENTS,
        {"db": sink.database, "token": token, "t0": t0, "spacing": spacing, "n": n},
        readonly=False,
    )


def recent_hour(hours_ago: int) -> float:
    return (math.floor(time.time() / HOUR) - hours_ago) * HOUR


def rows(sink: ClickHouseSink, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    return sink.query(sql, {"db": sink.database, **params}).rows


def assert_same_aggregates(rollup: list[tuple[Any, ...]], raw: list[tuple[Any, ...]]) -> None:
    assert len(rollup) == len(raw) > 0
    for got, want in zip(rollup, raw, strict=True):
        assert got[:11] == want[:11]  # keys, counts and integer sums: exact
        assert got[11:14] == pytest.approx(want[11:14], rel=1e-9)  # float sums
        assert got[14:16] == want[14:16]
        assert got[16].keys() == want[16].keys()
        for name, total in want[16].items():
            assert got[16][name] == pytest.approx(total, rel=1e-9)
        assert got[17] == want[17]


def test_events_inserted_show_up_in_the_hourly_rollup(
    open_sink: Callable[..., ClickHouseSink],
) -> None:
    sink = open_sink()
    t0 = recent_hour(4)
    insert_events(sink, 6000, t0, 3 * HOUR / 6000, "a")  # three hours
    insert_events(sink, 1000, t0 + 1800, 1.0, "b")  # a second batch into the same hours
    rollup, raw = rows(sink, FROM_ROLLUP), rows(sink, FROM_EVENTS)
    assert {r[3].timestamp() for r in raw} == {t0, t0 + HOUR, t0 + 2 * HOUR}
    assert sum(r[4] for r in raw) == 7000
    assert_same_aggregates(rollup, raw)


def test_rollup_quantiles_merge_to_the_raw_quantiles_within_the_sketch_bound(
    open_sink: Callable[..., ClickHouseSink],
) -> None:
    sink = open_sink()
    t0 = recent_hour(5)
    for i in range(4):  # many parts and states per key: the merge is what is tested
        insert_events(sink, 5000, t0 + i * 900, 4 * HOUR / 20000, f"q{i}")
    levels = ", ".join(str(q) for q in ROLLUP_QUANTILES)
    for column, state, scale in (
        ("cost_usd", "cost_micro_quantiles", COST_SCALE),
        ("latency_ms", "latency_us_quantiles", LATENCY_SCALE),
    ):
        merged = rows(
            sink,
            f"SELECT route, arrayMap(x -> x / {scale}, quantilesDDMerge(0.01, {levels})({state})) "
            "FROM {db:Identifier}.stats_1h GROUP BY route ORDER BY route",
        )
        direct = rows(
            sink,
            f"SELECT route, arrayMap(x -> x / {scale}, "
            f"quantilesDD(0.01, {levels})({column} * {scale})), arraySort(groupArray({column})) "
            "FROM {db:Identifier}.events GROUP BY route ORDER BY route",
        )
        assert [r[0] for r in merged] == [r[0] for r in direct] == ["agent/coder", "support/chat"]
        for (_, from_rollup), (_, from_raw, values) in zip(merged, direct, strict=True):
            # merging states is exact: the same sketch as one pass over the raw rows
            assert from_rollup == pytest.approx(from_raw, rel=1e-9)
            for q, estimate in zip(ROLLUP_QUANTILES, from_rollup, strict=True):
                rank = q * (len(values) - 1)  # within the bound of a neighbouring order statistic
                low = values[max(math.floor(rank) - 1, 0)] * (1 - BOUND)
                high = values[min(math.ceil(rank) + 1, len(values) - 1)] * (1 + BOUND)
                assert low <= estimate <= high, (column, q, estimate, low, high)


def test_a_retried_insert_is_rolled_up_once(open_sink: Callable[..., ClickHouseSink]) -> None:
    sink = open_sink()
    t0 = recent_hour(2)
    insert_events(sink, 500, t0, 1.0, "same")
    insert_events(sink, 500, t0, 1.0, "same")  # the sink's retry: same deduplication token
    assert rows(sink, "SELECT count() FROM {db:Identifier}.events") == [(500,)]
    assert rows(sink, "SELECT sum(count) FROM {db:Identifier}.stats_1h") == [(500,)]


def show_create(sink: ClickHouseSink, table: str) -> str:
    return str(rows(sink, "SHOW CREATE TABLE {db:Identifier}.{t:Identifier}", t=table)[0][0])


def test_ttls_from_the_settings_are_in_the_table_definitions(
    open_sink: Callable[..., ClickHouseSink],
) -> None:
    sink = open_sink()  # the defaults
    assert "TTL toDateTime(ts) + toIntervalDay(30)" in show_create(sink, "events")
    assert "TTL minute + toIntervalDay(90)" in show_create(sink, "stats_1m")
    assert "TTL hour + toIntervalDay(400)" in show_create(sink, "stats_1h")
    forever = open_sink(events_ttl_days=0, stats_ttl_days=0, rollup_ttl_days=0)
    for table in ("events", "stats_1m", "stats_1h"):
        assert "TTL" not in show_create(forever, table)


def test_changed_ttls_reach_existing_tables_on_the_next_start_and_only_then(
    open_sink: Callable[..., ClickHouseSink], engine_dir: Path
) -> None:
    first = open_sink()
    first.close()
    second = open_sink(first.database, events_ttl_days=7, stats_ttl_days=0, rollup_ttl_days=800)
    assert "TTL toDateTime(ts) + toIntervalDay(7)" in show_create(second, "events")
    assert "TTL" not in show_create(second, "stats_1m")
    assert "TTL hour + toIntervalDay(800)" in show_create(second, "stats_1h")
    client = clickhouse_connect.get_client(dsn=f"chdb://{engine_dir}")
    try:  # a start with the same settings changes nothing
        assert migrate(client, second.settings) == []
    finally:
        client.close()


def test_an_empty_rollup_is_filled_once_from_the_stored_events(
    open_sink: Callable[..., ClickHouseSink],
) -> None:
    old = open_sink()
    insert_events(old, 3000, recent_hour(3), 2.0, "old")
    # what a release before the rollup left behind: events, and no rollup
    old.query("DROP VIEW {db:Identifier}.stats_1h_mv", {"db": old.database}, readonly=False)
    old.query("DROP TABLE {db:Identifier}.stats_1h", {"db": old.database}, readonly=False)
    old.close()
    upgraded = open_sink(old.database)
    assert_same_aggregates(rows(upgraded, FROM_ROLLUP), rows(upgraded, FROM_EVENTS))
    upgraded.close()
    again = open_sink(old.database)  # not empty any more: no second fill
    insert_events(again, 100, recent_hour(1), 1.0, "new")
    assert rows(again, "SELECT sum(count) FROM {db:Identifier}.stats_1h") == [(3100,)]


def test_the_documented_backfill_rebuilds_a_truncated_rollup(
    open_sink: Callable[..., ClickHouseSink],
) -> None:
    sink = open_sink()
    insert_events(sink, 2000, recent_hour(2), 3.0, "x")
    sink.query("TRUNCATE TABLE {db:Identifier}.stats_1h", {"db": sink.database}, readonly=False)
    assert rows(sink, "SELECT count() FROM {db:Identifier}.stats_1h") == [(0,)]
    sink.query(backfill_rollup_sql(sink.database), readonly=False)
    assert_same_aggregates(rows(sink, FROM_ROLLUP), rows(sink, FROM_EVENTS))


def test_ttl_parsing_and_migrations_are_plain_text_work() -> None:
    events = "MergeTree ORDER BY (route, ts) TTL toDateTime(ts) + toIntervalDay(30) SETTINGS x = 1"
    assert ttl_days_of(events) == 30
    assert ttl_days_of("MergeTree ORDER BY x SETTINGS index_granularity = 8192") == 0
    assert ttl_days_of("MergeTree ORDER BY x TTL d + toIntervalMonth(1)") is None
    engines = {"events": events, "stats_1m": "MergeTree ORDER BY minute"}
    assert ttl_migrations("tw", engines, {"events": 30, "stats_1m": 0, "stats_1h": 9}) == []
    assert ttl_migrations("tw", engines, {"events": 0, "stats_1m": 5}) == [
        "ALTER TABLE tw.events REMOVE TTL",
        "ALTER TABLE tw.stats_1m MODIFY TTL minute + INTERVAL 5 DAY",
    ]
    assert ttl_clause("stats_1h", 0) == ""
    with pytest.raises(ValueError, match="use 0 to keep rows forever"):
        ttl_clause("events", -1)
    with pytest.raises(ValueError, match="letters, digits and underscores"):
        ttl_migrations("tw; DROP", engines, {})


def test_negative_retention_is_refused_with_the_way_out() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        ClickHouseSettings(rollup_ttl_days=-1)
