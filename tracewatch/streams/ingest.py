"""The high-volume stage: events topic → pipeline → ClickHouse and DLQ → commit.

faust's per-event agent path costs about 50 µs an event before any work, so the
events topic is read here with confluent-kafka ``consume(n)`` in batches, on a
thread of its own, and handed to the pure ``Pipeline`` a batch at a time.

Flushes run on a writer thread of their own, one batch at a time and in order,
while this thread consumes and processes the next batch: ClickHouse's engine
works with the GIL released, so its inserts overlap the Python work here. At most
one batch is being written and one built (the hand-off blocks), so a slow or
failed sink stops consumption instead of growing memory.

Ordering of effects per flush (at-least-once with idempotent writes):
events to ClickHouse (deduplication token from partition/offset ranges) →
dead letters acknowledged by Kafka → closed buckets to ClickHouse and to the
``on_closed`` callback → the alert transitions those buckets caused to
``on_alerts`` (acknowledged) → offsets committed, but never past the first offset
that still feeds an open bucket. After a restart the worker reads those events
again: ClickHouse tells it which offsets are stored (not inserted again) and
which minutes were closed (their events are not counted again), and the open
minutes are rebuilt exactly. The detectors are judged once per closed minute
(when it closes) and their transitions wait in the pending batch, so a retried
flush re-sends the same alerts instead of losing them. After a restart the
detectors are warmed up from the last ``WARM_UP_MINUTES`` of closed minutes in
ClickHouse (``stats_1m.state``), and the transitions of the newest two of those
minutes, and every alert still open, are sent again: a crash between writing
statistics and acknowledging alerts must not lose an alert (a repeat has the
same fingerprint and ``starts_at``, so subscribers can tell).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from tracewatch.config import Settings
from tracewatch.detectors.breakers import BreakerBoard
from tracewatch.detectors.buckets import ClosedBucket
from tracewatch.detectors.engine import AlertEngine
from tracewatch.errors import SinkError
from tracewatch.pipeline import MessageBatch, Pipeline
from tracewatch.pricing import PriceTable
from tracewatch.schemas.alert import Alert
from tracewatch.schemas.breaker import BreakerSignal
from tracewatch.schemas.record import EventRecord
from tracewatch.sinks.arrow_events import events_table
from tracewatch.sinks.clickhouse import ClickHouseSink
from tracewatch.sinks.kafka import DeadLetterPublisher

__all__ = ["BreakerSink", "IngestLoop", "PendingBatch"]

log = logging.getLogger("tracewatch.ingest")
T = TypeVar("T")

#: minutes of history the detectors get back after a restart (baseline 60 + window 5 + slack)
WARM_UP_MINUTES = 70
#: event time of stored events the breaker board reads back after a restart (a trace
#: idle longer than its ttl, 10 minutes by default, has expired anyway)
BREAKER_WARM_UP_S = 900.0
#: transitions decided this close to the restart point are sent again
RESEND_AFTER_RESTART_S = 120.0


class BreakerSink(Protocol):
    """Where breaker signals go: ``publish`` at once (latency), ``flush`` before commit."""

    def publish(self, signals: Sequence[BreakerSignal]) -> None: ...
    def flush(self, timeout: float = 30.0) -> None: ...


@dataclass
class PendingBatch:
    """What has been processed but not yet flushed and committed."""

    events: list[EventRecord] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    cost_computed: list[bool] = field(default_factory=list)
    closed: list[ClosedBucket] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    breakers: list[BreakerSignal] = field(default_factory=list)
    resend_breakers: bool = False  # a failed flush: publish them again before the next one
    first_offset: dict[int, int] = field(default_factory=dict)
    last_offset: dict[int, int] = field(default_factory=dict)
    started: float = 0.0
    #: partition → offset to commit once written; set when handed to the writer
    commit_to: dict[int, int] = field(default_factory=dict)

    def start_clock(self) -> None:
        """Call before adding anything: the flush interval counts from the first addition."""
        if self.empty:
            self.started = time.monotonic()

    def note_batch(self, partitions: list[int], offsets: list[int]) -> None:
        """Record the offset range read per partition (offsets rise within a partition)."""
        first, last = self.first_offset, self.last_offset
        for partition, offset in zip(partitions, offsets, strict=True):
            if partition not in first:
                first[partition] = offset
            last[partition] = offset

    def token(self, topic: str) -> str:
        """Same offsets in, same token out: a retried insert is deduplicated."""
        ranges = ",".join(
            f"{p}:{self.first_offset[p]}-{self.last_offset[p]}" for p in sorted(self.last_offset)
        )
        return f"events:{topic}:{ranges}"

    @property
    def empty(self) -> bool:
        return not self.last_offset and not self.closed and not self.alerts and not self.breakers


class IngestLoop:
    """Consume, process, flush, commit; ``run`` blocks until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        sink: ClickHouseSink,
        on_closed: Callable[[list[ClosedBucket]], None] | None = None,
        engine: AlertEngine | None = None,
        on_alerts: Callable[[list[Alert]], None] | None = None,
        on_restored: Callable[[list[Alert]], None] | None = None,
        board: BreakerBoard | None = None,
        breakers: BreakerSink | None = None,
    ) -> None:
        """``on_alerts`` must raise ``SinkError`` unless every alert was acknowledged;
        ``on_restored`` gets the alerts still open after a restart's warm-up."""
        self.settings = settings
        self.topic = settings.kafka.events_topic
        self.sink = sink
        self.on_closed = on_closed
        self.engine = engine
        self.on_alerts = on_alerts
        self.on_restored = on_restored
        self.alerts_sent = 0
        self.board = board
        self.breakers = breakers
        self.breaker_signals = 0
        self.firing: list[Alert] = []  # a snapshot for the web views (replaced, never mutated)
        self._warmed_up = False
        self.pipeline = Pipeline.from_settings(
            settings.worker, PriceTable.from_settings(settings.pricing)
        )
        self.dlq = DeadLetterPublisher(settings.kafka, self.topic)
        self.pending = PendingBatch()
        self.stored_events = 0
        self.stats_rows = 0
        self.flushes = 0
        self.started_at = time.monotonic()
        self.last_error: str | None = None
        self._consumer: Consumer | None = None
        self._eof_since: dict[int, float] = {}
        self._stored: dict[int, int] = {}  # partition → last offset already in ClickHouse
        self._next: dict[int, int] = {}  # partition → offset after the last one flushed
        self._committed: dict[int, int] = {}
        self._read_through: dict[int, int] = {}  # partition → last offset this process read
        # offsets whose batches the writer has stored, for this thread to commit: the
        # consumer is used from this thread only (a synchronous commit from another
        # thread stalls behind poll)
        self._writable_commits: dict[int, int] = {}
        self._commits_lock = threading.Lock()
        # one batch being written while the next is built: bounded memory, and the
        # ingest thread blocks (stops consuming) while the sink cannot keep up or is down
        self._jobs: queue.Queue[PendingBatch | None] = queue.Queue(maxsize=1)
        self._writer_failed: BaseException | None = None
        self._handed_events = 0
        self._handing: PendingBatch | None = None  # waiting for the writer (see _give)
        self._paused = False
        self._held: list[Any] = []
        self.assignments = 0
        # for the worker's own metrics (streams/metrics.py reads them at scrape time)
        self.sink_errors = 0
        self.last_error_since = 0.0  # time.monotonic() when last_error was first set
        self.alerts_fired: Counter[tuple[str, str]] = Counter()  # (alertname, status)
        self.breakers_opened: Counter[str] = Counter()  # scope kind: trace / route
        self.consumer_lag: dict[int, int] = {}  # partition → messages behind
        self._lag_at = 0.0
        self.observe_batch: Callable[[float], None] = _untimed
        self.observe_write: Callable[[str, float], None] = _untimed

    def run(self, stop: threading.Event) -> None:
        self._consumer = self._make_consumer()
        writer = threading.Thread(target=self._write_loop, name="tracewatch-writer", daemon=True)
        writer.start()
        self._consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("consuming %s as group %s", self.topic, self.settings.kafka.consumer_group)
        try:
            while not stop.is_set():
                self.step()
            self._hand_off()
            self._wait_written()
        finally:
            self._jobs.put(None)
            writer.join()
            self._consumer.close()

    def step(self) -> int:
        """Poll one batch, process it, flush if due; returns how many messages came in."""
        assert self._consumer is not None
        w = self.settings.worker
        self._commit_written()
        self._measure_lag()
        # Wait for one message, then take whatever else is already fetched without
        # waiting: consume(n, timeout) blocks until n messages or the timeout (which
        # librdkafka may restart per fetch), so under a steady moderate load every
        # batch would wait the full timeout, and a breaker signal with it.
        held, self._held = self._held, []  # polled while paused (see _give)
        first = self._consumer.poll(0 if held else w.poll_timeout_s)
        messages = held if first is None else [*held, first]
        if messages and w.batch_max_events > len(messages):
            messages += self._consumer.consume(w.batch_max_events - len(messages), 0)
        data = [m for m in messages if m.error() is None]
        ends = [] if len(data) == len(messages) else self._ends(messages)
        batch = self._skip_read_again(
            MessageBatch(
                [m.value() for m in data],
                [m.key() for m in data],
                cast(list[int], [m.partition() for m in data]),
                cast(list[int], [m.offset() for m in data]),
            )
        )
        if batch.values:
            started = time.perf_counter()
            self._process(batch)
            self.observe_batch(time.perf_counter() - started)
        self._track_idle(set(batch.partitions), ends)
        if self._flush_due():
            self._hand_off()
        return len(data)

    def status(self) -> dict[str, Any]:
        c = self.pipeline.counters
        return {
            "received": c.received,
            "valid": c.valid,
            "rejected": dict(c.rejected),
            "rejected_total": c.rejected_total,
            "late": c.late,
            "stored_events": self.stored_events,
            # built here + handed to the writer and not yet stored (each counter has one writer)
            "pending_events": len(self.pending.events) + self._handed_events - self.stored_events,
            "replayed_dropped": self.pipeline.aggregator.replayed_dropped,
            "stats_rows": self.stats_rows,
            "open_buckets": self.pipeline.aggregator.open_buckets,
            "watermark": _finite_or_none(self.pipeline.aggregator.watermark),
            "flushes": self.flushes,
            "assignments": self.assignments,  # more than 1: a rebalance happened
            "paused": self._paused,
            "alerts_sent": self.alerts_sent,
            "alerts_firing": len(self.firing),
            "breaker_signals": self.breaker_signals,
            "breakers_open": 0 if self.board is None else len(self.board.open_signals()),
            "traces_tracked": 0 if self.board is None else len(self.board),
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "last_error": self.last_error,
        }

    def _process(self, batch: MessageBatch) -> None:
        result = self.pipeline.process(batch, self._stored)
        p = self.pending
        p.start_clock()
        p.note_batch(batch.partitions, batch.offsets)
        events = result.stored_events()
        p.events.extend(events)
        p.partitions.extend(result.partitions[result.to_store].tolist())
        p.offsets.extend(result.offsets[result.to_store].tolist())
        p.cost_computed.extend(result.cost_computed[result.to_store].tolist())
        self._judge_breakers(events)
        self._add_closed(result.closed)
        if result.rejected:
            self.dlq.publish(result.rejected)

    def _skip_read_again(self, batch: MessageBatch) -> MessageBatch:
        """Drop messages this process has read already.

        After a rebalance (a broker restart, a member joining) the consumer starts
        again from the last commit, held back for the open buckets. Those events
        are still in this process's buckets, stored and dead-lettered (revoke waits
        for the writes): read again they would be counted as duplicate event ids
        and dead-lettered a second time. A new process has read nothing and
        rebuilds its buckets from them instead.
        """
        read = self._read_through
        parts, offs = batch.partitions, batch.offsets
        # first offset per partition (offsets rise within one): dict() keeps the last
        # value per key, so over the reversed pairs it keeps the first, in C
        first = dict(zip(reversed(parts), reversed(offs), strict=True))
        if any(off <= read.get(part, -1) for part, off in first.items()):
            keep = [i for i, (p, o) in enumerate(zip(parts, offs, strict=True))
                    if o > read.get(p, -1)]  # fmt: skip
            batch = MessageBatch(
                [batch.values[i] for i in keep],
                [batch.keys[i] for i in keep],
                [parts[i] for i in keep],
                [offs[i] for i in keep],
            )
        read.update(zip(batch.partitions, batch.offsets, strict=True))
        return batch

    def _track_idle(self, with_data: set[int], ends: list[int]) -> None:
        """A partition at its end for ``idle_partition_s`` stops holding the watermark.

        Not at the first end-of-partition: a consumer that outruns its producers
        sees ends all the time, and marking those idle would let a partition that
        is merely slower make the others' events late (Flink's ``withIdleness``).
        """
        now = time.monotonic()
        for partition in with_data:
            self._eof_since.pop(partition, None)
        for partition in ends:
            self._eof_since.setdefault(partition, now)
        limit = self.settings.worker.idle_partition_s
        for partition, since in list(self._eof_since.items()):
            if now - since >= limit:
                self._add_closed(self.pipeline.mark_idle(partition))

    def _judge_breakers(self, events: list[EventRecord]) -> None:
        """Breakers act on every event, at once: signals are produced here, not at flush.

        Events read again after a restart (already stored) are left out: the
        board got them back from ClickHouse in ``_warm_up``.
        """
        if self.board is None:
            return
        signals = self.board.observe(events)
        signals += self.board.advance(self.board.now)
        if signals:
            self.pending.start_clock()
            self.pending.breakers.extend(signals)
            self.breaker_signals += len(signals)
            self.breakers_opened.update(
                s.scope.split(":", 1)[0] for s in signals if s.state == "open"
            )
            if self.breakers is not None:
                self.breakers.publish(signals)

    def _add_closed(self, closed: list[ClosedBucket]) -> None:
        if closed:
            self.pending.start_clock()
            self.pending.closed.extend(closed)
            if self.engine is not None:
                self.pending.alerts.extend(t.alert for t in self.engine.observe(closed))
                self.firing = self.engine.firing()

    def _flush_due(self) -> bool:
        p = self.pending
        if p.empty:
            return False
        w = self.settings.worker
        return (
            bool(p.alerts)  # an alert waits for nothing: its minute closed just now
            or len(p.events) >= w.sink_flush_rows
            or time.monotonic() - p.started >= w.sink_flush_interval_s
        )

    def _hand_off(self) -> None:
        """Give the pending batch to the writer thread and start a new one.

        The writer does the ClickHouse inserts, whose engine work runs with the
        GIL released, while this thread consumes and processes the next batch.
        The commit targets are fixed here, where the aggregator lives: the
        offsets read so far, held back to the first one an open bucket needs.
        """
        self._raise_if_writer_failed()
        p = self.pending
        if p.empty:
            return
        for part, off in p.last_offset.items():
            self._next[part] = off + 1
        holdback = self.pipeline.aggregator.holdback()
        p.commit_to = {part: min(nxt, holdback.get(part, nxt)) for part, nxt in self._next.items()}
        self.pending = PendingBatch()
        self._handed_events += len(p.events)
        self._give(p)

    def _give(self, p: PendingBatch) -> None:
        """Queue ``p`` for the writer, which may still be busy with the previous batch.

        While it is (a slow or failing sink), consumption stops but polling does not:
        the partitions are paused and ``poll`` keeps serving the group, so the
        consumer is not evicted after ``max.poll.interval.ms`` however long the sink
        is down, and a rebalance meanwhile is handled (``_on_revoke`` hands ``p``
        over itself). A message fetched before the pause took effect is kept for
        the next batch.
        """
        self._handing = p
        try:
            while self._handing is not None:
                try:
                    self._jobs.put(p, timeout=1.0)
                    self._handing = None
                except queue.Full:
                    self._raise_if_writer_failed()
                    self._poll_paused()
        finally:
            self._resume()

    def _poll_paused(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        if not self._paused:
            consumer.pause(consumer.assignment())
            self._paused = True
        message = consumer.poll(0.2)
        if message is not None:
            self._held.append(message)

    def _resume(self) -> None:
        if self._paused and self._consumer is not None:
            self._consumer.resume(self._consumer.assignment())
        self._paused = False

    def _wait_written(self) -> None:
        """Until every batch handed off is written and its offsets committed."""
        self._jobs.join()
        self._raise_if_writer_failed()
        self._commit_written()

    def _raise_if_writer_failed(self) -> None:
        if self._writer_failed is not None:
            raise RuntimeError("the writer thread failed") from self._writer_failed

    @property
    def writer_failed(self) -> BaseException | None:
        return self._writer_failed

    def _measure_lag(self) -> None:
        """Once a second: high watermark (as last fetched, no request) minus position."""
        now = time.monotonic()
        if self._consumer is None or now - self._lag_at < 1.0:
            return
        self._lag_at = now
        lag: dict[int, int] = {}
        for tp in self._consumer.position(self._consumer.assignment()):
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0 and tp.offset >= 0:
                lag[tp.partition] = max(0, high - tp.offset)
        self.consumer_lag = lag  # replaced whole: the scrape reads it from another thread

    def _write_loop(self) -> None:
        """The writer thread: each batch written, acknowledged and committed, in order."""
        while True:
            p = self._jobs.get()
            try:
                if p is None:
                    return
                if self._writer_failed is None:
                    self._retry(partial(self._flush, p))
            except BaseException as exc:  # surfaced by the ingest thread at its next hand-off
                self._writer_failed = exc
                log.exception("writing a batch failed; the worker stops")
            finally:
                self._jobs.task_done()

    def _retry(self, call: Callable[[], T]) -> T:
        """Retry sink failures with capped exponential backoff; nothing is committed meanwhile."""
        delay = 0.5
        while True:
            try:
                result = call()
                self.last_error = None
                return result
            except SinkError as exc:
                self.sink_errors += 1
                if self.last_error is None:
                    self.last_error_since = time.monotonic()
                self.last_error = str(exc)
                log.warning("sink failed, retrying in %.1fs: %s", delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _flush(self, p: PendingBatch) -> None:
        if p.events:
            started = time.perf_counter()
            self.sink.write_event_table(
                events_table(p.events, p.partitions, p.offsets, self.topic, p.cost_computed),
                p.token(self.topic),
            )
            self.observe_write("events", time.perf_counter() - started)
        self.dlq.flush()
        if p.closed:
            started = time.perf_counter()
            self.sink.write_stats(p.closed)
            self.observe_write("stats", time.perf_counter() - started)
            if self.on_closed is not None:
                self.on_closed(p.closed)
        if p.alerts and self.on_alerts is not None:
            self.on_alerts(p.alerts)
            self.alerts_sent += len(p.alerts)
            self.alerts_fired.update((a.alertname, a.status) for a in p.alerts)
        if p.breakers and self.breakers is not None:
            if p.resend_breakers:
                self.breakers.publish(p.breakers)
            p.resend_breakers = True  # if the flush below fails, the retry sends them again
            self.breakers.flush()
        with self._commits_lock:
            for part, off in p.commit_to.items():
                self._writable_commits[part] = max(off, self._writable_commits.get(part, off))
        self.stored_events += len(p.events)
        self.stats_rows += len(p.closed)
        self.flushes += 1

    def _commit_written(self) -> None:
        """Commit the offsets of the batches the writer has finished."""
        with self._commits_lock:
            ready, self._writable_commits = self._writable_commits, {}
        if self._consumer is None or not ready:
            return
        advance = {part: off for part, off in ready.items() if off > self._committed.get(part, -1)}
        if not advance:
            return
        offsets = [TopicPartition(self.topic, part, off) for part, off in advance.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
            self._committed.update(advance)
        except KafkaException as exc:
            # Lost the partitions in a rebalance: the new owner replays from the last
            # commit and the deduplication token keeps the events table exact.
            log.warning("offset commit failed: %s", exc)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Learn from ClickHouse what a previous run already stored and closed."""
        self.assignments += 1
        self._wait_written()
        self._stored = self._retry(lambda: self.sink.stored_offsets(self.topic))
        closed_until = self._retry(self.sink.closed_until)
        self.pipeline.aggregator.restore_closed_until(closed_until)
        self._warm_up(closed_until)
        for tp in partitions:
            self.pipeline.aggregator.assign_partition(tp.partition)
        log.info("assigned %s; stored up to %s", [tp.partition for tp in partitions], self._stored)

    def _warm_up(self, closed_until: float) -> None:
        """Give the detectors and breakers back their history once, on the first assignment."""
        if self._warmed_up:
            return
        self._warmed_up = True
        self._warm_up_breakers()
        if self.engine is None or closed_until == float("-inf"):
            return  # no minute was ever closed: the detectors have nothing to remember
        history = self._retry(
            lambda: self.sink.recent_buckets(closed_until - 60.0 * WARM_UP_MINUTES)
        )
        transitions = self.engine.observe(history)
        again = [t.alert for t in transitions if t.at > closed_until - RESEND_AFTER_RESTART_S]
        self.firing = self.engine.firing()
        # Every alert still open goes out again too, whenever it fired: a crash can
        # fall between writing a minute and acknowledging its alert, and later
        # minutes may have been written by a run that was itself killed before
        # sending anything (seen in test_crash_recovery). A repeat has the same
        # fingerprint and starts_at.
        resent = {(a.fingerprint, a.status) for a in again}
        again += [a for a in self.firing if (a.fingerprint, a.status) not in resent]
        if again:
            self.pending.start_clock()
            self.pending.alerts.extend(again)
        if self.firing and self.on_restored is not None:
            self.on_restored(self.firing)
        log.info(
            "detectors warmed up on %d minutes; %d alerts open, %d sent again",
            len(history),
            len(self.firing),
            len(again),
        )

    def _warm_up_breakers(self) -> None:
        """Rebuild per-trace and per-route breaker state from the events stored recently.

        Every event the board judged before the restart is in ClickHouse (events
        are stored before their offsets commit), so the board sees each once:
        these from storage, the rest from Kafka. The open breakers are published
        again (the topic is compacted: a repeat of the latest state is harmless).
        """
        if self.board is None:
            return
        lookback = BREAKER_WARM_UP_S + self.settings.worker.allowed_lateness_s
        history = self._retry(lambda: self.sink.recent_events(self.topic, lookback))
        if not history:
            return
        self.board.observe(history)
        self.board.advance(self.board.now)
        still_open = self.board.open_signals()
        if still_open:
            self.pending.start_clock()
            self.pending.breakers.extend(still_open)
            if self.breakers is not None:
                self.breakers.publish(still_open)
        log.info(
            "breakers warmed up on %d events; %d traces tracked, %d breakers open",
            len(history),
            len(self.board),
            len(still_open),
        )

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        held, self._handing = self._handing, None
        if held is not None:  # a rebalance while _give waited: written before revoking
            self._jobs.put(held)
        self._hand_off()
        self._wait_written()
        for tp in partitions:
            self.pipeline.aggregator.forget_partition(tp.partition)
            for state in (self._eof_since, self._next, self._committed):
                state.pop(tp.partition, None)

    def _make_consumer(self) -> Consumer:
        k = self.settings.kafka
        return Consumer(
            {
                **k.client_config(),
                "group.id": k.consumer_group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # a worker killed with -9 holds its partitions until its session times
                # out; 10 s (librdkafka's default is 45 s) bounds the gap after a crash
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 2_000,
                "max.poll.interval.ms": int(self.settings.worker.max_poll_interval_s * 1000),
                "enable.partition.eof": True,
                "fetch.max.bytes": 64 * 1024 * 1024,
                "queued.max.messages.kbytes": 256 * 1024,
            }
        )

    @staticmethod
    def _ends(messages: list[Any]) -> list[int]:
        """The partitions that reported their end; other consumer errors are logged."""
        ends = []
        for message in messages:
            err = message.error()
            if err is None:
                continue
            if err.code() == KafkaError._PARTITION_EOF:
                ends.append(message.partition())
            else:
                log.warning("consumer error: %s", err)
        return ends


def _untimed(*_: object) -> None:
    """The timing hooks' default: the worker sets them to its histograms."""


def _finite_or_none(value: float) -> float | None:
    """JSON has no infinities; "no watermark yet" is null."""
    return value if math.isfinite(value) else None
