"""The I/O-free core shared by the streaming worker and replay.

A batch of raw messages goes in; out come the valid events (with where they
came from), the rejected ones (with a reason), and any buckets the watermark
closed. The caller owns all I/O: writing events, sending rejects to the DLQ,
writing statistics, committing offsets.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec
import numpy as np
import numpy.typing as npt

from tracewatch.config import WorkerSettings
from tracewatch.detectors.buckets import BucketAggregator, ClosedBucket, RowSources
from tracewatch.detectors.columns import EventColumns, keys_of
from tracewatch.detectors.dedup import RecentIds
from tracewatch.detectors.key_caps import KeyCaps
from tracewatch.errors import InvalidEvent
from tracewatch.pricing import PriceTable
from tracewatch.schemas.content import without_content
from tracewatch.schemas.record import EventRecord
from tracewatch.schemas.validation import (
    DEFAULT_MAX_MESSAGE_BYTES,
    decode_records,
    future_rejects,
)

__all__ = [
    "BatchResult",
    "MessageBatch",
    "Pipeline",
    "PipelineCounters",
    "RawMessage",
    "Rejected",
]


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message as read from Kafka (or one line of a replay file)."""

    value: bytes | None
    key: bytes | None = None
    partition: int = 0
    offset: int = 0


@dataclass(slots=True)
class MessageBatch:
    """A batch of messages as parallel lists: the hot path builds no object per message.

    ``RawMessage`` objects are made only for the few messages that are rejected.
    """

    values: list[bytes | None]
    keys: list[bytes | None]
    partitions: list[int]
    offsets: list[int]

    @classmethod
    def of(cls, messages: Sequence[RawMessage]) -> MessageBatch:
        return cls(
            [m.value for m in messages],
            [m.key for m in messages],
            [m.partition for m in messages],
            [m.offset for m in messages],
        )

    def message(self, i: int) -> RawMessage:
        return RawMessage(self.values[i], self.keys[i], self.partitions[i], self.offsets[i])

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True, slots=True)
class Rejected:
    message: RawMessage
    error: InvalidEvent


