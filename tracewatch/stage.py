"""The pure stage: decode → minutes → breakers → alert engine, for one batch at a time.

The streaming worker (``streams/ingest.py``) and ``tracewatch replay`` both drive
this one object, so the order in which the pure parts see a batch cannot drift
apart between them: the events are validated, deduplicated and folded into
minute buckets (``Pipeline``), the newly stored ones go through the breaker
board in partition order, then the minutes the watermark closed go to the alert
engine. Everything is event time, so the same messages give the same outputs
whoever reads them. The caller owns all I/O: storing events, dead letters,
minutes, publishing alerts and breaker signals, committing offsets.

State per source partition (design.md, "Scaling out"): the bucket aggregator
keeps each partition's watermark, first offsets and share of every open bucket,
and the duplicate-id window the partition of each id, so that ``revoke`` drops
exactly a partition that moved to another worker. What is not yet split by
partition is named in ``revoke``'s docstring.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tracewatch.config import WorkerSettings
from tracewatch.detectors.breakers import BreakerBoard
from tracewatch.detectors.buckets import ClosedBucket
from tracewatch.detectors.engine import AlertEngine, Transition
from tracewatch.detectors.rollout import RolloutJudge, RolloutOutput
from tracewatch.pipeline import MessageBatch, Pipeline, PipelineCounters, RawMessage, Rejected
from tracewatch.pricing import PriceTable
from tracewatch.schemas.alert import Alert
from tracewatch.schemas.breaker import BreakerSignal
from tracewatch.schemas.record import EventRecord

__all__ = ["Stage", "StageOutput"]


@dataclass
class StageOutput:
    """What one batch (or an idle partition, or the end) produced, in the order produced.

    ``events[i]`` is new (not stored before) and came from ``partitions[i]`` /
    ``offsets[i]``; events read again after a restart rebuild buckets but are not
    listed. ``transitions`` are the alert transitions the ``closed`` minutes
    caused; ``breakers`` the breaker transitions the events caused.
    """

    events: list[EventRecord] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    cost_computed: list[bool] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    closed: list[ClosedBucket] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    breakers: list[BreakerSignal] = field(default_factory=list)
    late: int = 0

    @property
    def alerts(self) -> list[Alert]:
        return [t.alert for t in self.transitions]


class Stage:
    """One source of truth for how a batch is judged; pure and single-threaded.

    ``engine`` and ``board`` are optional (a worker built without detection, tests):
    without them no transitions or signals come out. ``rollouts`` (optional too)
    judges canary variants over the same closed minutes: its ``CanaryRegression``
    alerts join ``transitions`` and its variant signals join ``breakers``.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        engine: AlertEngine | None = None,
        board: BreakerBoard | None = None,
        rollouts: RolloutJudge | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.engine = engine
        self.board = board
        self.rollouts = rollouts

    @classmethod
    def from_settings(
        cls,
        worker: WorkerSettings,
        prices: PriceTable | None = None,
        engine: AlertEngine | None = None,
        board: BreakerBoard | None = None,
        rollouts: RolloutJudge | None = None,
    ) -> Stage:
        """The stage the worker and replay both build, so they cannot drift apart."""
        return cls(Pipeline.from_settings(worker, prices), engine, board, rollouts)

    # -- the hot path --------------------------------------------------------------------

    def process(
        self,
        batch: Sequence[RawMessage] | MessageBatch,
        stored: Mapping[int, int] | None = None,
    ) -> StageOutput:
        """Judge one batch. ``stored``: per partition, the last offset already in storage
        (read again after a restart); those events rebuild buckets only."""
        result = self.pipeline.process(batch, stored)
        rows = result.to_store
        out = StageOutput(
            events=result.stored_events(),
            partitions=result.partitions[rows].tolist(),
            offsets=result.offsets[rows].tolist(),
            cost_computed=result.cost_computed[rows].tolist(),
            rejected=result.rejected,
            late=result.late,
        )
        # Events read again were judged before the restart: the board got them back
        # from storage at the warm-up (``restore_breakers``).
        out.breakers = self._judge_breakers(out.events, out.partitions)
        if self.rollouts is not None:
            self.rollouts.observe(out.events)
        self._judge_minutes(out, result.closed)
        return out

    def mark_idle(self, partition: int) -> StageOutput:
        """A source partition is at its end: it stops holding the watermark back."""
        out = StageOutput()
        self._judge_minutes(out, self.pipeline.mark_idle(partition))
        return out

    def finish(self) -> StageOutput:
        """Close and judge every open minute (the end of a replay)."""
        out = StageOutput()
        self._judge_minutes(out, self.pipeline.finish())
        if self.rollouts is not None:
            self._take_rollouts(out, self.rollouts.finish())
        return out

    def _judge_breakers(
        self, events: list[EventRecord], partitions: list[int]
    ) -> list[BreakerSignal]:
        board = self.board
        if board is None:
            return []
        signals = board.observe(events, partitions)
        signals += board.advance(board.now)
        return signals

    def _judge_minutes(self, out: StageOutput, closed: list[ClosedBucket]) -> None:
        out.closed = closed
        if closed and self.engine is not None:
            out.transitions = self.engine.observe(closed)
        if closed and self.rollouts is not None:
            until = max(bucket.start + bucket.width for bucket in closed)
            self._take_rollouts(out, self.rollouts.close(until))

    @staticmethod
    def _take_rollouts(out: StageOutput, judged: RolloutOutput) -> None:
        """Canary verdicts after the route watches' transitions and the board's signals."""
        out.transitions += judged.transitions
        out.breakers += judged.signals

    # -- source partitions ---------------------------------------------------------------

    def assign(self, partitions: Iterable[int]) -> None:
        """Partitions this stage will read: each holds the watermark back until it
        delivers or goes idle, so its backlog is not counted late."""
        for partition in partitions:
            self.pipeline.aggregator.assign_partition(partition)

    def release(self, partitions: Iterable[int]) -> None:
        """Partitions that stop holding the watermark for now (every rebalance revokes
        them; the ones assigned again hold it once more). Their state is kept."""
        for partition in partitions:
            self.pipeline.aggregator.forget_partition(partition)

    def revoke(self, partitions: Iterable[int]) -> int:
        """Drop the state of partitions that moved to another worker; the ids forgotten.

        Their new owner rebuilds it from their commit point. Dropped: their hold on
        the watermark, their share of the open minute buckets, their event ids in
        the duplicate window, and the trace breakers of the traces whose latest
        event came from them (without a signal: the new owner judges them now).
        Traces restored from storage after a restart carry no partition and stay.
        """
        gone = set(partitions)
        forgotten = self.pipeline.recent_ids.forget(gone)
        for partition in gone:
            self.pipeline.aggregator.drop_partition(partition)
        if self.board is not None:
            self.board.forget_traces(self.board.traces_of(gone))
        return forgotten

    def holdback(self) -> dict[int, int]:
        """Per partition, the first offset an open bucket still needs (commit no further)."""
        return self.pipeline.aggregator.holdback()

    # -- warm-up after a restart ---------------------------------------------------------

    def restore_closed_until(self, closed_until: float) -> None:
        """Minutes ending at or before this were closed and written by an earlier run."""
        self.pipeline.aggregator.restore_closed_until(closed_until)

    def restore_breakers(self, history: Sequence[EventRecord]) -> list[BreakerSignal]:
        """Give the board the recently stored events back; the breakers open after them."""
        if self.board is None or not history:
            return []
        self.board.observe(history)
        self.board.advance(self.board.now)
        return self.board.open_signals()

    def restore_ids(self, stored: Sequence[tuple[int, int, str, float]]) -> None:
        """Give the duplicate-id window the recently stored ``(partition, offset,
        event_id, ts)`` back (``Pipeline.restore_ids``)."""
        self.pipeline.restore_ids(stored)

    def restore_alerts(self, history: Sequence[ClosedBucket], resend_after: float) -> list[Alert]:
        """Give the engine its closed minutes back; the alerts to send again.

        Those are the transitions decided after ``resend_after`` and every alert
        still open, whenever it fired: a crash can fall between writing a minute
        and acknowledging its alert, and later minutes may have been written by a
        run that was itself killed before sending anything (seen in
        test_crash_recovery). A repeat has the same fingerprint and ``starts_at``.
        """
        if self.rollouts is not None:
            self.rollouts.restore(history)  # which variants are canaries being judged
        if self.engine is None:
            return []
        transitions = self.engine.observe(history)
        again = [t.alert for t in transitions if t.at > resend_after]
        resent = {(a.fingerprint, a.status) for a in again}
        return again + [a for a in self.engine.firing() if (a.fingerprint, a.status) not in resent]

    # -- readings ------------------------------------------------------------------------

    @property
    def counters(self) -> PipelineCounters:
        return self.pipeline.counters

    def firing(self) -> list[Alert]:
        firing = [] if self.engine is None else self.engine.firing()
        return firing + ([] if self.rollouts is None else self.rollouts.firing())

    def open_breakers(self) -> list[BreakerSignal]:
        return [] if self.board is None else self.board.open_signals()

    @property
    def traces_tracked(self) -> int:
        return 0 if self.board is None else len(self.board)

    def overflow(self) -> dict[str, int]:
        """What the state caps turned away so far, by kind (issue 16): events folded into
        an ``__other__`` bucket key (``bucket_route``, ``bucket_key``), closed traces shed
        and new traces or routes the breaker board could not track."""
        folded = self.pipeline.caps.folded
        out = {"bucket_route": folded["route"], "bucket_key": folded["key"]}
        board = self.board
        if board is not None:
            out |= {
                "breaker_trace_shed": board.traces_shed,
                "breaker_trace_refused": board.traces_refused,
                "breaker_route_shed": board.routes_shed,
                "breaker_route_refused": board.routes_refused,
            }
        return out
