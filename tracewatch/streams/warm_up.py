"""What a worker learns from ClickHouse at a partition assignment (after a restart).

Every assignment: which offsets are already stored (read again, they are not
inserted again) and where the newest written minute ends (events of minutes
already written are not counted again). Once per process, at the first
assignment: the duplicate-id window gets the ids of the newest stored events back
(a producer's retry read after the restart is still a duplicate), the detectors
the last ``WARM_UP_MINUTES`` of closed minutes back (``stats_1m.state``), and the
breaker board the newest
``BREAKER_WARM_UP_S`` of stored events; the transitions of the newest two of
those minutes, every alert still open and every breaker still open are sent
again, since a crash between writing and acknowledging must not lose them (a
repeat has the same fingerprint and ``starts_at``; the breakers topic is
compacted).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tracewatch.detectors.buckets import ClosedBucket
from tracewatch.schemas.alert import Alert
from tracewatch.schemas.breaker import BreakerSignal
from tracewatch.schemas.record import EventRecord
from tracewatch.stage import Stage
from tracewatch.streams.retry import SinkRetry

__all__ = [
    "BREAKER_WARM_UP_S",
    "RESEND_AFTER_RESTART_S",
    "WARM_UP_MINUTES",
    "Restored",
    "StoredState",
    "WarmUp",
]

log = logging.getLogger("tracewatch.ingest")

#: minutes of history the detectors get back after a restart (baseline 60 + window 5 + slack)
WARM_UP_MINUTES = 70
#: event time of stored events the breaker board reads back after a restart (a trace
#: idle longer than its ttl, 10 minutes by default, has expired anyway)
BREAKER_WARM_UP_S = 900.0
#: transitions decided this close to the restart point are sent again
RESEND_AFTER_RESTART_S = 120.0


class StoredState(Protocol):
    """The ClickHouse reads a restart needs (``ClickHouseSink``, or a fake in tests)."""

    def stored_offsets(self, topic: str) -> dict[int, int]: ...
    def closed_until(self) -> float: ...
    def recent_buckets(self, since: float) -> list[ClosedBucket]: ...
    def recent_events(self, topic: str, lookback_s: float) -> list[EventRecord]: ...
    def recent_event_ids(
        self, topic: str, lookback_s: float, per_partition: int
    ) -> list[tuple[int, int, str, float]]: ...


@dataclass
class Restored:
    """What the first assignment sends again: alerts and breaker signals, and the open alerts."""

    alerts: list[Alert] = field(default_factory=list)
    breakers: list[BreakerSignal] = field(default_factory=list)
    firing: list[Alert] = field(default_factory=list)


class WarmUp:
    """Reads through ``retry`` (a restart waits for ClickHouse rather than forgetting)."""

    def __init__(
        self, store: StoredState, topic: str, retry: SinkRetry, allowed_lateness_s: float
    ) -> None:
        self.store = store
        self.topic = topic
        self.retry = retry
        self.allowed_lateness_s = allowed_lateness_s
        self.done = False

    def stored_offsets(self) -> dict[int, int]:
        """Per partition, the last offset already in ClickHouse."""
        return self.retry(lambda: self.store.stored_offsets(self.topic))

    def closed_until(self) -> float:
        """End of the newest on-time minute written (``-inf``: none yet)."""
        return self.retry(self.store.closed_until)

    def restore(self, stage: Stage, closed_until: float) -> Restored | None:
        """Give the stage its history back, once per process; None after the first call."""
        if self.done:
            return None
        self.done = True
        self._ids(stage)
        restored = Restored(breakers=self._breakers(stage))
        if stage.engine is None or closed_until == float("-inf"):
            return restored  # no minute was ever closed: the detectors have nothing to remember
        since = closed_until - 60.0 * WARM_UP_MINUTES
        history: Sequence[ClosedBucket] = self.retry(lambda: self.store.recent_buckets(since))
        restored.alerts = stage.restore_alerts(history, closed_until - RESEND_AFTER_RESTART_S)
        restored.firing = stage.firing()
        log.info(
            "detectors warmed up on %d minutes; %d alerts open, %d sent again",
            len(history),
            len(restored.firing),
            len(restored.alerts),
        )
        return restored

    def _ids(self, stage: Stage) -> None:
        """The duplicate-id window as it was: the ids of the newest stored events, as many
        and as far back as the window keeps."""
        window = stage.pipeline.recent_ids
        if not window.capacity:
            return
        lookback = window.window_s + self.allowed_lateness_s
        ids = self.retry(lambda: self.store.recent_event_ids(self.topic, lookback, window.capacity))
        stage.restore_ids(ids)
        log.info("duplicate-id window warmed up on %d stored ids", len(ids))

    def _breakers(self, stage: Stage) -> list[BreakerSignal]:
        """Every event the board judged before the restart is in ClickHouse (events are
        stored before their offsets commit), so the board sees each once: these from
        storage, the rest from Kafka."""
        if stage.board is None:
            return []
        lookback = BREAKER_WARM_UP_S + self.allowed_lateness_s
        history = self.retry(lambda: self.store.recent_events(self.topic, lookback))
        if not history:
            return []
        still_open = stage.restore_breakers(history)
        log.info(
            "breakers warmed up on %d events; %d traces tracked, %d breakers open",
            len(history),
            stage.traces_tracked,
            len(still_open),
        )
        return still_open
