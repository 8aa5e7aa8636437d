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

from collections.abc import Sequence
from types import TracebackType

from confluent_kafka import KafkaException, Producer

from tracewatch.config import KafkaSettings
from tracewatch.errors import SinkError
from tracewatch.schemas.alert import Alert
from tracewatch.sinks.delivery import DeliveryTracker

__all__ = ["STATUS_HEADER", "AlertPublisher", "alert_headers", "alert_value"]

STATUS_HEADER = "tracewatch.status"


def alert_value(alert: Alert) -> bytes:
    """The message value: the alert object of the contract as JSON."""
    return alert.model_dump_json().encode()


def alert_headers(alert: Alert) -> list[tuple[str, str | bytes | None]]:
    return [(STATUS_HEADER, alert.status.encode())]


class AlertPublisher:
    """Sends alerts to the alerts topic; ``flush`` raises ``SinkError`` if any was not acknowledged.

    The worker commits its input offsets only after ``flush`` returns, so an alert
    is never lost between detection and the topic (at least once).
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self.topic = settings.alerts_topic
        self._producer = Producer(
            {
                **settings.client_config(),
                "linger.ms": 20,
                "enable.idempotence": True,
                "acks": "all",
            }
        )
        self._delivery = DeliveryTracker()

    @property
    def published(self) -> int:
        """Alerts the broker acknowledged so far."""
        return self._delivery.acknowledged

    def publish(self, alerts: Sequence[Alert]) -> None:
        """Queue the alerts in order; call ``flush`` to wait for their acknowledgement."""
        for alert in alerts:
            self._produce(alert)
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Block until every queued alert is acknowledged; raise ``SinkError`` otherwise."""
        remaining = self._producer.flush(timeout)
        self._delivery.check(remaining, timeout, "alert publish")

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> AlertPublisher:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:  # do not hide the caller's exception behind a delivery error
            self._producer.flush(5.0)

    def _produce(self, alert: Alert) -> None:
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    alert_value(alert),
                    alert.fingerprint.encode(),
                    headers=alert_headers(alert),
                    on_delivery=self._delivery,
                )
                return
            except BufferError:  # local queue full: serve delivery reports until there is room
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise SinkError(f"cannot queue alert {alert.fingerprint}: {exc}") from None
