"""DDL of the tables tracewatch writes (also printed by ``tracewatch schema``).

``events`` holds the contract's fields, never prompt or completion text.
``stats_1m`` holds one row per (route, model, prompt_version, minute) as the
stream computed it, plus rows with ``late = 1`` for events that arrived after
their minute had closed. Sum ``count`` over both kinds for totals.

Both are MergeTree with a deduplication window, so an insert retried with the
same ``insert_deduplication_token`` is stored once.
"""

from __future__ import annotations

__all__ = ["EVENT_COLUMNS", "STATS_COLUMNS", "schema_statements"]

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
TTL toDateTime(ts) + INTERVAL {events_ttl_days} DAY
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
TTL minute + INTERVAL {stats_ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 10000
"""


def schema_statements(database: str, events_ttl_days: int, stats_ttl_days: int) -> list[str]:
    """CREATE statements, in order; every one is idempotent."""
    if not database.replace("_", "").isalnum():
        raise ValueError(f"database name {database!r} must be letters, digits and underscores")
    fmt = {"db": database, "events_ttl_days": events_ttl_days, "stats_ttl_days": stats_ttl_days}
    return [
        f"CREATE DATABASE IF NOT EXISTS {database}",
        _EVENTS.format(**fmt).strip(),
        _STATS.format(**fmt).strip(),
        # added after the first release: tables created before it gain the column
        f"ALTER TABLE {database}.stats_1m ADD COLUMN IF NOT EXISTS "
        "state String CODEC(ZSTD(1)) AFTER max_event_ts",
    ]
