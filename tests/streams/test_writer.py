"""The writer runs its sinks in order, retries the whole list, and only then releases commits."""

from __future__ import annotations

import pytest

from tracewatch.errors import SinkError
from tracewatch.streams.pending import PendingBatch
from tracewatch.streams.retry import SinkRetry
from tracewatch.streams.writer import BatchWriter


class Step:
    """A sink that records its calls and fails as told."""

    def __init__(self, name: str, calls: list[str], fail: int = 0, error: type = SinkError):
        self.name, self.calls, self.fail, self.error = name, calls, fail, error

    def flush(self, batch: PendingBatch) -> None:
        self.calls.append(self.name)
        if self.fail:
            self.fail -= 1
            raise self.error(f"{self.name} refused")


def batch(commit_to: dict[int, int]) -> PendingBatch:
    p = PendingBatch()
    p.note_batch([0], [1])
    p.commit_to = commit_to
    return p


def test_sinks_run_in_order_and_a_failure_retries_the_whole_list() -> None:
    calls: list[str] = []
    sleeps: list[float] = []
    sinks = [Step("events", calls), Step("dlq", calls), Step("minutes", calls, fail=2)]
    writer = BatchWriter(sinks, SinkRetry(sleep=sleeps.append))
    writer.start()
    try:
        writer.put(batch({0: 5}), timeout=1)
        writer.join()
    finally:
        writer.close()
    assert calls == ["events", "dlq", "minutes"] * 3
    assert sleeps == [0.5, 1.0]
    assert writer.take_commits() == {0: 5} and writer.take_commits() == {}
    assert writer.flushes == 1 and writer.retry.errors == 2 and writer.retry.last_error is None


def test_nothing_commits_while_a_sink_fails() -> None:
    calls: list[str] = []
    writer = BatchWriter([Step("events", calls, fail=1)], SinkRetry(sleep=lambda _: None))
    with pytest.raises(SinkError):
        writer.write(batch({0: 9}))
    assert writer.take_commits() == {} and writer.flushes == 0


def test_a_bug_in_a_sink_stops_the_writer_and_surfaces_on_the_ingest_side() -> None:
    calls: list[str] = []
    later = Step("alerts", calls)
    writer = BatchWriter([Step("events", calls, fail=1, error=KeyError), later], SinkRetry())
    writer.start()
    try:
        writer.put(batch({0: 3}), timeout=1)
        with pytest.raises(RuntimeError, match="writer thread failed"):
            writer.join()
    finally:
        writer.close()
    assert calls == ["events"] and isinstance(writer.failed, KeyError)
    assert writer.take_commits() == {}


def test_commit_targets_only_move_forward() -> None:
    writer = BatchWriter([], SinkRetry())
    writer.write(batch({0: 7, 1: 2}))
    writer.write(batch({0: 5}))  # held back further by an open bucket: never backwards
    assert writer.take_commits() == {0: 7, 1: 2}
