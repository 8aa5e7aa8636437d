"""Event-time buckets per key, closed by a watermark.

The watermark is the largest event time seen minus the allowed lateness, taken
per source partition and then the minimum over the assigned partitions that
are not idle (as Flink does): a consumer reading a backlog gets partitions at uneven
speeds, and one fast partition must not make the others' events late. A
partition at its end is idle and holds nothing back. A
bucket ``[start, start + width)`` closes once the watermark reaches its end;
its statistics are final from then on. An event whose bucket has already
closed is *late*: it is kept (in a late partial for the same key and bucket,
emitted with ``late=True`` at the next ``close_ready``) and counted, never lost.

An open bucket keeps one partial per source partition, merged when it closes:
a partition that moves to another worker takes its share of the open buckets
with it (``drop_partition``), and its new owner rebuilds that share from the
partition's commit point (design.md, "Scaling out").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tracewatch.detectors.columns import EventColumns, KeyTuple
from tracewatch.detectors.stats import BucketStats

__all__ = ["BucketAggregator", "ClosedBucket", "RowSources"]


@dataclass(frozen=True)
class RowSources:
    """Where each row of a batch came from.

    ``replayed[i]`` marks a row read again after a restart (its event was stored
    before): it may rebuild a bucket that was still open, but a bucket already
    closed has counted it, so there it is dropped rather than counted late.
    """

    partitions: np.ndarray
    offsets: np.ndarray
    replayed: np.ndarray

    @classmethod
    def single(cls, n: int) -> RowSources:
        """One source, nothing replayed (replay files, tests)."""
        return cls(np.zeros(n, np.int64), np.arange(n, dtype=np.int64), np.zeros(n, bool))

    def __len__(self) -> int:
        return int(self.partitions.shape[0])


@dataclass(frozen=True)
class ClosedBucket:
    """A finished bucket, ready for the statistics table and the detectors."""

    key: KeyTuple
    start: float
    width: float
    late: bool
    stats: BucketStats

    @property
    def route(self) -> str:
        return self.key[0]


class BucketAggregator:
    """Per-key event-time buckets with a watermark; pure, no I/O."""

    def __init__(self, width_s: float = 60.0, allowed_lateness_s: float = 120.0) -> None:
        if width_s <= 0:
            raise ValueError("width_s must be positive")
        if allowed_lateness_s < 0:
            raise ValueError("allowed_lateness_s must be >= 0")
        self.width_s = width_s
        self.allowed_lateness_s = allowed_lateness_s
        self.max_event_ts = -math.inf
        self.late_events = 0
        self.replayed_dropped = 0
        self.closed_until = -math.inf  # every bucket that ends at or before this is closed
        self._partition_max: dict[int, float] = {}
        self._idle: set[int] = set()
        # per open bucket, one partial per source partition (merged when it closes)
        self._open: dict[tuple[KeyTuple, float], dict[int, BucketStats]] = {}
        self._late: dict[tuple[KeyTuple, float], BucketStats] = {}
        # per open bucket, the smallest source offset per partition that fed it
        self._first_offsets: dict[tuple[KeyTuple, float], dict[int, int]] = {}

    @property
    def watermark(self) -> float:
        active = [ts for p, ts in self._partition_max.items() if p not in self._idle]
        newest = min(active) if active else self.max_event_ts
        return newest - self.allowed_lateness_s

    def mark_idle(self, partition: int) -> None:
        """The source partition has nothing more for now; it stops holding the watermark."""
        self._idle.add(partition)

    def assign_partition(self, partition: int) -> None:
        """A source partition this aggregator will read: it holds the watermark back
        until it delivers events or goes idle, so its backlog is not counted late."""
        self._partition_max.setdefault(partition, -math.inf)

    def forget_partition(self, partition: int) -> None:
        """The partition stops holding the watermark (revoked in a rebalance; its share
        of the open buckets stays until ``drop_partition``)."""
        self._partition_max.pop(partition, None)
        self._idle.discard(partition)

    def drop_partition(self, partition: int) -> None:
        """The partition moved to another worker: its share of the open buckets goes too."""
        self.forget_partition(partition)
        for slot in list(self._open):
            partials = self._open[slot]
            partials.pop(partition, None)
            first = self._first_offsets[slot]
            first.pop(partition, None)
            if not partials:
                del self._open[slot], self._first_offsets[slot]

    @property
    def open_buckets(self) -> int:
        return len(self._open)

    def add(
        self, keys: Sequence[KeyTuple], cols: EventColumns, sources: RowSources | None = None
    ) -> int:
        """Fold a batch in; ``keys[i]`` is the key of row ``i``. Returns the late count.

        The watermark moves after the batch is folded in, so events of one batch
        are never late relative to each other.
        """
        src = RowSources.single(len(cols)) if sources is None else sources
        if len(keys) != len(cols) or len(src) != len(cols):
            raise ValueError("one key and one source per row are needed")
        if not len(cols):
            return 0
        late = 0
        for slot, rows in self._groups(keys, cols.ts):
            if slot[1] + self.width_s <= self.closed_until:
                fresh = rows[~src.replayed[rows]]
                self.replayed_dropped += len(rows) - len(fresh)
                if len(fresh):
                    self._late.setdefault(slot, BucketStats()).add(cols.take(fresh))
                    late += len(fresh)
            else:
                self._add_open(slot, cols, rows, src)
        self.late_events += late
        self.max_event_ts = max(self.max_event_ts, float(cols.ts.max()))
        self._advance_partitions(cols.ts, src.partitions)
        return late

    def _groups(
        self, keys: Sequence[KeyTuple], ts: np.ndarray
    ) -> list[tuple[tuple[KeyTuple, float], npt.NDArray[np.intp]]]:
        """The rows of each (key, bucket start), in order of first appearance.

        One sort over a combined integer code instead of a Python step per row.
        """
        key_ids, key_index = _index_keys(keys)
        starts, start_ids = np.unique(np.floor(ts / self.width_s), return_inverse=True)
        code = key_ids * len(starts) + start_ids.reshape(-1)
        order = np.argsort(code, kind="stable")
        bounds = np.flatnonzero(np.diff(code[order])) + 1
        groups = np.split(order, bounds)
        groups.sort(key=lambda rows: int(rows[0]))
        out = []
        for rows in groups:
            first = int(rows[0])
            key = key_index[int(key_ids[first])]
            out.append(((key, float(starts[start_ids[first]]) * self.width_s), rows))
        return out

    def holdback(self) -> dict[int, int]:
        """Per partition, the first offset still needed by an open bucket.

        Committing a partition's offset no further than this means a restarted
        worker reads those events again and rebuilds the open buckets exactly.
        """
        first: dict[int, int] = {}
        for offsets in self._first_offsets.values():
            for part, off in offsets.items():
                first[part] = min(off, first.get(part, off))
        return first

    def restore_closed_until(self, closed_until: float) -> None:
        """After a restart: buckets ending at or before this were closed and written."""
        self.closed_until = max(self.closed_until, closed_until)

    def _add_open(
        self,
        slot: tuple[KeyTuple, float],
        cols: EventColumns,
        rows: npt.NDArray[np.intp],
        src: RowSources,
    ) -> None:
        """Fold ``rows`` into the slot's partial of each partition they came from, and note
        the smallest offset per partition that fed the slot (``holdback``)."""
        partials = self._open.setdefault(slot, {})
        first = self._first_offsets.setdefault(slot, {})
        parts, offs = src.partitions[rows], src.offsets[rows]
        if (parts == parts[0]).all():  # the common case: one partition
            split = [(int(parts[0]), rows, offs)]
        else:
            split = [(p, rows[parts == p], offs[parts == p]) for p in np.unique(parts).tolist()]
        for part, sel, off in split:
            stats = partials.get(part)
            if stats is None:
                stats = partials[part] = BucketStats()
            stats.add(cols.take(sel))
            low = int(off.min())
            first[part] = min(low, first.get(part, low))

    def _advance_partitions(self, ts: np.ndarray, parts: np.ndarray) -> None:
        for part in np.unique(parts).tolist():
            newest = float(ts[parts == part].max())
            self._partition_max[part] = max(self._partition_max.get(part, -math.inf), newest)
            self._idle.discard(part)

    def close_ready(self) -> list[ClosedBucket]:
        """Buckets the watermark has passed, then any late partials, oldest first."""
        return self._close(lambda end: end <= self.watermark, self.watermark)

    def close_all(self) -> list[ClosedBucket]:
        """Everything still open (shutdown, end of a replay)."""
        return self._close(lambda end: True, math.inf)

    def _close(self, ready: Callable[[float], bool], horizon: float) -> list[ClosedBucket]:
        done = [slot for slot in self._open if ready(slot[1] + self.width_s)]
        closed = [
            ClosedBucket(slot[0], slot[1], self.width_s, False, _merged(self._open.pop(slot)))
            for slot in done
        ]
        for slot in done:
            self._first_offsets.pop(slot, None)
        closed += [
            ClosedBucket(slot[0], slot[1], self.width_s, True, stats)
            for slot, stats in self._late.items()
        ]
        self._late.clear()
        self.closed_until = max(self.closed_until, horizon)
        closed.sort(key=lambda b: (b.start, b.late, b.key))
        return closed


def _merged(partials: dict[int, BucketStats]) -> BucketStats:
    """One bucket's partials, in partition order (one partition: itself, unchanged)."""
    if len(partials) == 1:
        return next(iter(partials.values()))
    total = BucketStats()
    for part in sorted(partials):
        total.merge(partials[part])
    return total


def _index_keys(keys: Sequence[KeyTuple]) -> tuple[np.ndarray, list[KeyTuple]]:
    index: dict[KeyTuple, int] = {}
    ids = np.fromiter((index.setdefault(k, len(index)) for k in keys), np.int64, len(keys))
    return ids, list(index)
