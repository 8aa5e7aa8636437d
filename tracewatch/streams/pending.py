"""What the ingest thread has processed but not yet written and committed.

One ``PendingBatch`` is built while the previous one is written; its offset
ranges make the insert token, so a retried write is deduplicated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tracewatch.detectors.buckets import ClosedBucket
from tracewatch.schemas.alert import Alert
from tracewatch.schemas.breaker import BreakerSignal
from tracewatch.schemas.record import EventRecord
from tracewatch.stage import StageOutput

__all__ = ["PendingBatch"]


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

    def add(self, out: StageOutput) -> None:
        """Keep what the stage produced until it is written (rejects go to the DLQ at once)."""
        if out.events or out.closed or out.transitions or out.breakers:
            self.start_clock()
        self.events.extend(out.events)
        self.partitions.extend(out.partitions)
        self.offsets.extend(out.offsets)
        self.cost_computed.extend(out.cost_computed)
        self.breakers.extend(out.breakers)
        self.closed.extend(out.closed)
        self.alerts.extend(out.alerts)

    def token(self, topic: str) -> str:
        """Same offsets in, same token out: a retried insert is deduplicated."""
        ranges = ",".join(
            f"{p}:{self.first_offset[p]}-{self.last_offset[p]}" for p in sorted(self.last_offset)
        )
        return f"events:{topic}:{ranges}"

    @property
    def empty(self) -> bool:
        return not self.last_offset and not self.closed and not self.alerts and not self.breakers
