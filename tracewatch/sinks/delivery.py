"""Delivery bookkeeping shared by tracewatch's Kafka publishers.

librdkafka acknowledges each produced message through a callback served by
``poll``/``flush``. A ``DeliveryTracker`` is that callback: it counts the
acknowledged messages and collects the failures, and ``check`` turns "not all
acknowledged" into a ``SinkError``, so a publisher's ``flush`` is::

    remaining = producer.flush(timeout)
    tracker.check(remaining, timeout, "alert publish")

The worker commits its input offsets only after ``check`` returns.
"""

from __future__ import annotations

import threading

from confluent_kafka import KafkaError, Message

from tracewatch.errors import SinkError

__all__ = ["DeliveryTracker"]


class DeliveryTracker:
    """Pass as ``on_delivery=``; thread-safe, so reports may be served from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._errors: list[str] = []
        self._acknowledged = 0

    @property
    def acknowledged(self) -> int:
        """How many messages the broker acknowledged so far."""
        with self._lock:
            return self._acknowledged

    def __call__(self, err: KafkaError | None, _msg: Message | None) -> None:
        with self._lock:
            if err is None:
                self._acknowledged += 1
            else:
                self._errors.append(str(err))

    def take_errors(self) -> list[str]:
        """The failures reported since the last call, oldest first; clears them."""
        with self._lock:
            errors, self._errors = self._errors, []
        return errors

    def check(self, remaining: int, timeout: float, what: str) -> None:
        """Raise ``SinkError`` if a message failed or ``remaining`` are still unacknowledged.

        ``remaining`` is what ``Producer.flush(timeout)`` returned; ``what`` names the
        operation in the message (``"dead-letter publish"`` → "dead-letter publish
        failed for 2 message(s): …"). The failures are cleared either way.
        """
        errors = self.take_errors()
        if not remaining and not errors:
            return
        first = errors[0] if errors else f"{remaining} still queued after {timeout}s"
        raise SinkError(f"{what} failed for {len(errors) + remaining} message(s): {first}")
