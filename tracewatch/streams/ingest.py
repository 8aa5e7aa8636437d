"""The high-volume stage's consumer shell: events topic → stage → writer → commit.

faust's per-event agent path costs about 50 µs an event before any work, so the
events topic is read here with confluent-kafka ``consume(n)`` in batches, on a
thread of its own, and each batch is handed to the pure ``Stage``
(``tracewatch/stage.py``: decode → minutes → breakers → alert engine; replay
drives the same object). This module owns only the consumer: poll, pause and
resume, assignment and revocation, commits. The parts it drives:

- ``writer.py``: a writer thread runs each handed-off batch through the ordered
  sinks of ``batch_sinks.py`` (events → dead letters → minutes → alerts →
  breakers) while this thread consumes the next one; at most one batch is
  written and one waits, so a slow or failed sink pauses consumption instead of
  growing memory.
- ``warm_up.py``: at an assignment, what ClickHouse already has (stored offsets,
  the newest written minute) and, once per process, the detectors' and
  breakers' history.

Offsets commit only after the batch's sinks all succeeded, and never past the
first offset that still feeds an open bucket (``Stage.holdback``). After a
restart the worker reads those events again: ClickHouse tells it which offsets
are stored (not inserted again) and which minutes were closed (their events are
not counted again), and the open minutes are rebuilt exactly. The detectors are
judged once per closed minute (when it closes) and their transitions wait in
the pending batch, so a retried flush re-sends the same alerts instead of
losing them.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection
from typing import Any, Protocol, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from tracewatch.config import Settings
from tracewatch.detectors.breakers import BreakerBoard
from tracewatch.detectors.buckets import ClosedBucket
from tracewatch.detectors.engine import AlertEngine
from tracewatch.detectors.rollout import RolloutJudge
from tracewatch.pipeline import MessageBatch, Pipeline
from tracewatch.pricing import PriceTable
from tracewatch.schemas.alert import Alert
from tracewatch.sinks.kafka import DeadLetterPublisher
from tracewatch.stage import Stage, StageOutput
from tracewatch.streams.batch_sinks import (
    AlertsSink,
    BreakerSink,
    BreakersSink,
    DeadLetters,
    DeadLetterSink,
    EventsSink,
    EventStore,
    MinutesSink,
)
from tracewatch.streams.pending import PendingBatch
from tracewatch.streams.retry import SinkRetry
from tracewatch.streams.warm_up import Restored, StoredState, WarmUp
from tracewatch.streams.writer import BatchWriter

__all__ = ["BreakerSink", "IngestLoop", "PendingBatch"]

log = logging.getLogger("tracewatch.ingest")


class IngestStore(EventStore, StoredState, Protocol):
    """What the loop needs of ClickHouse: the writes and the restart reads."""


class IngestLoop:
    """Consume, process, hand off, commit; ``run`` blocks until ``stop`` is set.

    ``dlq``, ``consumer_factory`` and ``retry`` replace the real dead-letter
    producer, Kafka consumer and backoff (the protocol tests script them).
    """

    def __init__(
        self,
        settings: Settings,
        sink: IngestStore,
        on_closed: Callable[[list[ClosedBucket]], None] | None = None,
        engine: AlertEngine | None = None,
        on_alerts: Callable[[list[Alert]], None] | None = None,
        on_restored: Callable[[list[Alert]], None] | None = None,
        board: BreakerBoard | None = None,
        breakers: BreakerSink | None = None,
        *,
        dlq: DeadLetters | None = None,
        consumer_factory: Callable[[], Consumer] | None = None,
        retry: SinkRetry | None = None,
    ) -> None:
        """``on_alerts`` must raise ``SinkError`` unless every alert was acknowledged;
        ``on_restored`` gets the alerts still open after a restart's warm-up."""
        self.settings = settings
        self.topic = settings.kafka.events_topic
        self.sink = sink
        self.on_restored = on_restored
        self.breakers = breakers
        self.stage = Stage.from_settings(
            settings.worker,
            PriceTable.from_settings(settings.pricing),
            engine,
            board,
            None if engine is None else RolloutJudge.from_settings(settings),  # canaries
        )
        self.dlq = dlq if dlq is not None else DeadLetterPublisher(settings.kafka, self.topic)
        self.retry = retry if retry is not None else SinkRetry()
        self._alerts_sink = AlertsSink(on_alerts)
        self.writer = BatchWriter(
            [
                EventsSink(sink, self.topic, self._observe_write),
                DeadLetterSink(self.dlq),
                MinutesSink(sink, self._observe_write, on_closed),
                self._alerts_sink,
                BreakersSink(breakers),
            ],
            self.retry,
        )
        self.warm_up = WarmUp(sink, self.topic, self.retry, settings.worker.allowed_lateness_s)
        self._consumer_factory = consumer_factory
        self.breaker_signals = 0
        self.firing: list[Alert] = []  # a snapshot for the web views (replaced, never mutated)
        self.pending = PendingBatch()
        self.started_at = time.monotonic()
        self._consumer: Consumer | None = None
        self._eof_since: dict[int, float] = {}
        self._stored: dict[int, int] = {}  # partition → last offset already in ClickHouse
        self._next: dict[int, int] = {}  # partition → offset after the last one handed off
        self._committed: dict[int, int] = {}
        self._read_through: dict[int, int] = {}  # partition → last offset this process read
        self._revoked: set[int] = set()  # revoked, not (yet) assigned again
        self._overflow_logged: set[str] = set()  # overflow kinds already logged once
        self._handed_events = 0
        self._handing: PendingBatch | None = None  # waiting for the writer (see _give)
        self._paused = False
        self._held: list[Any] = []
        self.assignments = 0
        # for the worker's own metrics (streams/metrics.py reads them at scrape time)
        self.breakers_opened: Counter[str] = Counter()  # scope kind: trace / route
        self.consumer_lag: dict[int, int] = {}  # partition → messages behind
        self._lag_at = 0.0
        self.observe_batch: Callable[[float], None] = _untimed
        self.observe_write: Callable[[str, float], None] = _untimed

    # -- what the worker's views and metrics read -----------------------------------------

    @property
    def pipeline(self) -> Pipeline:
        return self.stage.pipeline

    @property
    def engine(self) -> AlertEngine | None:
        return self.stage.engine

    @property
    def board(self) -> BreakerBoard | None:
        return self.stage.board

    @property
    def alerts_sent(self) -> int:
        return self._alerts_sink.sent

    @property
    def alerts_fired(self) -> Counter[tuple[str, str]]:
        return self._alerts_sink.fired

    @property
    def stored_events(self) -> int:
        return self.writer.stored_events

    @property
    def sink_errors(self) -> int:
        return self.retry.errors

    @property
    def last_error(self) -> str | None:
        return self.retry.last_error

    @property
    def last_error_since(self) -> float:
        return self.retry.last_error_since

    @property
    def writer_failed(self) -> BaseException | None:
        return self.writer.failed

    def status(self) -> dict[str, Any]:
        c = self.stage.counters
        aggregator = self.stage.pipeline.aggregator
        return {
            "received": c.received,
            "valid": c.valid,
            "rejected": dict(c.rejected),
            "rejected_total": c.rejected_total,
            "late": c.late,
            "stored_events": self.writer.stored_events,
            # built here + handed to the writer and not yet stored (each counter has one writer)
            "pending_events": len(self.pending.events)
            + self._handed_events
            - self.writer.stored_events,
            "replayed_dropped": aggregator.replayed_dropped,
            "stats_rows": self.writer.stats_rows,
            "open_buckets": aggregator.open_buckets,
            "watermark": _finite_or_none(aggregator.watermark),
            "flushes": self.writer.flushes,
            "assignments": self.assignments,  # more than 1: a rebalance happened
            "paused": self._paused,
            "alerts_sent": self.alerts_sent,
            "alerts_firing": len(self.firing),
            "breaker_signals": self.breaker_signals,
            "breakers_open": len(self.stage.open_breakers()),
            "traces_tracked": self.stage.traces_tracked,
            "bucket_keys": self.stage.pipeline.caps.keys,
            "overflow": self.stage.overflow(),
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "last_error": self.last_error,
        }

    # -- the loop ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        try:
            self.start()
            while not stop.is_set():
                self.step()
            self.drain()
        finally:
            self.close()

    def start(self) -> None:
        """Build the consumer, start the writer, subscribe (``run`` does all of it)."""
        self._consumer = self._make_consumer()
        self.writer.start()
        self._consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("consuming %s as group %s", self.topic, self.settings.kafka.consumer_group)

    def drain(self) -> None:
        """Hand off what is pending and wait until it is written and committed."""
        self._hand_off()
        self._wait_written()

    def close(self) -> None:
        self.writer.close()
        if self._consumer is not None:
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

    def _log_overflow(self) -> None:
        """One warning per kind of state cap, the first time it turns something away."""
        for kind, n in self.stage.overflow().items():
            if n and kind not in self._overflow_logged:
                self._overflow_logged.add(kind)
                log.warning(
                    "state cap reached: %s (%d so far; counted on /status and in "
                    "tracewatch_state_overflow_total). Over the bucket caps, keys fold into "
                    "__other__ (TRACEWATCH_WORKER_BUCKET_MAX_*); over the breaker cap, closed "
                    "traces are shed (TRACEWATCH_WORKER_BREAKER_MAX_TRACES)",
                    kind,
                    n,
                )

    def _process(self, batch: MessageBatch) -> None:
        out = self.stage.process(batch, self._stored)
        self._log_overflow()
        self.pending.start_clock()
        self.pending.note_batch(batch.partitions, batch.offsets)
        self._take(out)

    def _take(self, out: StageOutput) -> None:
        """Keep the stage's output for the writer; breaker signals and rejects go out at
        once (latency; the writer's sinks flush them before the commit)."""
        self.pending.add(out)
        if out.breakers:
            self.breaker_signals += len(out.breakers)
            self.breakers_opened.update(
                s.scope.split(":", 1)[0] for s in out.breakers if s.state == "open"
            )
            if self.breakers is not None:
                self.breakers.publish(out.breakers)
        if out.closed and self.stage.engine is not None:
            self.firing = self.stage.firing()
        if out.rejected:
            self.dlq.publish(out.rejected)

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
                self._take(self.stage.mark_idle(partition))

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

    # -- hand-off to the writer, backpressure, commits -----------------------------------

    def _hand_off(self) -> None:
        """Give the pending batch to the writer thread and start a new one.

        The commit targets are fixed here, where the stage lives: the offsets read
        so far, held back to the first one an open bucket needs.
        """
        self.writer.raise_if_failed()
        p = self.pending
        if p.empty:
            return
        for part, off in p.last_offset.items():
            self._next[part] = off + 1
        holdback = self.stage.holdback()
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
                    self.writer.put(p, timeout=1.0)
                    self._handing = None
                except queue.Full:
                    self.writer.raise_if_failed()
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
        self.writer.join()
        self._commit_written()

    def _commit_written(self) -> None:
        """Commit the offsets of the batches the writer has finished."""
        ready = self.writer.take_commits()
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

    # -- rebalances ----------------------------------------------------------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Learn from ClickHouse what a previous run already stored and closed."""
        self.assignments += 1
        self._wait_written()
        assigned = {tp.partition for tp in partitions}
        self._drop_moved(self._revoked - assigned)
        self._stored = self.warm_up.stored_offsets()
        closed_until = self.warm_up.closed_until()
        self.stage.restore_closed_until(closed_until)
        restored = self.warm_up.restore(self.stage, closed_until)
        if restored is not None:
            self._send_again(restored)
        self.stage.assign(sorted(assigned))
        log.info("assigned %s; stored up to %s", sorted(assigned), self._stored)

    def _send_again(self, restored: Restored) -> None:
        """After the first assignment's warm-up: what a crash may have left unsent."""
        if restored.breakers:
            self.pending.start_clock()
            self.pending.breakers.extend(restored.breakers)
            if self.breakers is not None:
                self.breakers.publish(restored.breakers)
        if self.stage.engine is not None:
            self.firing = restored.firing
        if restored.alerts:
            self.pending.start_clock()
            self.pending.alerts.extend(restored.alerts)
        if self.firing and self.on_restored is not None:
            self.on_restored(self.firing)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Write everything read so far before the partitions go (the hand-over).

        The eager protocol revokes every partition at every rebalance, and with one
        worker they all come straight back: their state is kept until the next
        assignment says which of them really moved (``_drop_moved``).
        """
        held, self._handing = self._handing, None
        if held is not None:  # a rebalance while _give waited: written before revoking
            self.writer.put(held, timeout=None)
        self._hand_off()
        self._wait_written()
        gone = [tp.partition for tp in partitions]
        self.stage.release(gone)
        for partition in gone:
            for state in (self._eof_since, self._next, self._committed):
                state.pop(partition, None)
        self._revoked.update(gone)

    def _drop_moved(self, moved: Collection[int]) -> None:
        """Partitions revoked and not assigned back: another worker owns them now."""
        self._revoked.clear()
        if not moved:
            return
        forgotten = self.stage.revoke(moved)
        for partition in moved:  # if it comes back, it is read again from its commit point
            self._read_through.pop(partition, None)
        log.info("partitions %s moved away: %d of their event ids forgotten", moved, forgotten)

    def _make_consumer(self) -> Consumer:
        if self._consumer_factory is not None:
            return self._consumer_factory()
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

    def _observe_write(self, table: str, seconds: float) -> None:
        self.observe_write(table, seconds)  # looked up per call: the worker sets it later

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
