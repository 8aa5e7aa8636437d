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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tracewatch.detectors.columns import EventColumns, KeyTuple
from tracewatch.detectors.stats import BucketStats

__all__ = ["BucketAggregator", "ClosedBucket"]


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
        self.closed_until = -math.inf  # every bucket that ends at or before this is closed
        self._partition_max: dict[int, float] = {}
        self._idle: set[int] = set()
        self._open: dict[tuple[KeyTuple, float], BucketStats] = {}
        self._late: dict[tuple[KeyTuple, float], BucketStats] = {}

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
        """The partition moved to another worker (rebalance)."""
        self._partition_max.pop(partition, None)
        self._idle.discard(partition)

    @property
    def open_buckets(self) -> int:
        return len(self._open)

    def add(
        self, keys: Sequence[KeyTuple], cols: EventColumns, partitions: Sequence[int] | None = None
    ) -> int:
        """Fold a batch in; ``keys[i]`` is the key of row ``i``, ``partitions[i]`` its source.

        Returns the late count. The watermark moves after the batch is folded in,
        so events of one batch are never late relative to each other.
        """
        if len(keys) != len(cols) or (partitions is not None and len(partitions) != len(cols)):
            raise ValueError("one key (and one partition, if given) per row is needed")
        if not len(cols):
            return 0
        starts = np.floor(cols.ts / self.width_s) * self.width_s
        key_ids, key_index = _index_keys(keys)
        groups: dict[tuple[int, float], list[int]] = {}
        for row, (kid, start) in enumerate(zip(key_ids.tolist(), starts.tolist(), strict=True)):
            groups.setdefault((kid, start), []).append(row)
        late = 0
        for (kid, start), rows in groups.items():
            slot = (key_index[kid], start)
            if start + self.width_s <= self.closed_until:
                target = self._late.setdefault(slot, BucketStats())
                late += len(rows)
            else:
                target = self._open.setdefault(slot, BucketStats())
            target.add(cols.take(np.asarray(rows, dtype=np.intp)))
        self.late_events += late
        self.max_event_ts = max(self.max_event_ts, float(cols.ts.max()))
        self._advance_partitions(cols.ts, partitions)
        return late

    def _advance_partitions(self, ts: np.ndarray, partitions: Sequence[int] | None) -> None:
        parts = np.zeros(len(ts), np.int64) if partitions is None else np.asarray(partitions)
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
            ClosedBucket(slot[0], slot[1], self.width_s, False, self._open.pop(slot))
            for slot in done
        ]
        closed += [
            ClosedBucket(slot[0], slot[1], self.width_s, True, stats)
            for slot, stats in self._late.items()
        ]
        self._late.clear()
        self.closed_until = max(self.closed_until, horizon)
        closed.sort(key=lambda b: (b.start, b.late, b.key))
        return closed


def _index_keys(keys: Sequence[KeyTuple]) -> tuple[np.ndarray, list[KeyTuple]]:
    index: dict[KeyTuple, int] = {}
    ids = np.fromiter((index.setdefault(k, len(index)) for k in keys), np.int64, len(keys))
    return ids, list(index)
