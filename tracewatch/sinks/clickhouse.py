"""Writes events and statistics to ClickHouse through clickhouse-connect.

One code path for both engines: ``chdb://DIR`` runs ClickHouse in this process
(the laptop default), ``http(s)://host:port`` talks to a server. Inserts are
column-oriented batches carrying an ``insert_deduplication_token``, so a batch
retried after a failure or a restart is stored once.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tracewatch.config import ClickHouseSettings
from tracewatch.detectors.buckets import ClosedBucket
from tracewatch.detectors.stats import decode_state, encode_state
from tracewatch.errors import ServiceUnavailable, SinkError
from tracewatch.redact import redact_text, redact_url
from tracewatch.schemas.record import EventRecord
from tracewatch.sinks.clickhouse_schema import (
    EVENT_COLUMNS,
    STATS_COLUMNS,
    migrate,
    schema_statements,
)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["ClickHouseSink", "QueryResult", "event_columns", "stats_rows", "stats_token"]


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


class ClickHouseSink:
    """The one door to ClickHouse; thread-safe (chDB allows one engine per process)."""

    def __init__(self, settings: ClickHouseSettings) -> None:
        self.settings = settings
        self.dsn = settings.resolved_dsn()
        self.database = settings.database
        self._client: Any = None
        self._lock = threading.Lock()

    def connect(self) -> ClickHouseSink:
        """Open the client and create the tables if they are missing."""
        if self._client is not None:
            return self
        import clickhouse_connect  # heavy import, kept off CLI start-up

        try:
            self._client = clickhouse_connect.get_client(dsn=self.dsn, **self._credentials())
        except Exception as exc:
            raise ServiceUnavailable(self._explain(exc)) from None
        ttl = self.settings
        for statement in schema_statements(
            self.database, ttl.events_ttl_days, ttl.stats_ttl_days, ttl.rollup_ttl_days
        ):
            self._run(lambda s=statement: self._client.command(s), "create tables")
        self._run(lambda: migrate(self._client, self.settings), "migrate tables")
        return self

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> ClickHouseSink:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write_events(self, columns: Sequence[list[Any]], token: str) -> None:
        """Insert events given as ``event_columns(...)``; idempotent per ``token``."""
        self._insert("events", EVENT_COLUMNS, columns, token)

    def write_event_table(self, table: pa.Table, token: str) -> None:
        """Insert events given as ``events_table(...)`` (Arrow); idempotent per ``token``."""
        self.connect()
        if not table.num_rows:
            return
        self._run(
            lambda: self._client.insert_arrow(
                f"{self.database}.events",
                table,
                settings={"insert_deduplication_token": token},
            ),
            "insert into events",
        )

    def write_stats(self, buckets: Sequence[ClosedBucket], token: str | None = None) -> None:
        """Insert one statistics row per closed bucket."""
        if buckets:
            rows = stats_rows(buckets)
            columns = [list(col) for col in zip(*rows, strict=True)]
            self._insert("stats_1m", STATS_COLUMNS, columns, token or stats_token(buckets))

    def query(
        self, sql: str, parameters: Mapping[str, Any] | None = None, readonly: bool = True
    ) -> QueryResult:
        """Run a query with server-side parameter binding (``{name:Type}`` placeholders)."""
        self.connect()
        settings = {"readonly": 1} if readonly else {}
        result = self._run(
            lambda: self._client.query(sql, parameters=dict(parameters or {}), settings=settings),
            "query",
        )
        return QueryResult(list(result.column_names), [tuple(r) for r in result.result_rows])

    def stored_offsets(self, topic: str) -> dict[int, int]:
        """Per partition of ``topic``, the last offset whose event is stored."""
        result = self.query(
            "SELECT kafka_partition, max(kafka_offset) FROM {db:Identifier}.events "
            "WHERE kafka_topic = {topic:String} GROUP BY kafka_partition",
            {"db": self.database, "topic": topic},
        )
        return {int(part): int(offset) for part, offset in result.rows}

    def closed_until(self) -> float:
        """End of the newest on-time minute written: everything up to it was closed."""
        result = self.query(
            "SELECT max(toUnixTimestamp(minute)) + 60, count() FROM {db:Identifier}.stats_1m "
            "WHERE late = 0",
            {"db": self.database},
        )
        end, rows = result.rows[0]
        return float(end) if rows else float("-inf")

    def recent_buckets(self, since: float) -> list[ClosedBucket]:
        """On-time minutes starting at or after ``since``, oldest first, rebuilt exactly.

        The worker feeds these to its detectors after a restart, so it does not
        spend the next hour without a baseline. Rows written before the
        ``state`` column existed have none and are skipped.
        """
        result = self.query(
            "SELECT route, model, prompt_version, toUnixTimestamp(minute), state "
            "FROM {db:Identifier}.stats_1m "
            "WHERE late = 0 AND minute >= toDateTime({since:Int64}, 'UTC') AND state != '' "
            "ORDER BY minute, route, model, prompt_version "
            "LIMIT 1 BY route, model, prompt_version, minute",
            {"db": self.database, "since": math.floor(since)},
        )
        buckets = []
        for route, model, prompt_version, minute, state in result.rows:
            try:
                stats = decode_state(state)
            except ValueError:
                continue  # a damaged row costs its minute of history, not the restart
            buckets.append(
                ClosedBucket((route, model, prompt_version), float(minute), 60.0, False, stats)
            )
        return buckets

    def recent_event_ids(
        self, topic: str, lookback_s: float, per_partition: int
    ) -> list[tuple[int, int, str, float]]:
        """``(partition, offset, event_id, ts)`` of the stored events of ``topic`` from the last
        ``lookback_s`` of event time, at most ``per_partition`` (the newest) per partition,
        oldest first within a partition.

        After a restart the duplicate-id window gets these back: a producer's retry read
        after the restart must still be recognised when its original was committed
        before it (the window is per process and the original is not read again).
        """
        result = self.query(
            "SELECT kafka_partition, kafka_offset, event_id, toFloat64(ts) FROM ("
            "  SELECT kafka_partition, kafka_offset, event_id, ts FROM {db:Identifier}.events "
            "  WHERE kafka_topic = {topic:String} AND ts >= ("
            "    SELECT max(ts) FROM {db:Identifier}.events WHERE kafka_topic = {topic:String}"
            "  ) - toIntervalMillisecond({lookback_ms:Int64}) "
            "  ORDER BY kafka_partition, kafka_offset DESC LIMIT {n:UInt64} BY kafka_partition"
            ") ORDER BY kafka_partition, kafka_offset",
            {
                "db": self.database,
                "topic": topic,
                "lookback_ms": int(min(lookback_s, 10 * 365 * 86400.0) * 1000),
                "n": per_partition,
            },
        )
        return [
            (int(part), int(offset), str(event_id), float(ts))
            for part, offset, event_id, ts in result.rows
        ]

    def recent_events(
        self, topic: str, lookback_s: float, limit: int = 2_000_000
    ) -> list[EventRecord]:
        """Stored events of ``topic`` from the last ``lookback_s`` of event time (up to its
        newest event), with the fields breakers use, in event-time order.

        After a restart the breaker board gets the recent life of every trace
        back from here (the events were stored before their offsets were
        committed, so nothing the worker had judged is missing). ``limit`` keeps
        a restart after a very busy hour from loading everything at once.
        """
        result = self.query(
            "SELECT event_id, trace_id, toFloat64(ts), kind, route, cost_usd, status, "
            "loop_depth, tool_name, tool_args_hash FROM {db:Identifier}.events "
            "WHERE kafka_topic = {topic:String} AND ts >= ("
            "  SELECT max(ts) FROM {db:Identifier}.events WHERE kafka_topic = {topic:String}"
            ") - toIntervalMillisecond({lookback_ms:Int64}) "
            "ORDER BY ts, kafka_partition, kafka_offset LIMIT {limit:UInt64}",
            {
                "db": self.database,
                "topic": topic,
                "lookback_ms": int(lookback_s * 1000),
                "limit": limit,
            },
        )
        return [
            EventRecord(
                event_id=event_id,
                trace_id=trace_id,
                ts=float(ts),
                kind=kind,
                route=route,
                cost_usd=cost,
                status=status,
                loop_depth=depth,
                tool_name=tool or None,
                tool_args_hash=args or None,
            )
            for event_id, trace_id, ts, kind, route, cost, status, depth, tool, args in result.rows
        ]

    def _insert(
        self, table: str, names: Sequence[str], columns: Sequence[list[Any]], token: str
    ) -> None:
        self.connect()
        if not columns or not columns[0]:
            return
        self._run(
            lambda: self._client.insert(
                f"{self.database}.{table}",
                list(columns),
                column_names=list(names),
                column_oriented=True,
                settings={"insert_deduplication_token": token},
            ),
            f"insert into {table}",
        )

    def _run(self, call: Any, what: str) -> Any:
        with self._lock:
            try:
                return call()
            except Exception as exc:
                raise SinkError(f"ClickHouse {what} failed: {_short(exc)}") from None

    def _credentials(self) -> dict[str, Any]:
        creds: dict[str, Any] = {}
        if self.settings.username:
            creds["username"] = self.settings.username
        if self.settings.password is not None:
            creds["password"] = self.settings.password.get_secret_value()
        return creds

    def _explain(self, exc: Exception) -> str:
        text = _short(exc)
        if self.dsn.startswith("chdb://"):
            path = self.dsn.removeprefix("chdb://")
            return (
                f"cannot open the embedded ClickHouse at {path}: {text}. Only one process can "
                "open it at a time: if `tracewatch run` is running, query through it "
                "(`tracewatch query` does this by itself) or stop it first."
            )
        return f"cannot reach ClickHouse at {redact_url(self.dsn)}: {redact_text(text)}"


def event_columns(
    events: Sequence[EventRecord],
    partitions: Sequence[int],
    offsets: Sequence[int],
    topic: str = "",
) -> list[list[Any]]:
    """Column-oriented rows of ``events`` in ``EVENT_COLUMNS`` order."""
    return [
        [e.event_id for e in events],
        [e.trace_id for e in events],
        [e.span_id or "" for e in events],
        [e.parent_span_id or "" for e in events],
        [datetime.fromtimestamp(e.ts, UTC) for e in events],
        [e.kind for e in events],
        [e.route for e in events],
        [e.app or "" for e in events],
        [e.model or "" for e in events],
        [e.provider or "" for e in events],
        [e.prompt_version or "" for e in events],
        [e.cohort or "" for e in events],
        [e.session_id or "" for e in events],
        [e.latency_ms for e in events],
        [e.input_tokens for e in events],
        [e.output_tokens for e in events],
        [e.cost_usd for e in events],
        ["missing" if e.cost_usd is None else "provided" for e in events],
        [e.status for e in events],
        [e.error_type or "" for e in events],
        [e.retry_count for e in events],
        [e.loop_depth for e in events],
        [e.tool_name or "" for e in events],
        [e.tool_args_hash or "" for e in events],
        [e.scores for e in events],
        [e.guardrail_action or "" for e in events],
        [e.guardrail_name or "" for e in events],
        [{k: _attribute_text(v) for k, v in e.attributes.items()} for e in events],
        [topic] * len(events),
        list(partitions),
        list(offsets),
    ]


def stats_rows(buckets: Sequence[ClosedBucket]) -> list[tuple[Any, ...]]:
    """One ``STATS_COLUMNS`` row per bucket."""
    rows = []
    for bucket in buckets:
        summary = bucket.stats.summary()
        summary.update(
            route=bucket.key[0],
            model=bucket.key[1],
            prompt_version=bucket.key[2],
            minute=datetime.fromtimestamp(bucket.start, UTC),
            late=int(bucket.late),
            max_event_ts=datetime.fromtimestamp(bucket.stats.max_ts, UTC),
            state=encode_state(bucket.stats),
        )
        rows.append(tuple(summary[name] for name in STATS_COLUMNS))
    return rows


def stats_token(buckets: Sequence[ClosedBucket]) -> str:
    """A token that is the same when the same buckets with the same content are re-sent."""
    digest = hashlib.sha256()
    for b in buckets:
        digest.update(f"{b.key}|{b.start}|{b.late}|{b.stats.count}|{b.stats.max_ts};".encode())
    return "stats:" + digest.hexdigest()[:32]


def _attribute_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