@dataclass
class BatchResult:
    """``events[i]`` came from ``partitions[i]``/``offsets[i]``; ``to_store`` indexes
    the events not stored before (read again after a restart)."""

    events: list[EventRecord]
    partitions: npt.NDArray[np.int64]
    offsets: npt.NDArray[np.int64]
    rejected: list[Rejected]
    late: int
    closed: list[ClosedBucket]
    to_store: npt.NDArray[np.intp]
    #: ``cost_computed[i]``: ``events[i].cost_usd`` came from the price table
    cost_computed: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))

    def stored_events(self) -> list[EventRecord]:
        if len(self.to_store) == len(self.events):
            return self.events
        return [self.events[i] for i in self.to_store.tolist()]


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
        dedup_window: int = 150_000,
        dedup_window_s: float = 300.0,
        prices: PriceTable | None = None,
        store_content: bool = False,
        max_future_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
        caps: KeyCaps | None = None,
    ) -> None:
        """``prices``: completes ``cost_usd`` from the model and tokens where it is missing.
        ``store_content``: keep attributes named as prompt/completion content.
        ``max_future_s``: events dated further than this after ``clock()`` (the wall
        clock when the batch is processed; tests inject one) go to the DLQ as
        ``future_timestamp``. ``caps``: the bucket key caps (default: ``KeyCaps()``)."""
        self.prices = prices
        self.max_future_s = max_future_s
        self.clock = clock
        self.store_content = store_content
        self.aggregator = BucketAggregator(bucket_width_s, allowed_lateness_s)
        self.max_message_bytes = max_message_bytes
        self.recent_ids = RecentIds(dedup_window, dedup_window_s)
        # id → (partition, offset) of stored events whose ids a restart put back into
        # ``recent_ids``: read again from the commit point, the original itself is not
        # its own duplicate (popped when seen, so this only shrinks)
        self._stored_ids: dict[str, tuple[int, int]] = {}
        self.caps = caps if caps is not None else KeyCaps()
        self.counters = PipelineCounters()

    @classmethod
    def from_settings(cls, worker: WorkerSettings, prices: PriceTable | None = None) -> Pipeline:
        """The pipeline the worker and replay both build, so they cannot drift apart."""
        return cls(
            allowed_lateness_s=worker.allowed_lateness_s,
            max_message_bytes=worker.max_message_bytes,
            dedup_window=worker.dedup_window,
            dedup_window_s=worker.dedup_window_s,
            prices=prices,
            store_content=worker.store_content,
            max_future_s=worker.max_future_s,
            caps=KeyCaps(
                max_routes=worker.bucket_max_routes,
                max_keys_per_route=worker.bucket_max_keys_per_route,
                max_keys=worker.bucket_max_keys,
                idle_s=worker.bucket_key_idle_s,
            ),
        )

    def process(
        self, messages: Sequence[RawMessage] | MessageBatch, stored: Mapping[int, int] | None = None
    ) -> BatchResult:
        """Validate, deduplicate and aggregate one batch.

        ``stored`` maps a partition to the last offset whose event is already in
        storage (read again after a restart): such events rebuild open buckets
        but are neither stored again nor counted twice.
        """
        batch = messages if isinstance(messages, MessageBatch) else MessageBatch.of(messages)
        records, index, bad = decode_records(batch.values, self.max_message_bytes)
        rejected = [Rejected(batch.message(i), exc) for i, exc in bad]
        records, index = self._not_future(batch, records, index, rejected)
        events, index = self._first_seen(batch, records, index, rejected)
        if not self.store_content:
            _drop_content(events)
        rows = np.asarray(index, dtype=np.intp)
        partitions = np.asarray(batch.partitions, dtype=np.int64)[rows]
        offsets = np.asarray(batch.offsets, dtype=np.int64)[rows]
        replayed = _replayed(partitions, offsets, stored)
        cols, computed = self._complete_costs(events, EventColumns.from_events(events))
        keys = self.caps.fold(keys_of(events), cols.ts)
        late = self.aggregator.add(keys, cols, RowSources(partitions, offsets, replayed))
        self._count(len(batch), len(events), late, rejected)
        to_store = np.flatnonzero(~replayed)
        closed = self.aggregator.close_ready()
        return BatchResult(events, partitions, offsets, rejected, late, closed, to_store, computed)

    def _complete_costs(
        self, events: list[EventRecord], cols: EventColumns
    ) -> tuple[EventColumns, npt.NDArray[np.bool_]]:
        """Price the events that came without ``cost_usd`` (contract: "computed from its
        price table"): in the columns, and in the records the breakers and storage see."""
        if self.prices is None or not events:
            return cols, np.zeros(len(events), dtype=bool)
        costs, computed = self.prices.fill_costs(
            [e.model for e in events], cols.cost_usd, cols.input_tokens, cols.output_tokens
        )
        rows = np.flatnonzero(computed).tolist()
        for i in rows:
            events[i] = msgspec.structs.replace(events[i], cost_usd=float(costs[i]))
        return (dataclasses.replace(cols, cost_usd=costs) if rows else cols), computed

    def _not_future(
        self,
        batch: MessageBatch,
        records: list[EventRecord],
        index: list[int],
        rejected: list[Rejected],
    ) -> tuple[list[EventRecord], list[int]]:
        """Move the events dated too far ahead of the wall clock to ``rejected``."""
        ahead = future_rejects(records, self.clock(), self.max_future_s)
        if not ahead:
            return records, index
        rejected.extend(Rejected(batch.message(index[j]), exc) for j, exc in ahead)
        rejected.sort(key=lambda r: (r.message.partition, r.message.offset))
        drop = {j for j, _ in ahead}
        keep = [j for j in range(len(records)) if j not in drop]
        return [records[j] for j in keep], [index[j] for j in keep]

    def restore_ids(self, stored: Sequence[tuple[int, int, str, float]]) -> None:
        """After a restart: ``(partition, offset, event_id, ts)`` of recently stored events.

        A producer's retry committed after its original is then still a duplicate,
        although the original is not read again; an original read again (it lies
        after the commit point) is recognised by its offset and rebuilds its bucket.
        """
        if not stored:
            return
        self.recent_ids.repeats(
            [s[2] for s in stored], [s[0] for s in stored], [s[3] for s in stored]
        )
        self._stored_ids.update((s[2], (s[0], s[1])) for s in stored)

    def _first_seen(
        self,
        batch: MessageBatch,
        records: list[EventRecord],
        index: list[int],
        rejected: list[Rejected],
    ) -> tuple[list[EventRecord], list[int]]:
        """Drop repeated event ids (to ``rejected``), keeping the first of each."""
        parts = batch.partitions
        checked = self._not_restored(batch, records, index)
        found = self.recent_ids.repeats(
            [records[j].event_id for j in checked],
            [parts[index[j]] for j in checked],
            [records[j].ts for j in checked],
        )
        repeats = [checked[k] for k in found]
        if not repeats:
            return records, index
        for j in repeats:
            duplicate = InvalidEvent(
                "duplicate_event_id",
                f"event_id {records[j].event_id!r} was already seen",
                "event_id",
            )
            rejected.append(Rejected(batch.message(index[j]), duplicate))
        rejected.sort(key=lambda r: (r.message.partition, r.message.offset))
        drop = set(repeats)
        keep = [j for j in range(len(records)) if j not in drop]
        return [records[j] for j in keep], [index[j] for j in keep]

    def _not_restored(
        self, batch: MessageBatch, records: list[EventRecord], index: list[int]
    ) -> list[int]:
        """The records to check for repeats: all but restored originals read again."""
        if not self._stored_ids:
            return list(range(len(records)))
        stored, checked = self._stored_ids, []
        for j, record in enumerate(records):
            at = stored.get(record.event_id)
            if at is not None and at == (batch.partitions[index[j]], batch.offsets[index[j]]):
                del stored[record.event_id]
            else:
                checked.append(j)
        return checked

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


def _replayed(
    partitions: npt.NDArray[np.int64],
    offsets: npt.NDArray[np.int64],
    stored: Mapping[int, int] | None,
) -> npt.NDArray[np.bool_]:
    """Rows at or below the last offset stored per partition."""
    replayed = np.zeros(len(offsets), dtype=bool)
    for partition, last in (stored or {}).items():
        replayed |= (partitions == partition) & (offsets <= last)
    return replayed


def _drop_content(events: list[EventRecord]) -> None:
    """Remove prompt/completion attributes (contract: not stored unless opted in)."""
    for i in [i for i, e in enumerate(events) if e.attributes]:
        kept = without_content(events[i].attributes)
        if kept is not None:
            events[i] = msgspec.structs.replace(events[i], attributes=kept)
