"""A scripted Kafka consumer and fake sinks, for tests of the ingest loop's protocol.

``ScriptedConsumer`` delivers the messages a test gives it, records pauses, resumes
and commits, and calls the loop's assign and revoke callbacks when the script
says so; ``FakeStore`` keeps what was written and can fail or block on demand.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from confluent_kafka import TopicPartition

from tracewatch.detectors.buckets import ClosedBucket
from tracewatch.errors import SinkError
from tracewatch.pipeline import Rejected
from tracewatch.schemas.breaker import BreakerSignal
from tracewatch.schemas.record import EventRecord

T0 = 1_795_341_600.0  # a minute boundary


@dataclass
class Msg:
    """The parts of a confluent ``Message`` the loop reads."""

    _partition: int
    _offset: int
    _value: bytes
    _key: bytes | None = None

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self) -> None:
        return None


def event(event_id: str, ts: float, trace: str = "t", **more: Any) -> bytes:
    body = {"event_id": event_id, "trace_id": trace, "ts": ts, "kind": "llm", "route": "r"}
    return json.dumps({**body, **more}).encode()


class ScriptedConsumer:
    """Hands out the log of each assigned partition from its position, as Kafka would."""

    def __init__(self) -> None:
        self.log: dict[int, list[bytes]] = {}
        self.position_of: dict[int, int] = {}
        self.committed: dict[int, int] = {}
        self.commits: list[dict[int, int]] = []
        self.assigned: list[int] = []
        self.paused: set[int] = set()
        self.pauses = self.resumes = 0
        self.on_assign: Callable[..., None] | None = None
        self.on_revoke: Callable[..., None] | None = None
        #: called at each poll while paused (the test moves the script on from there)
        self.while_paused: Callable[[], Msg | None] = lambda: None

    # the script
    def append(self, partition: int, *values: bytes) -> None:
        self.log.setdefault(partition, []).extend(values)

    def assign(self, *partitions: int) -> None:
        """A rebalance that gives this consumer ``partitions``, read from the commit point."""
        if self.assigned:
            self.revoke()
        self.assigned = list(partitions)
        self.paused = set()  # a new assignment starts unpaused
        for p in partitions:
            self.position_of[p] = self.committed.get(p, 0)
        assert self.on_assign is not None
        self.on_assign(self, [TopicPartition("tracewatch.events", p) for p in partitions])

    def revoke(self) -> None:
        assert self.on_revoke is not None
        self.on_revoke(self, [TopicPartition("tracewatch.events", p) for p in self.assigned])
        self.assigned = []

    # the confluent Consumer surface the loop uses
    def subscribe(self, topics: list[str], on_assign: Any, on_revoke: Any) -> None:
        self.on_assign, self.on_revoke = on_assign, on_revoke

    def poll(self, timeout: float) -> Msg | None:
        if self.paused:
            return self.while_paused()
        got = self.consume(1, timeout)
        return got[0] if got else None

    def consume(self, n: int, timeout: float) -> list[Msg]:
        out: list[Msg] = []
        for p in self.assigned:
            if p in self.paused:
                continue
            values = self.log.get(p, [])
            while len(out) < n and self.position_of[p] < len(values):
                offset = self.position_of[p]
                out.append(Msg(p, offset, values[offset]))
                self.position_of[p] = offset + 1
        return out

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.pauses += 1
        self.paused |= {tp.partition for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.resumes += 1
        self.paused -= {tp.partition for tp in partitions}

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("tracewatch.events", p) for p in self.assigned]

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        done = {tp.partition: tp.offset for tp in offsets}
        self.commits.append(done)
        self.committed.update(done)

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.position_of[tp.partition])
                for tp in partitions]  # fmt: skip

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool) -> tuple[int, int]:
        return 0, len(self.log.get(tp.partition, []))

    def close(self) -> None:
        """Nothing to release."""


@dataclass
class FakeStore:
    """ClickHouse as the loop sees it: writes kept in order, restart reads scripted."""

    events: list[tuple[str, int, int]] = field(default_factory=list)  # event_id, part, off
    tokens: list[str] = field(default_factory=list)
    minutes: list[ClosedBucket] = field(default_factory=list)
    fail_writes: int = 0
    gate: threading.Event = field(default_factory=threading.Event)
    stored: dict[int, int] = field(default_factory=dict)
    closed: float = float("-inf")

    def __post_init__(self) -> None:
        self.gate.set()

    def write_event_table(self, table: pa.Table, token: str) -> None:
        self.gate.wait(10)
        self.tokens.append(token)
        if self.fail_writes:
            self.fail_writes -= 1
            raise SinkError("ClickHouse refused the insert")
        rows = table.select(["event_id", "kafka_partition", "kafka_offset"]).to_pylist()
        self.events += [(r["event_id"], r["kafka_partition"], r["kafka_offset"]) for r in rows]

    def write_stats(self, buckets: Sequence[ClosedBucket], token: str | None = None) -> None:
        self.minutes += buckets

    def stored_offsets(self, topic: str) -> dict[int, int]:
        """What a previous run stored (``stored``), then what was written here."""
        out = dict(self.stored)
        for _, part, off in self.events:
            out[part] = max(off, out.get(part, off))
        return out

    def closed_until(self) -> float:
        return self.closed

    def recent_buckets(self, since: float) -> list[ClosedBucket]:
        return []

    def recent_events(self, topic: str, lookback_s: float) -> list[EventRecord]:
        return []

    def recent_event_ids(
        self, topic: str, lookback_s: float, per_partition: int
    ) -> list[tuple[int, int, str, float]]:
        """The ids written here (no event time kept: 0.0), newest ``per_partition``."""
        out: list[tuple[int, int, str, float]] = []
        for part in sorted({p for _, p, _ in self.events}):
            rows = sorted((off, eid) for eid, p, off in self.events if p == part)
            out += [(part, off, eid, 0.0) for off, eid in rows[-per_partition:]]
        return out


class FakeDeadLetters:
    def __init__(self) -> None:
        self.published: list[Rejected] = []

    def publish(self, rejected: Sequence[Rejected]) -> None:
        self.published += rejected

    def flush(self, timeout: float = 30.0) -> None:
        """Acknowledged at once."""


class FakeBreakers:
    def __init__(self) -> None:
        self.published: list[BreakerSignal] = []

    def publish(self, signals: Sequence[BreakerSignal]) -> None:
        self.published += signals

    def flush(self, timeout: float = 30.0) -> None:
        """Acknowledged at once."""
