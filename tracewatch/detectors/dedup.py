"""Bounded memory of recently seen event ids.

The contract says a repeated ``event_id`` is a duplicate and counts once. A
monitor cannot remember every id forever, so this keeps the most recent
``capacity`` ids (insertion order, oldest forgotten first): duplicates sent
within that window are caught, memory stays bounded.

Each id remembers the source partition it came from, so that a worker that
loses a partition in a rebalance forgets exactly that partition's ids
(``forget``): its new owner reads them again from the commit point.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Sequence

__all__ = ["RecentIds"]


class RecentIds:
    """A FIFO-bounded set; ``seen(x)`` answers and remembers in one call."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        # dict keeps insertion order and is the cheapest bounded set in CPython.
        self._ids: OrderedDict[str, int] = OrderedDict()  # id → source partition

    def seen(self, event_id: str, source: int = 0) -> bool:
        """True if ``event_id`` was seen within the window; remembers it otherwise."""
        if event_id in self._ids:
            return True
        if self.capacity:
            self._ids[event_id] = source
            if len(self._ids) > self.capacity:
                self._ids.popitem(last=False)
        return False

    def repeats(self, event_ids: list[str], sources: Sequence[int] | None = None) -> list[int]:
        """Indexes of the ids seen before (in the window or earlier in this batch); the
        others are remembered, with ``sources[i]`` (partition 0 when not given). ``seen``
        over a batch, without a call per id."""
        ids, capacity = self._ids, self.capacity
        out = []
        parts = [0] * len(event_ids) if sources is None else sources
        for i, (event_id, source) in enumerate(zip(event_ids, parts, strict=True)):
            if event_id in ids:
                out.append(i)
            elif capacity:
                ids[event_id] = source
        while len(ids) > capacity:
            ids.popitem(last=False)
        return out

    def forget(self, sources: Collection[int]) -> int:
        """Forget the ids that came from ``sources`` (partitions gone in a rebalance);
        returns how many. One pass over the window: a rebalance, not the hot path."""
        if not sources:
            return 0
        gone = [event_id for event_id, source in self._ids.items() if source in sources]
        for event_id in gone:
            del self._ids[event_id]
        return len(gone)

    def __len__(self) -> int:
        return len(self._ids)
