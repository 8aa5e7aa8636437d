"""Alerts through a real broker: the worker's publisher to an app's subscriber and any client."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient

from tracewatch.config import KafkaSettings
from tracewatch.schemas.alert import Alert
from tracewatch.sdk import AlertSubscriber
from tracewatch.sinks.kafka_alerts import AlertPublisher
from tracewatch.streams.topics import ensure_topics

pytestmark = pytest.mark.integration

CONTRACT_FIELDS = {
    "fingerprint", "status", "alertname", "labels", "value", "baseline", "threshold",
    "starts_at", "ends_at", "summary",
}  # fmt: skip
STARTS = datetime(2026, 11, 22, 10, 4, tzinfo=UTC)
FIRING = Alert(
    fingerprint="fp-cost",
    status="firing",
    alertname="CostP95High",
    labels={"route": "refund/primary", "model": "gpt-4o-mini", "metric": "cost_usd",
            "detector": "threshold", "severity": "warning"},
    value=0.031, baseline=0.009, threshold=0.02, starts_at=STARTS,
    summary="p95 cost per request on refund/primary is 3.4x its baseline",
)  # fmt: skip
RESOLVED = FIRING.model_copy(
    update={"status": "resolved", "ends_at": datetime(2026, 11, 22, 10, 19, 30, tzinfo=UTC)}
)
REFIRED = FIRING.model_copy(update={"starts_at": datetime(2026, 11, 22, 11, 0, tzinfo=UTC)})
OTHER = Alert(
    fingerprint="fp-loop",
    status="firing",
    alertname="LoopDepthHigh",
    labels={"route": "agent/planner", "metric": "loop_depth", "detector": "threshold"},
    value=26,
    threshold=25,
    starts_at=STARTS,
)
JUNK = b"this is not an alert"


def poll_alerts(sub: AlertSubscriber, n: int, within: float = 15.0) -> list[Alert]:
    got: list[Alert] = []
    deadline = time.monotonic() + within
    while len(got) < n and time.monotonic() < deadline:
        alert = sub.poll(timeout=0.5)
        if alert is not None:
            got.append(alert)
    return got


def poll_raw(settings: KafkaSettings, n: int, within: float = 15.0) -> list[Message]:
    consumer = Consumer(
        {
            **settings.client_config(),
            "group.id": f"raw-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.alerts_topic])
    got: list[Message] = []
    deadline = time.monotonic() + within
    while len(got) < n and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            got.append(message)
    consumer.close()
    return got


def produce_raw(settings: KafkaSettings, value: bytes, key: bytes) -> None:
    producer = Producer(settings.client_config())
    producer.produce(settings.alerts_topic, value, key)
    assert producer.flush(10) == 0


def test_alerts_reach_subscribers_in_order_and_junk_is_skipped(
    kafka_settings: KafkaSettings,
) -> None:
    started = time.monotonic()
    ensure_topics(kafka_settings)
    with AlertPublisher(kafka_settings) as publisher:
        publisher.publish([FIRING, OTHER])
        publisher.publish([RESOLVED])
        publisher.flush()
        # another producer writes junk into the partition of fp-cost, then it fires again
        produce_raw(kafka_settings, JUNK, FIRING.fingerprint.encode())
        publisher.publish([REFIRED])
    assert publisher.published == 4
    published_s = time.monotonic() - started

    with AlertSubscriber(kafka_settings, from_beginning=True) as sub:
        got = poll_alerts(sub, 4)
        assert sub.skipped == 1  # the junk sits before REFIRED in the same partition
        assert sub.received == 4
    assert [a for a in got if a.fingerprint == "fp-cost"] == [FIRING, RESOLVED, REFIRED]
    assert [a for a in got if a.fingerprint == "fp-loop"] == [OTHER]
    received_s = time.monotonic() - started - published_s

    raw = poll_raw(kafka_settings, 5)
    by_partition = {m.partition() for m in raw if m.key() == b"fp-cost"}
    assert len(by_partition) == 1, "one fingerprint, one partition"
    values = [m.value() for m in raw if m.key() == b"fp-cost"]
    assert values[2] == JUNK
    plain = [json.loads(v) for v in values if v != JUNK]
    assert all(set(v) == CONTRACT_FIELDS for v in plain)
    assert [(v["status"], v["starts_at"], v["ends_at"]) for v in plain] == [
        ("firing", "2026-11-22T10:04:00Z", None),
        ("resolved", "2026-11-22T10:04:00Z", "2026-11-22T10:19:30Z"),
        ("firing", "2026-11-22T11:00:00Z", None),
    ]
    headers = {m.key(): dict(m.headers() or []) for m in raw if m.value() != JUNK}
    assert headers[b"fp-loop"] == {"tracewatch.status": b"firing"}
    print(
        f"\nalerts topic: published+acked in {published_s:.2f}s, "
        f"subscriber received all in {received_s:.2f}s, total {time.monotonic() - started:.2f}s"
    )


def test_a_shared_group_commits_what_it_handled(kafka_settings: KafkaSettings) -> None:
    ensure_topics(kafka_settings)
    with AlertPublisher(kafka_settings) as publisher:
        publisher.publish([FIRING, OTHER])
    group = f"app-{uuid.uuid4().hex[:8]}"
    with AlertSubscriber(kafka_settings, group_id=group, from_beginning=True) as sub:
        assert sorted(a.fingerprint for a in poll_alerts(sub, 2)) == ["fp-cost", "fp-loop"]
    with AlertPublisher(kafka_settings) as publisher:
        publisher.publish([RESOLVED])
    # a restarted member continues where the group left off
    with AlertSubscriber(kafka_settings, group_id=group, from_beginning=True) as sub:
        assert poll_alerts(sub, 1) == [RESOLVED]
        assert sub.poll(timeout=1.0) is None


def test_subscribing_to_a_missing_topic_does_not_create_it(
    kafka_settings: KafkaSettings,
) -> None:
    # no ensure_topics: the broker auto-creates topics, but never for the subscriber
    with AlertSubscriber(kafka_settings) as sub:
        assert sub.poll(timeout=1.0) is None
    admin = AdminClient(kafka_settings.client_config())
    assert kafka_settings.alerts_topic not in admin.list_topics(timeout=10).topics
