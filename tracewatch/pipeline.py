"""The I/O-free core shared by the streaming worker and replay.

A batch of raw messages goes in; out come the valid events (with where they
came from), the rejected ones (with a reason), and any buckets the watermark
closed. The caller owns all I/O: writing events, sending rejects to the DLQ,
writing statistics, committing offsets.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tracewatch.config import WorkerSettings
from tracewatch.detectors.buckets import BucketAggregator, ClosedBucket, RowSources
from tracewatch.detectors.columns import EventColumns, key_of
from tracewatch.detectors.dedup import RecentIds
from tracewatch.errors import InvalidEvent
from tracewatch.schemas.event import TraceEvent
from tracewatch.schemas.validation import DEFAULT_MAX_MESSAGE_BYTES, validate_message

__all__ = ["BatchResult", "Pipeline", "PipelineCounters", "RawMessage", "Rejected"]


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message as read from Kafka (or one line of a replay file)."""

    value: bytes | None
    key: bytes | None = None
    partition: int = 0
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Rejected:
    message: RawMessage
    error: InvalidEvent


@dataclass
class BatchResult:
    """``events[i]`` came from ``sources[i]``; ``to_store`` are the ones not stored before."""

    events: list[TraceEvent]
    sources: list[RawMessage]
    rejected: list[Rejected]
    late: int
    closed: list[ClosedBucket]
    to_store: list[int]


@dataclass
class PipelineCounters:
    """Running totals; ``received == valid + rejected`` always holds."""

    received: int = 0
    valid: int = 0
    late: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


class Pipeline:
    """Validate, deduplicate and aggregate batches; pure and single-threaded."""

    def __init__(
        self,
        allowed_lateness_s: float = 120.0,
        bucket_width_s: float = 60.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        dedup_window: int = 1_000_000,
    ) -> None:
        self.aggregator = BucketAggregator(bucket_width_s, allowed_lateness_s)
        self.max_message_bytes = max_message_bytes
        self.recent_ids = RecentIds(dedup_window)
        self.counters = PipelineCounters()

    @classmethod
    def from_settings(cls, worker: WorkerSettings) -> Pipeline:
        """The pipeline the worker and replay both build, so they cannot drift apart."""
        return cls(
            allowed_lateness_s=worker.allowed_lateness_s,
            max_message_bytes=worker.max_message_bytes,
            dedup_window=worker.dedup_window,
        )

    def process(
        self, messages: Sequence[RawMessage], stored: Mapping[int, int] | None = None
    ) -> BatchResult:
        """Validate, deduplicate and aggregate one batch.

        ``stored`` maps a partition to the last offset whose event is already in
        storage (read again after a restart): such events rebuild open buckets
        but are neither stored again nor counted twice.
        """
        events: list[TraceEvent] = []
        sources: list[RawMessage] = []
        rejected: list[Rejected] = []
        for message in messages:
            try:
                event = validate_message(message.value, self.max_message_bytes)
            except InvalidEvent as exc:
                rejected.append(Rejected(message, exc))
                continue
            if self.recent_ids.seen(event.event_id):
                duplicate = InvalidEvent(
                    "duplicate_event_id",
                    f"event_id {event.event_id!r} was already seen",
                    "event_id",
                )
                rejected.append(Rejected(message, duplicate))
                continue
            events.append(event)
            sources.append(message)
        last_stored = stored or {}
        replayed = [m.offset <= last_stored.get(m.partition, -1) for m in sources]
        row_sources = RowSources(
            np.fromiter((m.partition for m in sources), np.int64, len(sources)),
            np.fromiter((m.offset for m in sources), np.int64, len(sources)),
            np.asarray(replayed, dtype=bool),
        )
        late = self.aggregator.add(
            [key_of(e) for e in events], EventColumns.from_events(events), row_sources
        )
        self._count(len(messages), len(events), late, rejected)
        to_store = [i for i, again in enumerate(replayed) if not again]
        closed = self.aggregator.close_ready()
        return BatchResult(events, sources, rejected, late, closed, to_store)

    def mark_idle(self, partition: int) -> list[ClosedBucket]:
        """A source partition reached its end: it stops holding the watermark back."""
        self.aggregator.mark_idle(partition)
        return self.aggregator.close_ready()

    def finish(self) -> list[ClosedBucket]:
        """Close every open bucket (end of a replay, or a clean shutdown)."""
        return self.aggregator.close_all()

    def _count(self, received: int, valid: int, late: int, rejected: list[Rejected]) -> None:
        self.counters.received += received
        self.counters.valid += valid
        self.counters.late += late
        self.counters.rejected.update(r.error.reason for r in rejected)
