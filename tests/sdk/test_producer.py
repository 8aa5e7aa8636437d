"""The SDK producer validates like the worker and never swallows delivery failures."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from tracewatch.errors import DeliveryError, InvalidEvent
from tracewatch.sdk import TraceProducer

EVENT = {"event_id": "e1", "trace_id": "t1", "ts": 1_795_341_600.0, "kind": "llm", "route": "r"}


def unreachable() -> TraceProducer:
    # Nothing listens on port 1: a real connection failure, no broker needed.
    return TraceProducer("127.0.0.1:1", config={"message.timeout.ms": 1500, "linger.ms": 0})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"latency_ms": -1.0}, "negative_number"),
        ({"latency_ms": math.nan}, "not_finite"),
        ({"scores": {"groundedness": 2.0}}, "out_of_range"),
        ({"route": ""}, "too_short"),
        ({"kind": "banana"}, "invalid_value"),
        ({"ts": datetime(2026, 11, 22, 10, 0)}, "wrong_type"),  # naive: no timezone
        ({"attributes": {"obj": object()}}, "wrong_type"),
    ],
)
def test_send_rejects_what_the_worker_would_reject(change: dict[str, object], reason: str) -> None:
    producer = unreachable()
    with pytest.raises(InvalidEvent) as info:
        producer.send({**EVENT, **change})
    assert info.value.reason == reason
    assert producer.sent == 0


def test_aware_datetimes_are_accepted() -> None:
    producer = unreachable()
    producer.send({**EVENT, "ts": datetime(2026, 11, 22, 10, 0, tzinfo=UTC)})
    assert producer.sent == 1


def test_delivery_failures_surface_from_flush() -> None:
    producer = unreachable()
    producer.send(EVENT)
    producer.send({**EVENT, "event_id": "e2"})
    with pytest.raises(DeliveryError) as info:
        producer.flush(timeout=10)
    assert len(info.value.failures) == 2
    assert {label for label, _ in info.value.failures} == {"e1", "e2"}
    assert producer.delivered == 0


def test_context_manager_raises_undelivered_events_on_exit() -> None:
    with pytest.raises(DeliveryError), unreachable() as producer:
        producer.send(EVENT)
