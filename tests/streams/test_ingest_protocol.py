"""The ingest loop's protocol with Kafka and its sinks, driven by a scripted consumer.

No broker and no ClickHouse (``scripted_kafka.py``); the loop runs its real
writer thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from scripted_kafka import T0, FakeDeadLetters, FakeStore, Msg, ScriptedConsumer, event

from tracewatch.config import Settings, WorkerSettings
from tracewatch.streams.ingest import IngestLoop
from tracewatch.streams.retry import SinkRetry


@dataclass
class Rig:
    loop: IngestLoop
    consumer: ScriptedConsumer
    store: FakeStore
    dlq: FakeDeadLetters

    def steps(self, n: int = 1) -> None:
        for _ in range(n):
            self.loop.step()

    def drain(self) -> None:
        self.loop.drain()


def rig(store: FakeStore | None = None, **worker: Any) -> Rig:
    settings = Settings(
        worker=WorkerSettings(
            **{"allowed_lateness_s": 0.0, "poll_timeout_s": 0.01, "sink_flush_rows": 1, **worker}
        )
    )
    consumer, store, dlq = ScriptedConsumer(), store or FakeStore(), FakeDeadLetters()
    loop = IngestLoop(
        settings,
        store,
        dlq=dlq,
        consumer_factory=lambda: consumer,  # type: ignore[arg-type,return-value]
        retry=SinkRetry(first_delay_s=0.0),
    )
    loop.start()
    return Rig(loop, consumer, store, dlq)


@pytest.fixture
def closing() -> Any:
    rigs: list[Rig] = []
    yield rigs.append
    for r in rigs:
        r.store.gate.set()
        r.loop.close()


def test_commits_never_pass_the_first_offset_of_an_open_bucket(closing: Any) -> None:
    r = rig()
    closing(r)
    r.consumer.assign(0)
    r.consumer.append(0, *(event(f"a{i}", T0 + i) for i in range(5)))  # minute 0, open
    r.steps()
    r.drain()
    assert [e[0] for e in r.store.events] == [f"a{i}" for i in range(5)]
    assert r.consumer.committed == {0: 0}  # stored, but minute 0 still needs offset 0
    r.consumer.append(0, *(event(f"b{i}", T0 + 60 + i) for i in range(3)))  # closes minute 0
    r.steps()
    r.drain()
    assert [m.start for m in r.store.minutes] == [T0]
    assert r.consumer.committed == {0: 5}  # minute 1 (from offset 5) is open now


def test_a_slow_writer_pauses_consumption_and_resumes_after(closing: Any) -> None:
    r = rig()
    closing(r)
    r.consumer.assign(0)
    r.store.gate.clear()  # the writer blocks in its first insert
    early = Msg(0, 99, event("fetched-before-pause", T0 + 50))

    def while_paused() -> Msg | None:
        if r.consumer.pauses == 1 and not r.store.gate.is_set():
            r.store.gate.set()  # the sink recovers
            return early  # fetched before the pause took effect: kept for the next batch
        return None

    r.consumer.while_paused = while_paused
    for i in range(3):  # one batch written (blocked), one queued, the third must wait
        r.consumer.append(0, event(f"e{i}", T0 + i))
        r.steps()
    assert r.consumer.pauses == 1 and r.consumer.resumes == 1 and not r.consumer.paused
    assert r.loop.status()["paused"] is False
    r.steps()
    r.drain()
    assert [e[0] for e in r.store.events] == ["e0", "e1", "e2", "fetched-before-pause"]


def test_a_rebalance_writes_the_waiting_batch_before_revoking(closing: Any) -> None:
    r = rig()
    closing(r)
    r.consumer.assign(0, 1)
    r.store.gate.clear()
    revoked: list[list[tuple[str, int, int]]] = []

    def while_paused() -> None:
        if r.consumer.assigned == [0, 1]:
            r.store.gate.set()
            r.consumer.assign(1)  # partition 0 moves to another worker
            revoked.append(list(r.store.events))  # what was written when revoke returned
        return None

    r.consumer.while_paused = while_paused
    for partition, event_id, ts in [(0, "p0-a", T0 + 1), (0, "p0-b", T0 + 2), (1, "p1-a", T0 + 3)]:
        r.consumer.append(partition, event(event_id, ts))  # one batch each: the third waits
        r.steps()
    assert revoked, "the rebalance came while the hand-off waited"
    assert sorted(e[0] for e in revoked[0]) == ["p0-a", "p0-b", "p1-a"]
    assert r.consumer.committed.get(0) == 0  # partition 0's minute is still open: held back
    # partition 0's state was dropped: its event ids are new to this worker again
    assert r.loop.stage.pipeline.recent_ids.repeats(["p0-a", "p1-a"], [1, 1]) == [1]


def test_a_rebalance_that_gives_everything_back_keeps_the_state(closing: Any) -> None:
    r = rig()
    closing(r)
    r.consumer.assign(0)
    r.consumer.append(0, event("a", T0 + 1), event("b", T0 + 2))
    r.steps()
    r.drain()
    r.consumer.assign(0)  # one worker: revoked and assigned straight back, from offset 0
    r.consumer.append(0, event("c", T0 + 3))
    r.steps(2)
    r.drain()
    assert [e[0] for e in r.store.events] == ["a", "b", "c"]  # a, b read again and skipped
    status = r.loop.status()
    assert status["rejected_total"] == 0 and status["valid"] == 3
    assert r.loop.stage.pipeline.recent_ids.repeats(["a"], [0]) == [0]  # still remembered


def test_a_partition_that_moves_away_and_back_is_rebuilt_from_its_commit_point(
    closing: Any,
) -> None:
    r = rig()
    closing(r)
    r.consumer.assign(0, 1)
    r.consumer.append(0, event("a", T0 + 1), event("b", T0 + 2))
    r.consumer.append(1, event("c", T0 + 3))
    r.steps()
    r.drain()
    assert r.consumer.committed == {0: 0, 1: 0}  # minute 0 is open: held back
    r.consumer.assign(1)  # partition 0 moves to another worker: its share goes with it
    assert r.loop.stage.holdback() == {1: 0}
    r.consumer.assign(0, 1)  # and comes back: read again from offset 0
    r.consumer.append(0, event("d", T0 + 61))
    r.consumer.append(1, event("e", T0 + 62))
    r.steps(2)
    r.drain()
    (minute,) = [m for m in r.store.minutes if m.start == T0]
    assert minute.stats.count == 3  # a, b, c: once each
    assert [e[0] for e in r.store.events] == ["a", "b", "c", "d", "e"]  # nothing written twice
    assert r.loop.status()["rejected_total"] == 0  # a, b are not duplicates of themselves


def test_a_failed_write_is_retried_with_the_same_token_and_committed_once(
    closing: Any,
) -> None:
    r = rig(FakeStore(fail_writes=2))
    closing(r)
    r.consumer.assign(0)
    r.consumer.append(0, *(event(f"a{i}", T0 + i) for i in range(3)), event("b", T0 + 61))
    r.steps()
    r.drain()
    assert len(r.store.tokens) == 3 and len(set(r.store.tokens)) == 1
    assert r.store.tokens[0] == "events:tracewatch.events:0:0-3"
    assert [e[0] for e in r.store.events] == ["a0", "a1", "a2", "b"]
    assert r.consumer.commits == [{0: 3}]
    assert r.loop.sink_errors == 2 and r.loop.last_error is None
    assert r.loop.status()["stored_events"] == 4


def test_after_a_restart_stored_events_rebuild_buckets_but_are_not_written_again(
    closing: Any,
) -> None:
    store = FakeStore(stored={0: 2})  # a previous run stored offsets 0..2
    r = rig(store)
    closing(r)
    r.consumer.assign(0)
    r.consumer.append(0, *(event(f"a{i}", T0 + i) for i in range(5)), event("next", T0 + 60))
    r.steps()
    r.drain()
    assert [e[0] for e in store.events] == ["a3", "a4", "next"]
    (minute,) = store.minutes
    assert minute.start == T0 and minute.stats.count == 5  # all five, counted once
    assert r.loop.status()["valid"] == 6


def test_a_repeat_read_after_a_restart_is_a_duplicate_though_its_original_is_not_read_again(
    closing: Any,
) -> None:
    """A producer's retry committed after its original: the restarted worker reads only
    the retry, and must still know the id (it was stored by the previous run)."""
    store = FakeStore(events=[("orig", 0, 0), ("b", 0, 1)], stored={0: 1}, closed=T0 + 60)
    r = rig(store)
    closing(r)
    r.consumer.committed[0] = 2  # the previous run committed past both
    r.consumer.append(0, event("orig", T0 + 1), event("b", T0 + 2))
    r.consumer.append(0, event("orig", T0 + 1), event("c", T0 + 61))
    r.consumer.assign(0)
    r.steps()
    r.drain()
    assert [e[0] for e in store.events] == ["orig", "b", "c"]  # nothing stored twice
    assert [x.error.reason for x in r.dlq.published] == ["duplicate_event_id"]
    assert r.loop.status()["late"] == 0


def test_stored_originals_read_again_after_a_restart_are_not_their_own_duplicates(
    closing: Any,
) -> None:
    """The restored id window knows a0..a2; read again from the commit point they rebuild
    their minute (same offsets), while the retry of a0 at a later offset is a duplicate."""
    stored = [(f"a{i}", 0, i) for i in range(3)]
    store = FakeStore(events=list(stored), stored={0: 2})
    r = rig(store)
    closing(r)
    r.consumer.append(0, *(event(f"a{i}", T0 + i) for i in range(3)))
    r.consumer.append(0, event("a0", T0), event("a4", T0 + 4), event("next", T0 + 60))
    r.consumer.assign(0)
    r.steps()
    r.drain()
    assert [x.error.reason for x in r.dlq.published] == ["duplicate_event_id"]
    assert r.dlq.published[0].message.offset == 3
    assert [e[0] for e in store.events] == ["a0", "a1", "a2", "a4", "next"]
    (minute,) = store.minutes
    assert minute.start == T0 and minute.stats.count == 4


def test_minutes_closed_before_a_restart_are_not_counted_again(closing: Any) -> None:
    store = FakeStore(stored={0: 2}, closed=T0 + 60)  # minute 0 written by a previous run
    r = rig(store)
    closing(r)
    r.consumer.assign(0)
    r.consumer.append(0, *(event(f"a{i}", T0 + i) for i in range(3)), event("b", T0 + 61))
    r.consumer.append(0, event("c", T0 + 125))
    r.steps()
    r.drain()
    assert [e[0] for e in store.events] == ["b", "c"]
    assert [(m.start, m.stats.count) for m in store.minutes] == [(T0 + 60, 1)]
    assert r.loop.status()["replayed_dropped"] == 3


def test_rejects_go_to_the_dead_letters_and_count(closing: Any) -> None:
    r = rig()
    closing(r)
    r.consumer.assign(0)
    r.consumer.append(0, event("a", T0), b"not json", event("a", T0 + 1))
    r.steps()
    r.drain()
    assert [x.error.reason for x in r.dlq.published] == ["not_json", "duplicate_event_id"]
    status = r.loop.status()
    assert status["received"] == 3 == status["valid"] + status["rejected_total"]
