"""The delivery tracker behind every Kafka publisher: acks counted, failures never lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import pytest
from confluent_kafka import KafkaError

from tracewatch.config import KafkaSettings
from tracewatch.errors import InvalidEvent, SinkError
from tracewatch.pipeline import RawMessage, Rejected
from tracewatch.schemas.alert import Alert
from tracewatch.sinks.delivery import DeliveryTracker
from tracewatch.sinks.kafka import DeadLetterPublisher
from tracewatch.sinks.kafka_alerts import AlertPublisher

TIMED_OUT = KafkaError(KafkaError._MSG_TIMED_OUT)


class Publisher(Protocol):
    @property
    def published(self) -> int: ...

    def flush(self, timeout: float = ...) -> None: ...


def test_counts_acknowledged_and_passes_when_all_were() -> None:
    tracker = DeliveryTracker()
    for _ in range(3):
        tracker(None, None)
    tracker.check(0, 30.0, "alert publish")
    assert tracker.acknowledged == 3


def test_failure_raises_naming_what_and_the_first_error() -> None:
    tracker = DeliveryTracker()
    tracker(None, None)
    tracker(TIMED_OUT, None)
    tracker(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
    with pytest.raises(
        SinkError, match=r"^alert publish failed for 2 message\(s\): .*_MSG_TIMED_OUT"
    ):
        tracker.check(0, 30.0, "alert publish")
    assert tracker.acknowledged == 1


def test_unacknowledged_remainder_raises_even_without_errors() -> None:
    tracker = DeliveryTracker()
    with pytest.raises(SinkError, match=r"failed for 4 message\(s\): 4 still queued after 2.5s"):
        tracker.check(4, 2.5, "stats publish")


def test_errors_and_remainder_add_up() -> None:
    tracker = DeliveryTracker()
    tracker(TIMED_OUT, None)
    with pytest.raises(SinkError, match=r"failed for 3 message\(s\)"):
        tracker.check(2, 1.0, "x")


def test_check_clears_the_failures_it_reported() -> None:
    tracker = DeliveryTracker()
    tracker(TIMED_OUT, None)
    with pytest.raises(SinkError):
        tracker.check(0, 1.0, "x")
    tracker.check(0, 1.0, "x")  # a retried flush that succeeds is not haunted by the old error


def test_take_errors_returns_them_in_order_once() -> None:
    tracker = DeliveryTracker()
    tracker(KafkaError(KafkaError._MSG_TIMED_OUT, "first"), None)
    tracker(KafkaError(KafkaError._MSG_TIMED_OUT, "second"), None)
    assert [e.split('"')[-2] for e in tracker.take_errors()] == ["first", "second"]
    assert tracker.take_errors() == []


def test_reports_from_many_threads_are_all_counted() -> None:
    tracker = DeliveryTracker()
    n_threads, per_thread = 8, 5000

    def report(i: int) -> None:
        for j in range(per_thread):
            tracker(TIMED_OUT if (i + j) % 10 == 0 else None, None)

    threads = [threading.Thread(target=report, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = tracker.take_errors()
    assert tracker.acknowledged + len(errors) == n_threads * per_thread
    assert len(errors) == n_threads * per_thread // 10


ALERT = Alert(
    fingerprint="f1",
    status="firing",
    alertname="CostP95High",
    labels={"route": "r"},
    starts_at=datetime(2026, 11, 22, 10, 4, tzinfo=UTC),
)
REJECTED = Rejected(RawMessage(b"not json", b"t1", 0, 7), InvalidEvent("not_json", "x"))
UNREACHABLE = KafkaSettings(bootstrap_servers="127.0.0.1:1")  # nothing listens on port 1


def _dlq() -> tuple[Publisher, str]:
    publisher = DeadLetterPublisher(UNREACHABLE)
    publisher.publish([REJECTED])
    return publisher, "dead-letter publish"


def _alerts() -> tuple[Publisher, str]:
    publisher = AlertPublisher(UNREACHABLE)
    publisher.publish([ALERT])
    return publisher, "alert publish"


@pytest.mark.parametrize("queue_one", [_dlq, _alerts], ids=["dlq", "alerts"])
def test_publishers_flush_raises_when_not_acknowledged(
    queue_one: Callable[[], tuple[Publisher, str]],
) -> None:
    publisher, what = queue_one()
    started = time.monotonic()
    with pytest.raises(SinkError, match=rf"^{what} failed for 1 message\(s\): 1 still queued"):
        publisher.flush(timeout=0.5)
    assert time.monotonic() - started < 5
    assert publisher.published == 0
