"""Bounded memory of recently seen event ids, one window per source partition.

The contract says a repeated ``event_id`` is a duplicate and counts once. A
monitor cannot remember every id forever, so this keeps, per source partition,
the most recent ``capacity`` ids (insertion order, oldest forgotten first) and
none older than ``window_s`` of that partition's event time: duplicates sent
within that window are caught, memory stays bounded.

Per partition because events are keyed by ``trace_id``: a producer's retry of
an event goes to the same partition as the original, so a repeat is always
looked for where it can be. That keeps one busy partition from pushing another
partition's ids out, and lets a worker that loses a partition in a rebalance
forget exactly that partition's ids at once (``forget``): its new owner reads
them again from the commit point.

The time bound is in event time (the events' ``ts``), so the worker and
``tracewatch replay`` agree; with ids kept in arrival order, an id that arrived
out of order may stay a little longer than ``window_s``, never more than the
count bound allows. ``bench/memory.py`` measures the memory per id.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Collection, Sequence

__all__ = ["RecentIds"]


class _Window:
    """One partition's ids, oldest first, with the event time each arrived at."""

    __slots__ = ("ids", "newest")

    def __init__(self) -> None:
        self.ids: OrderedDict[str, float] = OrderedDict()
        self.newest = -math.inf


class RecentIds:
    """Per-partition FIFO-bounded sets; ``seen(x)`` answers and remembers in one call."""

    def __init__(self, capacity: int = 1_000_000, window_s: float = math.inf) -> None:
        """``capacity``: ids kept per partition (0 = none); ``window_s``: seconds of the
        partition's event time an id is kept."""
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        if not window_s > 0:
            raise ValueError("window_s must be > 0")
        self.capacity = capacity
        self.window_s = window_s
        self._windows: dict[int, _Window] = {}

    def seen(self, event_id: str, source: int = 0, ts: float = -math.inf) -> bool:
        """True if ``event_id`` was seen within the window; remembers it otherwise."""
        return bool(self.repeats([event_id], [source], [ts]))

    def repeats(
        self,
        event_ids: list[str],
        sources: Sequence[int] | None = None,
        ts: Sequence[float] | None = None,
    ) -> list[int]:
        """Indexes of the ids seen before (in their partition's window or earlier in this
        batch); the others are remembered, each in partition ``sources[i]`` (0 when not
        given) at event time ``ts[i]``. ``seen`` over a batch, without a call per id."""
        out: list[int] = []
        if not event_ids:
            return out
        parts = [0] * len(event_ids) if sources is None else sources
        times = [-math.inf] * len(event_ids) if ts is None else ts
        capacity, windows = self.capacity, self._windows
        touched: set[int] = set()
        for i, (event_id, source, t) in enumerate(zip(event_ids, parts, times, strict=True)):
            window = windows.get(source)
            if window is None:
                window = windows[source] = _Window()
            if event_id in window.ids:
                out.append(i)
            elif capacity:
                window.ids[event_id] = t
                if t > window.newest:
                    window.newest = t
                touched.add(source)
        for source in touched:
            self._trim(windows[source])
        return out

    def _trim(self, window: _Window) -> None:
        ids = window.ids
        while len(ids) > self.capacity:
            ids.popitem(last=False)
        horizon = window.newest - self.window_s
        while ids and next(iter(ids.values())) < horizon:
            ids.popitem(last=False)

    def forget(self, sources: Collection[int]) -> int:
        """Forget the ids that came from ``sources`` (partitions gone in a rebalance);
        returns how many."""
        forgotten = 0
        for source in sources:
            window = self._windows.pop(source, None)
            if window is not None:
                forgotten += len(window.ids)
        return forgotten

    def __len__(self) -> int:
        return sum(len(w.ids) for w in self._windows.values())
