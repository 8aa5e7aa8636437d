"""Publishes breaker signals to the ``tracewatch.breakers`` topic (contract.md, "Breaker signal").

One message per signal: the value is the contract's breaker object as plain JSON
(``BreakerSignal.model_dump_json()``; ``opened_at`` in RFC 3339, UTC written as
``2026-11-22T10:04:01Z``), the key is the signal's ``scope``. The topic is
log-compacted, so the latest signal per scope is the scope's state, and an app's
``BreakerClient`` rebuilds every scope's state by reading the topic from the start.

Latency matters more than batching here: apps stop a run on these signals, so
the producer does not linger (``linger.ms`` 0) and ``publish`` hands the signals
to librdkafka's sender at once. The producer is idempotent with ``acks=all``:
retries never duplicate or reorder the signals of a scope.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

from confluent_kafka import KafkaException, Producer

from tracewatch.config import KafkaSettings
from tracewatch.errors import SinkError
from tracewatch.schemas.breaker import BreakerSignal
from tracewatch.sinks.delivery import DeliveryTracker

__all__ = ["BreakerPublisher", "breaker_key", "breaker_value"]


def breaker_value(signal: BreakerSignal) -> bytes:
    """The message value: the breaker object of the contract as JSON."""
    return signal.model_dump_json().encode()


def breaker_key(signal: BreakerSignal) -> bytes:
    """The message key: the scope, so compaction keeps the latest state per scope."""
    return signal.scope.encode()


class BreakerPublisher:
    """Sends breaker signals to the breakers topic; ``flush`` raises ``SinkError`` on a loss."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.topic = settings.breakers_topic
        self._producer = Producer(
            {
                **settings.client_config(),
                "linger.ms": 0,
                "socket.nagle.disable": True,
                "enable.idempotence": True,
                "acks": "all",
            }
        )
        self._delivery = DeliveryTracker()

    @property
    def published(self) -> int:
        """Signals the broker acknowledged so far."""
        return self._delivery.acknowledged

    def publish(self, signals: Sequence[BreakerSignal]) -> None:
        """Queue the signals in order and send them now; ``flush`` waits for their acks."""
        for signal in signals:
            self._produce(signal)
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Block until every queued signal is acknowledged; raise ``SinkError`` otherwise."""
        remaining = self._producer.flush(timeout)
        self._delivery.check(remaining, timeout, "breaker publish")

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> BreakerPublisher:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:  # do not hide the caller's exception behind a delivery error
            self._producer.flush(5.0)

    def _produce(self, signal: BreakerSignal) -> None:
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    breaker_value(signal),
                    breaker_key(signal),
                    on_delivery=self._delivery,
                )
                return
            except BufferError:  # local queue full: serve delivery reports until there is room
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise SinkError(f"cannot queue breaker signal {signal.scope}: {exc}") from None
