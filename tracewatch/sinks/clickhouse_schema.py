"""DDL of the tables tracewatch writes (also printed by ``tracewatch schema``), and the
migrations that bring tables made by an older release up to date.

``events`` holds the contract's fields, never prompt or completion text.
``stats_1m`` holds one row per (route, model, prompt_version, minute) as the
stream computed it, plus rows with ``late = 1`` for events that arrived after
their minute had closed. Sum ``count`` over both kinds for totals.
``stats_1h`` is the hourly rollup per (route, model, prompt_version, hour), kept
by the materialized view ``stats_1h_mv`` on every insert into ``events``: sums
and counts merge exactly, quantiles are ClickHouse ``quantilesDD`` states with
the stream's 1 % relative-error bound, so any range of hours merges into one
answer (``quantilesDDMerge``) without reading raw events.

Why the rollup is fed from ``events`` and not from ``stats_1m``: a minute row
carries finished quantiles (and tracewatch's own sketch encoding), and p95s of
minutes cannot be merged into the p95 of an hour; the raw values can. It also
sees late events without the ``late`` rows' bookkeeping. Retried inserts into
``events`` carry the same ``insert_deduplication_token``; a block dropped as a
duplicate there is not pushed to the view either, so the rollup counts it once.

Every table has a TTL from ``ClickHouseSettings`` (0 keeps rows forever);
``migrate`` applies changed TTLs to existing tables and fills an empty rollup
from the events already stored.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Protocol

from tracewatch.config import ClickHouseSettings

__all__ = [
    "COST_SCALE",
    "EVENT_COLUMNS",
    "LATENCY_SCALE",
    "ROLLUP_COLUMNS",
    "ROLLUP_QUANTILES",
    "STATS_COLUMNS",
    "TTL_TABLES",
    "backfill_rollup_sql",
    "migrate",
    "retention_days",
    "schema_statements",
    "ttl_clause",
    "ttl_days_of",
    "ttl_migrations",
]

log = logging.getLogger("tracewatch.sinks")

EVENT_COLUMNS: tuple[str, ...] = (
    "event_id", "trace_id", "span_id", "parent_span_id", "ts", "kind", "route", "app", "model",
    "provider", "prompt_version", "cohort", "session_id", "latency_ms", "input_tokens",
    "output_tokens", "cost_usd", "cost_source", "status", "error_type", "retry_count",
    "loop_depth", "tool_name", "tool_args_hash", "scores", "guardrail_action", "guardrail_name",
    "attributes", "kafka_topic", "kafka_partition", "kafka_offset",
)  # fmt: skip

STATS_COLUMNS: tuple[str, ...] = (
    "route", "model", "prompt_version", "minute", "late", "count", "error_count",
    "timeout_count", "error_rate", "input_tokens_sum", "output_tokens_sum", "input_tokens_mean",
    "output_tokens_mean", "cost_count", "cost_sum", "cost_p50", "cost_p95", "cost_p99",
    "latency_count", "latency_mean", "latency_p50", "latency_p95", "latency_p99",
    "loop_depth_max", "loop_depth_p95", "score_means", "score_counts", "max_event_ts", "state",
)  # fmt: skip

ROLLUP_COLUMNS: tuple[str, ...] = (
    "route", "model", "prompt_version", "hour", "count", "error_count", "timeout_count",
    "input_tokens_sum", "input_tokens_count", "output_tokens_sum", "output_tokens_count",
    "cost_count", "cost_sum", "cost_micro_quantiles", "latency_count", "latency_sum",
    "latency_us_quantiles", "loop_depth_count", "loop_depth_sum", "loop_depth_max",
    "loop_depth_quantiles", "score_sums", "score_counts",
)  # fmt: skip

#: the levels every ``*_quantiles`` state of ``stats_1h`` answers, in this order
#: (``quantilesDDMerge(0.01, 0.5, 0.95, 0.99)(cost_micro_quantiles)[2] / 1e6`` is the p95)
ROLLUP_QUANTILES: tuple[float, ...] = (0.5, 0.95, 0.99)
_DD = "quantilesDD(0.01, 0.5, 0.95, 0.99)"  # 0.01: the stream's relative accuracy
#: What the cost and latency sketches hold: micro-dollars and microseconds. ClickHouse's
#: DDSketch (``quantileDD``, 26.9) truncates the bucket index toward zero, so below 1 its
#: error grows to about three times the relative accuracy (measured: up to 3 % at 0.01
#: for costs around $0.002); scaled up, the values sit where the 1 % bound holds.
COST_SCALE = 1_000_000
LATENCY_SCALE = 1_000

#: table → the time expression its TTL counts from
TTL_TABLES: dict[str, str] = {"events": "toDateTime(ts)", "stats_1m": "minute", "stats_1h": "hour"}

_EVENTS = """
CREATE TABLE IF NOT EXISTS {db}.events
(
    event_id         String CODEC(ZSTD(1)),
    trace_id         String CODEC(ZSTD(1)),
    span_id          String CODEC(ZSTD(1)),
    parent_span_id   String CODEC(ZSTD(1)),
    ts               DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    kind             LowCardinality(String),
    route            LowCardinality(String),
    app              LowCardinality(String),
    model            LowCardinality(String),
    provider         LowCardinality(String),
    prompt_version   LowCardinality(String),
    cohort           LowCardinality(String),
    session_id       String CODEC(ZSTD(1)),
    latency_ms       Nullable(Float64) CODEC(Gorilla, ZSTD(1)),
    input_tokens     Nullable(UInt32) CODEC(T64, ZSTD(1)),
    output_tokens    Nullable(UInt32) CODEC(T64, ZSTD(1)),
    cost_usd         Nullable(Float64) CODEC(Gorilla, ZSTD(1)),
    cost_source      LowCardinality(String),
    status           LowCardinality(String),
    error_type       LowCardinality(String),
    retry_count      UInt32 CODEC(T64, ZSTD(1)),
    loop_depth       Nullable(UInt32) CODEC(T64, ZSTD(1)),
    tool_name        LowCardinality(String),
    tool_args_hash   String CODEC(ZSTD(1)),
    scores           Map(LowCardinality(String), Float64),
    guardrail_action LowCardinality(String),
    guardrail_name   LowCardinality(String),
    attributes       Map(String, String) CODEC(ZSTD(1)),
    kafka_topic      LowCardinality(String),
    kafka_partition  Int32,
    kafka_offset     Int64 CODEC(Delta, ZSTD(1)),
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1)),
    INDEX trace_idx trace_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (route, ts, event_id)
{ttl}
SETTINGS non_replicated_deduplication_window = 10000
"""

_STATS = """
CREATE TABLE IF NOT EXISTS {db}.stats_1m
(
    route              LowCardinality(String),
    model              LowCardinality(String),
    prompt_version     LowCardinality(String),
    minute             DateTime('UTC') CODEC(Delta, ZSTD(1)),
    late               UInt8,
    count              UInt64,
    error_count        UInt64,
    timeout_count      UInt64,
    error_rate         Float64,
    input_tokens_sum   UInt64,
    output_tokens_sum  UInt64,
    input_tokens_mean  Nullable(Float64),
    output_tokens_mean Nullable(Float64),
    cost_count         UInt64,
    cost_sum           Float64,
    cost_p50           Nullable(Float64),
    cost_p95           Nullable(Float64),
    cost_p99           Nullable(Float64),
    latency_count      UInt64,
    latency_mean       Nullable(Float64),
    latency_p50        Nullable(Float64),
    latency_p95        Nullable(Float64),
    latency_p99        Nullable(Float64),
    loop_depth_max     Nullable(UInt32),
    loop_depth_p95     Nullable(Float64),
    score_means        Map(LowCardinality(String), Float64),
    score_counts       Map(LowCardinality(String), UInt64),
    max_event_ts       DateTime64(3, 'UTC'),
    state              String CODEC(ZSTD(1)),
    written_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (route, model, prompt_version, minute, late)
{ttl}
SETTINGS non_replicated_deduplication_window = 10000
"""

# sumMap returns Map(String, …), so the score maps are not LowCardinality here
_ROLLUP = f"""
CREATE TABLE IF NOT EXISTS {{db}}.stats_1h
(
    route                LowCardinality(String),
    model                LowCardinality(String),
    prompt_version       LowCardinality(String),
    hour                 DateTime('UTC') CODEC(Delta, ZSTD(1)),
    count                SimpleAggregateFunction(sum, UInt64),
    error_count          SimpleAggregateFunction(sum, UInt64),
    timeout_count        SimpleAggregateFunction(sum, UInt64),
    input_tokens_sum     SimpleAggregateFunction(sum, UInt64),
    input_tokens_count   SimpleAggregateFunction(sum, UInt64),
    output_tokens_sum    SimpleAggregateFunction(sum, UInt64),
    output_tokens_count  SimpleAggregateFunction(sum, UInt64),
    cost_count           SimpleAggregateFunction(sum, UInt64),
    cost_sum             SimpleAggregateFunction(sum, Float64),
    cost_micro_quantiles AggregateFunction({_DD}, Nullable(Float64)),
    latency_count        SimpleAggregateFunction(sum, UInt64),
    latency_sum          SimpleAggregateFunction(sum, Float64),
    latency_us_quantiles AggregateFunction({_DD}, Nullable(Float64)),
    loop_depth_count     SimpleAggregateFunction(sum, UInt64),
    loop_depth_sum       SimpleAggregateFunction(sum, UInt64),
    loop_depth_max       SimpleAggregateFunction(max, Nullable(UInt32)),
    loop_depth_quantiles AggregateFunction({_DD}, Nullable(UInt32)),
    score_sums           SimpleAggregateFunction(sumMap, Map(String, Float64)),
    score_counts         SimpleAggregateFunction(sumMap, Map(String, UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (route, model, prompt_version, hour)
{{ttl}}
SETTINGS non_replicated_deduplication_window = 10000
"""

_ROLLUP_SELECT = f"""
SELECT route, model, prompt_version,
       toStartOfHour(toDateTime(ts, 'UTC')) AS hour,
       count() AS count,
       countIf(status = 'error') AS error_count,
       countIf(status = 'timeout') AS timeout_count,
       sum(ifNull(input_tokens, 0)) AS input_tokens_sum,
       count(input_tokens) AS input_tokens_count,
       sum(ifNull(output_tokens, 0)) AS output_tokens_sum,
       count(output_tokens) AS output_tokens_count,
       count(cost_usd) AS cost_count,
       sum(ifNull(cost_usd, 0)) AS cost_sum,
       {_DD.replace("quantilesDD", "quantilesDDState")}(cost_usd * {COST_SCALE})
           AS cost_micro_quantiles,
       count(latency_ms) AS latency_count,
       sum(ifNull(latency_ms, 0)) AS latency_sum,
       {_DD.replace("quantilesDD", "quantilesDDState")}(latency_ms * {LATENCY_SCALE})
           AS latency_us_quantiles,
       count(loop_depth) AS loop_depth_count,
       sum(ifNull(loop_depth, 0)) AS loop_depth_sum,
       max(loop_depth) AS loop_depth_max,
       {_DD.replace("quantilesDD", "quantilesDDState")}(loop_depth) AS loop_depth_quantiles,
       sumMap(scores) AS score_sums,
       sumMap(mapApply((k, v) -> (k, toUInt64(1)), scores)) AS score_counts
FROM {{db}}.events
GROUP BY route, model, prompt_version, hour
"""

_ROLLUP_VIEW = "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.stats_1h_mv TO {db}.stats_1h AS"


def schema_statements(
    database: str, events_ttl_days: int, stats_ttl_days: int, rollup_ttl_days: int = 400
) -> list[str]:
    """CREATE statements, in order; every one is idempotent. A TTL of 0 days keeps rows
    forever. The view comes last: it needs both of its tables."""
    _check_name(database)
    return [
        f"CREATE DATABASE IF NOT EXISTS {database}",
        _EVENTS.format(db=database, ttl=ttl_clause("events", events_ttl_days)).strip(),
        _STATS.format(db=database, ttl=ttl_clause("stats_1m", stats_ttl_days)).strip(),
        # added after the first release: tables created before it gain the column
        f"ALTER TABLE {database}.stats_1m ADD COLUMN IF NOT EXISTS "
        "state String CODEC(ZSTD(1)) AFTER max_event_ts",
        _ROLLUP.format(db=database, ttl=ttl_clause("stats_1h", rollup_ttl_days)).strip(),
        f"{_ROLLUP_VIEW.format(db=database)}\n{_ROLLUP_SELECT.format(db=database).strip()}",
    ]


def ttl_clause(table: str, days: int) -> str:
    """The ``TTL …`` line of ``table`` for ``days`` (empty for 0: keep forever)."""
    if days < 0:
        raise ValueError(f"a TTL of {days} days cannot work; use 0 to keep rows forever")
    return f"TTL {TTL_TABLES[table]} + INTERVAL {days} DAY" if days else ""


def backfill_rollup_sql(database: str) -> str:
    """Fill ``stats_1h`` from every stored event. Run it only on an empty rollup with no
    writers running (``TRUNCATE TABLE tracewatch.stats_1h`` first to rebuild it), or the
    events the view already rolled up count twice."""
    _check_name(database)
    return f"INSERT INTO {database}.stats_1h\n{_ROLLUP_SELECT.format(db=database).strip()}"


_TTL_DAYS = re.compile(r"\bTTL\b.*?(?:toIntervalDay\((\d+)\)|INTERVAL\s+(\d+)\s+DAY)", re.S)


def ttl_days_of(engine_full: str) -> int | None:
    """The TTL in days of a table from ``system.tables.engine_full``: 0 for none, None when
    it has one that is not a plain ``… + INTERVAL n DAY`` (someone changed it by hand)."""
    if not re.search(r"\bTTL\b", engine_full):
        return 0
    match = _TTL_DAYS.search(engine_full)
    return None if match is None else int(match.group(1) or match.group(2))


def ttl_migrations(
    database: str, engines: Mapping[str, str], wanted: Mapping[str, int]
) -> list[str]:
    """``ALTER … MODIFY/REMOVE TTL`` for each table in ``engines`` (name → engine_full)
    whose TTL differs from ``wanted`` (name → days); nothing when all agree.

    Only on a change: ``MODIFY TTL`` rewrites the TTL information of every part,
    which is not something to do on each start.
    """
    _check_name(database)
    statements = []
    for table, days in wanted.items():
        if table not in engines or ttl_days_of(engines[table]) == days:
            continue
        if days:
            statements.append(f"ALTER TABLE {database}.{table} MODIFY {ttl_clause(table, days)}")
        else:
            statements.append(f"ALTER TABLE {database}.{table} REMOVE TTL")
    return statements


class _Client(Protocol):
    """What ``migrate`` needs of a clickhouse-connect client."""

    def command(
        self, cmd: str, parameters: Any = ..., data: Any = ..., settings: Any = ...
    ) -> Any: ...

    def query(self, query: str, parameters: Any = ...) -> Any: ...


def retention_days(settings: ClickHouseSettings) -> dict[str, int]:
    """Table → days its rows are kept (0 = forever)."""
    return {
        "events": settings.events_ttl_days,
        "stats_1m": settings.stats_ttl_days,
        "stats_1h": settings.rollup_ttl_days,
    }


def migrate(client: _Client, settings: ClickHouseSettings) -> list[str]:
    """Bring existing tables in line with the settings; returns the statements it ran.

    Runs after ``schema_statements`` (so every table exists), before anything is
    written. TTLs that differ from the settings are changed. An
    empty ``stats_1h`` next to stored events (the first start of a release with
    the rollup, or after ``TRUNCATE TABLE stats_1h``) is filled from them once;
    the view only sees inserts made after it was created. With several writers
    on one ClickHouse server, stop them for that first start, or run
    ``backfill_rollup_sql`` by hand.
    """
    database = settings.database
    engines = dict(
        client.query(
            "SELECT name, engine_full FROM system.tables WHERE database = {db:String}",
            parameters={"db": database},
        ).result_rows
    )
    ran = ttl_migrations(database, engines, retention_days(settings))
    for statement in ran:
        client.command(statement)
        log.info("changed a retention: %s", statement)
    if _is_empty(client, database, "stats_1h") and not _is_empty(client, database, "events"):
        statement = backfill_rollup_sql(database)
        client.command(statement, settings={"insert_deduplicate": 0})
        ran.append(statement)
        log.info("filled %s.stats_1h from the stored events", database)
    return ran


def _is_empty(client: _Client, database: str, table: str) -> bool:
    rows = client.query(
        "SELECT count() FROM (SELECT 1 FROM {db:Identifier}.{table:Identifier} LIMIT 1)",
        parameters={"db": database, "table": table},
    ).result_rows
    return int(rows[0][0]) == 0


def _check_name(database: str) -> None:
    if not database.replace("_", "").isalnum():
        raise ValueError(f"database name {database!r} must be letters, digits and underscores")
