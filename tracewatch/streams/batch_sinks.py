"""The ordered sinks a written batch goes through before its offsets commit.

Each sink has one ``flush(batch)`` that returns once its part of the batch is
acknowledged and raises ``SinkError`` otherwise; the writer retries the whole
list with the same batch (the same insert tokens), so every step must be
idempotent or harmless to repeat. The order is the reliability contract:

    events (ClickHouse, token from offset ranges) → dead letters acknowledged →
    closed minutes (``stats_1m``, then ``on_closed``) → alert transitions
    acknowledged → breaker signals flushed → (the writer) offsets may commit
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

import pyarrow as pa

from tracewatch.detectors.buckets import ClosedBucket
from tracewatch.pipeline import Rejected
from tracewatch.schemas.alert import Alert
from tracewatch.schemas.breaker import BreakerSignal
from tracewatch.sinks.arrow_events import events_table
from tracewatch.streams.pending import PendingBatch

__all__ = [
    "AlertsSink",
    "BatchSink",
    "BreakerSink",
    "BreakersSink",
    "DeadLetterSink",
    "DeadLetters",
    "EventStore",
    "EventsSink",
    "MinutesSink",
    "ObserveWrite",
]

#: ``(table, seconds)`` of one successful insert, for the worker's histograms
ObserveWrite = Callable[[str, float], None]


class BatchSink(Protocol):
    """One step of a batch's write; raises ``SinkError`` unless its part is acknowledged."""

    name: str

    def flush(self, batch: PendingBatch) -> None: ...


class EventStore(Protocol):
    """The ClickHouse writes the sinks need (``ClickHouseSink``, or a fake in tests)."""

    def write_event_table(self, table: pa.Table, token: str) -> None: ...
    def write_stats(self, buckets: Sequence[ClosedBucket], token: str | None = None) -> None: ...


class DeadLetters(Protocol):
    """Where rejects go (``DeadLetterPublisher``): ``publish`` at once, ``flush`` before commit."""

    def publish(self, rejected: Sequence[Rejected]) -> None: ...
    def flush(self, timeout: float = 30.0) -> None: ...


class BreakerSink(Protocol):
    """Where breaker signals go: ``publish`` at once (latency), ``flush`` before commit."""

    def publish(self, signals: Sequence[BreakerSignal]) -> None: ...
    def flush(self, timeout: float = 30.0) -> None: ...


class EventsSink:
    """The batch's new events, as one Arrow insert deduplicated by the offset ranges."""

    name = "events"

    def __init__(self, store: EventStore, topic: str, observe: ObserveWrite) -> None:
        self.store = store
        self.topic = topic
        self.observe = observe

    def flush(self, batch: PendingBatch) -> None:
        if not batch.events:
            return
        started = time.perf_counter()
        table = events_table(
            batch.events, batch.partitions, batch.offsets, self.topic, batch.cost_computed
        )
        self.store.write_event_table(table, batch.token(self.topic))
        self.observe("events", time.perf_counter() - started)


class DeadLetterSink:
    """The rejects published while the batch was built, acknowledged by Kafka."""

    name = "dlq"

    def __init__(self, dlq: DeadLetters) -> None:
        self.dlq = dlq

    def flush(self, batch: PendingBatch) -> None:
        self.dlq.flush()


class MinutesSink:
    """Closed minutes into ``stats_1m``, then to ``on_closed`` (the stats topic)."""

    name = "minutes"

    def __init__(
        self,
        store: EventStore,
        observe: ObserveWrite,
        on_closed: Callable[[list[ClosedBucket]], None] | None = None,
    ) -> None:
        self.store = store
        self.observe = observe
        self.on_closed = on_closed

    def flush(self, batch: PendingBatch) -> None:
        if not batch.closed:
            return
        started = time.perf_counter()
        self.store.write_stats(batch.closed)
        self.observe("stats", time.perf_counter() - started)
        if self.on_closed is not None:
            self.on_closed(batch.closed)


class AlertsSink:
    """The alert transitions those minutes caused; ``deliver`` raises unless acknowledged."""

    name = "alerts"

    def __init__(self, deliver: Callable[[list[Alert]], None] | None) -> None:
        self.deliver = deliver
        self.sent = 0
        self.fired: Counter[tuple[str, str]] = Counter()  # (alertname, status)

    def flush(self, batch: PendingBatch) -> None:
        if not batch.alerts or self.deliver is None:
            return
        self.deliver(batch.alerts)
        self.sent += len(batch.alerts)
        self.fired.update((a.alertname, a.status) for a in batch.alerts)


class BreakersSink:
    """Breaker signals were published when decided (latency); here they are flushed.

    A retried batch publishes them again first: the failed flush may have lost them.
    """

    name = "breakers"

    def __init__(self, breakers: BreakerSink | None) -> None:
        self.breakers = breakers

    def flush(self, batch: PendingBatch) -> None:
        if not batch.breakers or self.breakers is None:
            return
        if batch.resend_breakers:
            self.breakers.publish(batch.breakers)
        batch.resend_breakers = True  # if the flush below fails, the retry sends them again
        self.breakers.flush()
