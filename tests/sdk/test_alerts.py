"""The alert subscriber: the wire form round-trips, junk never crashes an app, no broker needed.

The subscriber's Kafka consumer is replaced by ``FakeConsumer`` (real confluent
``Message`` and ``KafkaError`` objects, scripted ``poll`` results), so the tests
pin what the app sees for each thing the broker could hand over.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

import tracewatch.sdk.alerts as alerts_module
from tracewatch.config import KafkaSettings
from tracewatch.errors import ServiceUnavailable
from tracewatch.schemas.alert import Alert
from tracewatch.sdk import AlertSubscriber
from tracewatch.sdk.alerts import parse_alert
from tracewatch.sinks.kafka_alerts import alert_headers, alert_value

CONTRACT_EXAMPLE = """
{"fingerprint": "9f2c", "status": "firing", "alertname": "CostP95High",
 "labels": {"route": "refund/primary", "model": "gpt-4o-mini", "metric": "cost_usd",
            "detector": "threshold", "severity": "warning"},
 "value": 0.031, "baseline": 0.009, "threshold": 0.02,
 "starts_at": "2026-11-22T10:04:00Z", "ends_at": null,
 "summary": "p95 cost per request on refund/primary is 3.4x its baseline"}
"""
FIRING = Alert.model_validate_json(CONTRACT_EXAMPLE)
RESOLVED = FIRING.model_copy(
    update={"status": "resolved", "ends_at": datetime(2026, 11, 22, 10, 19, 30, tzinfo=UTC)}
)
CONTRACT_FIELDS = {
    "fingerprint", "status", "alertname", "labels", "value", "baseline", "threshold",
    "starts_at", "ends_at", "summary",
}  # fmt: skip


# -- the wire form -------------------------------------------------------------------------


def test_contract_example_parses() -> None:
    assert FIRING.status == "firing"
    assert FIRING.labels["metric"] == "cost_usd"
    assert FIRING.starts_at == datetime(2026, 11, 22, 10, 4, tzinfo=UTC)
    assert FIRING.ends_at is None


@pytest.mark.parametrize("alert", [FIRING, RESOLVED], ids=["firing", "resolved"])
def test_published_value_round_trips(alert: Alert) -> None:
    assert parse_alert(alert_value(alert)) == alert


def test_published_value_is_the_contract_object_with_utc_as_z() -> None:
    wire = json.loads(alert_value(RESOLVED))
    assert set(wire) == CONTRACT_FIELDS
    assert wire["starts_at"] == "2026-11-22T10:04:00Z"
    assert wire["ends_at"] == "2026-11-22T10:19:30Z"
    assert json.loads(alert_value(FIRING))["ends_at"] is None
    assert {k: wire[k] for k in ("fingerprint", "status", "value")} == {
        "fingerprint": "9f2c",
        "status": "resolved",
        "value": 0.031,
    }


def test_other_offsets_and_subseconds_survive_the_round_trip() -> None:
    plus2 = timezone(timedelta(hours=2))
    alert = FIRING.model_copy(update={"starts_at": datetime(2026, 11, 22, 12, 4, 0, 125000, plus2)})
    assert json.loads(alert_value(alert))["starts_at"] == "2026-11-22T12:04:00.125000+02:00"
    assert parse_alert(alert_value(alert)) == alert


def test_unknown_fields_are_kept_for_forward_compatibility() -> None:
    value = json.dumps({**json.loads(CONTRACT_EXAMPLE), "runbook_url": "https://x"}).encode()
    alert = parse_alert(value)
    assert alert.model_extra == {"runbook_url": "https://x"}
    assert parse_alert(alert_value(alert)) == alert


def test_status_header_allows_filtering_without_parsing() -> None:
    assert alert_headers(FIRING) == [("tracewatch.status", b"firing")]
    assert alert_headers(RESOLVED) == [("tracewatch.status", b"resolved")]


def test_parse_accepts_text() -> None:
    assert parse_alert(CONTRACT_EXAMPLE) == FIRING


def _without(field: str) -> bytes:
    return json.dumps(
        {k: v for k, v in json.loads(CONTRACT_EXAMPLE).items() if k != field}
    ).encode()


def _with(**change: Any) -> bytes:
    return json.dumps({**json.loads(CONTRACT_EXAMPLE), **change}).encode()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty message"),
        (b"", "empty message"),
        (b"not json", "Invalid JSON"),
        (b"[1, 2]", "Input should be an object"),
        (b'{"event_id": "e1", "trace_id": "t1"}', "fingerprint: Field required (and 4 more)"),
        (_without("starts_at"), "starts_at: Field required"),
        (_with(status="pending"), "status: Input should be 'firing' or 'resolved'"),
        (_with(labels={"route": 1}), "labels.route: Input should be a valid string"),
        (_with(starts_at="yesterday"), "starts_at: Input should be a valid datetime"),
        (_with(fingerprint=""), "fingerprint: String should have at least 1 character"),
        (alert_value(FIRING).replace(b"0.031", b"NaN"), "value: "),
        (b"\xff\xfe junk", "Invalid JSON"),
    ],
)
def test_parse_explains_what_is_not_an_alert(value: bytes | None, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_alert(value)
    assert reason in str(info.value)
    assert "\n" not in str(info.value)


# -- the subscriber, over a scripted consumer ----------------------------------------------


class FakeConsumer:
    """Stands in for ``confluent_kafka.Consumer``; ``script`` is what successive polls return."""

    instances: ClassVar[list[FakeConsumer]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.script: list[Message | KafkaError | None] = []
        self.stored: list[int] = []
        self.subscribed: list[str] = []
        self.closed = False
        self.topic_error: KafkaError | None = None
        self.unreachable = False
        FakeConsumer.instances.append(self)

    def list_topics(self, topic: str, timeout: float) -> Any:
        if self.unreachable:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata"))
        meta = type("TopicMetadata", (), {"error": self.topic_error})()
        return type("ClusterMetadata", (), {"topics": {topic: meta}})()

    def subscribe(self, topics: list[str]) -> None:
        self.subscribed = topics

    def poll(self, timeout: float) -> Message | None:
        assert not self.closed, "poll after close"
        if not self.script:
            time.sleep(min(timeout, 0.01))
            return None
        item = self.script.pop(0)
        if isinstance(item, KafkaError):  # as librdkafka serves it: through error_cb
            self.config["error_cb"](item)
            return None
        return item

    def store_offsets(self, message: Message) -> None:
        self.stored.append(message.offset())

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeConsumer]]:
    FakeConsumer.instances = []
    monkeypatch.setattr(alerts_module, "Consumer", FakeConsumer)
    yield FakeConsumer


def subscriber(**kwargs: Any) -> tuple[AlertSubscriber, FakeConsumer]:
    sub = AlertSubscriber(KafkaSettings(alerts_topic="alerts"), **kwargs)
    return sub, FakeConsumer.instances[-1]


def msg(value: bytes | None, offset: int) -> Message:
    return Message(topic="alerts", partition=0, offset=offset, key=b"k", value=value)


def error_msg(code: int, fatal: bool = False) -> Message:
    return Message(topic="alerts", error=KafkaError(code, "broker says no", fatal=fatal))


def test_default_is_a_private_group_from_the_end_without_commits(
    fake: type[FakeConsumer],
) -> None:
    a, consumer_a = subscriber()
    _, consumer_b = subscriber()
    assert consumer_a.subscribed == ["alerts"]
    assert consumer_a.config["group.id"] != consumer_b.config["group.id"]
    assert consumer_a.config["group.id"].startswith("tracewatch-alerts-")
    assert consumer_a.config["auto.offset.reset"] == "latest"
    assert consumer_a.config["enable.auto.commit"] is False
    assert not a.shared


def test_from_beginning_and_shared_group(fake: type[FakeConsumer]) -> None:
    sub, consumer = subscriber(group_id="billing-app", from_beginning=True)
    assert consumer.config["group.id"] == "billing-app"
    assert consumer.config["auto.offset.reset"] == "earliest"
    assert consumer.config["enable.auto.commit"] is True
    assert consumer.config["enable.auto.offset.store"] is False
    assert sub.shared


def test_config_overrides_win(fake: type[FakeConsumer]) -> None:
    _, consumer = subscriber(config={"session.timeout.ms": 6000, "auto.offset.reset": "earliest"})
    assert consumer.config["session.timeout.ms"] == 6000
    assert consumer.config["auto.offset.reset"] == "earliest"


def test_junk_is_skipped_counted_and_logged(
    fake: type[FakeConsumer], caplog: pytest.LogCaptureFixture
) -> None:
    sub, consumer = subscriber()
    consumer.script = [msg(b"not json", 0), msg(None, 1), msg(alert_value(FIRING), 2)]
    with caplog.at_level(logging.WARNING, logger="tracewatch.sdk.alerts"):
        assert sub.poll(timeout=1.0) == FIRING  # junk does not end the wait early
    assert (sub.skipped, sub.received) == (2, 1)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "alerts [0] at offset 0" in warnings[0]
    assert "Invalid JSON" in warnings[0]
    assert "empty message" in warnings[1]


def test_poll_times_out_with_none(fake: type[FakeConsumer]) -> None:
    sub, consumer = subscriber()
    consumer.script = [msg(b"junk", 0)]
    started = time.monotonic()
    assert sub.poll(timeout=0.3) is None
    assert 0.25 < time.monotonic() - started < 2
    assert sub.skipped == 1


def test_iteration_yields_alerts_in_order_until_closed_from_another_thread(
    fake: type[FakeConsumer],
) -> None:
    sub, consumer = subscriber()
    consumer.script = [msg(alert_value(FIRING), 0), msg(b"{}", 1), msg(alert_value(RESOLVED), 2)]
    got: list[Alert] = []

    def close_when_both_arrived() -> None:
        while len(got) < 2:
            time.sleep(0.01)
        sub.close()

    closer = threading.Thread(target=close_when_both_arrived)
    closer.start()
    started = time.monotonic()
    got.extend(sub)  # returns once close() was called
    closer.join()
    assert got == [FIRING, RESOLVED]
    assert time.monotonic() - started < 3
    assert consumer.closed
    assert sub.skipped == 1


def test_shared_group_stores_an_offset_once_the_next_alert_is_asked_for(
    fake: type[FakeConsumer],
) -> None:
    sub, consumer = subscriber(group_id="g")
    consumer.script = [msg(alert_value(FIRING), 5), msg(b"junk", 6), msg(alert_value(RESOLVED), 7)]
    assert sub.poll() == FIRING
    assert consumer.stored == []  # the app is still handling it
    assert sub.poll() == RESOLVED
    assert consumer.stored == [5, 6]
    sub.close()  # a clean close: the last one was handled
    assert consumer.stored == [5, 6, 7]


def test_an_exception_in_the_with_block_leaves_the_last_alert_for_redelivery(
    fake: type[FakeConsumer],
) -> None:
    with pytest.raises(KeyError), AlertSubscriber(group_id="g") as sub:
        consumer = FakeConsumer.instances[-1]
        consumer.script = [msg(alert_value(FIRING), 5)]
        sub.poll()
        raise KeyError("the app failed while handling the alert")
    assert consumer.stored == []
    assert consumer.closed


def test_private_group_never_stores_offsets(fake: type[FakeConsumer]) -> None:
    sub, consumer = subscriber()
    consumer.script = [msg(alert_value(FIRING), 5), msg(alert_value(RESOLVED), 6)]
    sub.poll()
    sub.poll()
    sub.close()
    assert consumer.stored == []


def test_close_is_idempotent_and_poll_after_close_says_so(fake: type[FakeConsumer]) -> None:
    sub, consumer = subscriber()
    sub.close()
    sub.close()
    assert sub.closed and consumer.closed
    assert list(sub) == []
    with pytest.raises(RuntimeError, match="closed"):
        sub.poll()


@pytest.mark.parametrize(
    "error",
    [
        KafkaError(KafkaError._FATAL, "fenced", fatal=True),
        KafkaError(KafkaError.SASL_AUTHENTICATION_FAILED, "bad password"),
    ],
    ids=["fatal", "authentication"],
)
def test_refusal_reported_by_the_client_raises_service_unavailable(
    fake: type[FakeConsumer], error: KafkaError
) -> None:
    sub, consumer = subscriber()
    consumer.script = [error]
    with pytest.raises(
        ServiceUnavailable, match=r"refused the alert subscriber.*TRACEWATCH_KAFKA_"
    ):
        sub.poll(timeout=1.0)


def test_refusal_on_a_message_raises_service_unavailable(fake: type[FakeConsumer]) -> None:
    sub, consumer = subscriber()
    consumer.script = [error_msg(KafkaError.TOPIC_AUTHORIZATION_FAILED)]
    with pytest.raises(ServiceUnavailable, match="broker says no"):
        sub.poll(timeout=1.0)


def test_transient_errors_are_logged_once_and_waited_out(
    fake: type[FakeConsumer], caplog: pytest.LogCaptureFixture
) -> None:
    sub, consumer = subscriber()
    down = KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down")
    consumer.script = [
        down,
        down,
        error_msg(KafkaError.UNKNOWN_TOPIC_OR_PART),
        error_msg(KafkaError.UNKNOWN_TOPIC_OR_PART),
        msg(alert_value(FIRING), 0),
    ]
    with caplog.at_level(logging.WARNING, logger="tracewatch.sdk.alerts"):
        assert sub.poll(timeout=2.0) == FIRING
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "unreachable" in warnings[0]
    assert "TRACEWATCH_KAFKA_BOOTSTRAP_SERVERS" in warnings[0]
    assert "does not exist yet" in warnings[1]
    assert sub.skipped == 0


def test_missing_topic_at_start_is_a_warning_not_an_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class NoTopic(FakeConsumer):
        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__(config)
            self.topic_error = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)

    monkeypatch.setattr(alerts_module, "Consumer", NoTopic)
    with caplog.at_level(logging.WARNING, logger="tracewatch.sdk.alerts"):
        sub = AlertSubscriber(KafkaSettings(alerts_topic="alerts"))
    assert ["topic alerts does not exist yet" in r.getMessage() for r in caplog.records] == [True]
    sub.close()


def test_unreachable_at_start_raises_service_unavailable_saying_how_to_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Unreachable(FakeConsumer):
        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__(config)
            self.unreachable = True

    monkeypatch.setattr(alerts_module, "Consumer", Unreachable)
    with pytest.raises(ServiceUnavailable) as info:
        AlertSubscriber(KafkaSettings(bootstrap_servers="kafka.invalid:9092"))
    assert "cannot reach Kafka at kafka.invalid:9092" in str(info.value)
    assert "infra/kafka/start.sh" in str(info.value)
    assert "TRACEWATCH_KAFKA_BOOTSTRAP_SERVERS" in str(info.value)
    assert FakeConsumer.instances[-1].closed


def test_unreachable_real_broker_fails_fast() -> None:
    # Nothing listens on port 1: the real client, a real connection failure, no broker needed.
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match=r"cannot reach Kafka at 127\.0\.0\.1:1"):
        AlertSubscriber(KafkaSettings(bootstrap_servers="127.0.0.1:1"), connect_timeout=0.5)
    assert time.monotonic() - started < 5
