"""Bounded memory of recently seen event ids.

The contract says a repeated ``event_id`` is a duplicate and counts once. A
monitor cannot remember every id forever, so this keeps the most recent
``capacity`` ids (insertion order, oldest forgotten first): duplicates sent
within that window are caught, memory stays bounded.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["RecentIds"]


class RecentIds:
    """A FIFO-bounded set; ``seen(x)`` answers and remembers in one call."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        # dict keeps insertion order and is the cheapest bounded set in CPython.
        self._ids: OrderedDict[str, None] = OrderedDict()

    def seen(self, event_id: str) -> bool:
        """True if ``event_id`` was seen within the window; remembers it otherwise."""
        if event_id in self._ids:
            return True
        if self.capacity:
            self._ids[event_id] = None
            if len(self._ids) > self.capacity:
                self._ids.popitem(last=False)
        return False

    def repeats(self, event_ids: list[str]) -> list[int]:
        """Indexes of the ids seen before (in the window or earlier in this batch); the
        others are remembered. ``seen`` over a batch, without a call per id."""
        ids, capacity = self._ids, self.capacity
        out = []
        for i, event_id in enumerate(event_ids):
            if event_id in ids:
                out.append(i)
            elif capacity:
                ids[event_id] = None
        while len(ids) > capacity:
            ids.popitem(last=False)
        return out

    def __len__(self) -> int:
        return len(self._ids)
