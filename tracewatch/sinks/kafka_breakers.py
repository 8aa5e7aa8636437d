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

from tracewatch.config import KafkaSettings
from tracewatch.schemas.breaker import BreakerSignal
from tracewatch.sinks.kafka_json import JsonPublisher

__all__ = ["BreakerPublisher", "breaker_key", "breaker_value"]


def breaker_value(signal: BreakerSignal) -> bytes:
    """The message value: the breaker object of the contract as JSON."""
    return signal.model_dump_json().encode()


def breaker_key(signal: BreakerSignal) -> bytes:
    """The message key: the scope, so compaction keeps the latest state per scope."""
    return signal.scope.encode()


class BreakerPublisher(JsonPublisher[BreakerSignal]):
    """Sends breaker signals to the breakers topic; ``flush`` raises ``SinkError`` on a loss."""

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(
            settings,
            settings.breakers_topic,
            key=breaker_key,
            what="breaker signal",
            producer_config={"linger.ms": 0, "socket.nagle.disable": True},
        )
