"""Kafka publisher of the dead-letter queue (alerts: ``kafka_alerts``, stats: ``kafka_stats``).

A rejected message keeps its original key and bytes; why it was rejected rides
in headers, so a consumer of the DLQ can replay or inspect it without parsing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from confluent_kafka import Producer

from tracewatch.config import KafkaSettings
from tracewatch.pipeline import Rejected
from tracewatch.sinks.delivery import DeliveryTracker

__all__ = ["DLQ_MAX_MESSAGE_BYTES", "DeadLetterPublisher", "dlq_headers"]

#: The DLQ must take anything the events topic took, plus the headers.
DLQ_MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def dlq_headers(rejected: Rejected, source_topic: str) -> list[tuple[str, str | bytes | None]]:
    """The reason headers of one dead letter."""
    error, message = rejected.error, rejected.message
    headers: list[tuple[str, str | bytes | None]] = [
        ("tracewatch.reason", error.reason.encode()),
        ("tracewatch.detail", error.detail[:500].encode()),
        ("tracewatch.source", f"{source_topic}/{message.partition}/{message.offset}".encode()),
    ]
    if error.field:
        headers.append(("tracewatch.field", error.field[:200].encode()))
    return headers


class DeadLetterPublisher:
    """Sends rejected messages to the DLQ topic; ``flush`` raises if any was not delivered."""

    def __init__(self, settings: KafkaSettings, source_topic: str | None = None) -> None:
        self.topic = settings.dlq_topic
        self.source_topic = source_topic or settings.events_topic
        self._producer = Producer(
            {
                **settings.client_config(),
                "linger.ms": 50,
                "enable.idempotence": True,
                "acks": "all",
                "message.max.bytes": DLQ_MAX_MESSAGE_BYTES,
            }
        )
        self._delivery = DeliveryTracker()

    @property
    def published(self) -> int:
        """Dead letters the broker acknowledged so far."""
        return self._delivery.acknowledged

    def publish(self, rejected: Sequence[Rejected]) -> None:
        for item in rejected:
            self._producer.produce(
                self.topic,
                item.message.value or b"",
                item.message.key,
                headers=dlq_headers(item, self.source_topic),
                on_delivery=self._delivery,
            )
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Block until every dead letter is acknowledged (offsets are committed only after)."""
        remaining = self._producer.flush(timeout)
        self._delivery.check(remaining, timeout, "dead-letter publish")

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> DeadLetterPublisher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
