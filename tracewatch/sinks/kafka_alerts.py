"""Publishes alert transitions to the ``tracewatch.alerts`` topic (contract.md, "Alert").

One message per transition: the value is the contract's alert object as plain
JSON (``Alert.model_dump_json()``; datetimes in RFC 3339, UTC written as
``2026-11-22T10:04:00Z``), the key is the alert's ``fingerprint`` so that its
firing and its resolved land in one partition, in order, and the header
``tracewatch.status`` (``firing`` / ``resolved``) lets a consumer filter
without parsing. The producer is idempotent with ``acks=all``: retries never
duplicate or reorder transitions.
"""

from __future__ import annotations

from tracewatch.config import KafkaSettings
from tracewatch.schemas.alert import Alert
from tracewatch.sinks.kafka_json import Headers, JsonPublisher

__all__ = ["STATUS_HEADER", "AlertPublisher", "alert_headers", "alert_value"]

STATUS_HEADER = "tracewatch.status"


def alert_value(alert: Alert) -> bytes:
    """The message value: the alert object of the contract as JSON."""
    return alert.model_dump_json().encode()


def alert_headers(alert: Alert) -> Headers:
    return [(STATUS_HEADER, alert.status.encode())]


class AlertPublisher(JsonPublisher[Alert]):
    """Sends alerts to the alerts topic; ``flush`` raises ``SinkError`` if any was not acknowledged.

    The worker commits its input offsets only after ``flush`` returns, so an alert
    is never lost between detection and the topic (at least once).
    """

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(
            settings,
            settings.alerts_topic,
            key=lambda alert: alert.fingerprint.encode(),
            what="alert",
            producer_config={"linger.ms": 20},
            headers=alert_headers,
        )
