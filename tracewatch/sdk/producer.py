"""The producer apps use to send trace events to tracewatch.

It validates each event with the worker's own validator before it leaves the
process, so a bad event raises ``InvalidEvent`` at the call site instead of
surfacing later in the DLQ. Events are keyed by ``trace_id`` (a trace's events
stay in one partition), batched by librdkafka, and delivery failures are
collected and raised from ``flush()``/``close()``, never swallowed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from tracewatch.config import KafkaSettings
from tracewatch.errors import DeliveryError, InvalidEvent
from tracewatch.schemas.event import TraceEvent
from tracewatch.schemas.validation import DEFAULT_MAX_MESSAGE_BYTES, validate_message

__all__ = ["TraceProducer"]

_PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger.ms": 20,
    "batch.num.messages": 10000,
    "compression.type": "lz4",
    "enable.idempotence": True,  # retries never duplicate or reorder events
    "acks": "all",
}


class TraceProducer:
    """Validate and send trace events; use as a context manager so it flushes on exit.

    >>> with TraceProducer("127.0.0.1:9092") as producer:          # doctest: +SKIP
    ...     producer.send({"event_id": "e1", "trace_id": "t1", "ts": 1.7e9,
    ...                    "kind": "llm", "route": "support/chat"})
    """

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        *,
        topic: str | None = None,
        settings: KafkaSettings | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        base = settings or KafkaSettings()
        if bootstrap_servers:
            base = base.model_copy(update={"bootstrap_servers": bootstrap_servers})
        self.topic = topic or base.events_topic
        self.max_message_bytes = max_message_bytes
        self._producer = Producer({**base.client_config(), **_PRODUCER_DEFAULTS, **(config or {})})
        self._lock = threading.Lock()
        self._failures: list[tuple[str, str]] = []
        self.sent = 0
        self.delivered = 0

    def send(self, event: Mapping[str, Any] | TraceEvent) -> None:
        """Validate one event and queue it; raises ``InvalidEvent`` if it breaks the contract."""
        value = _encode(event)
        validated = validate_message(value, self.max_message_bytes)
        self._produce(value, validated.trace_id.encode(), validated.event_id)

    def send_raw(self, value: bytes, key: bytes | None = None) -> None:
        """Queue bytes as they are, without validation.

        For relaying messages that were validated elsewhere, or for testing the
        worker's dead-letter path; ``send`` is the call for ordinary use.
        """
        self._produce(value, key, f"raw#{self.sent}")

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery reports; returns how many were served."""
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for every queued event; raise ``DeliveryError`` if any could not be delivered."""
        remaining = self._producer.flush(timeout)
        if remaining:
            self._fail_pending(remaining, timeout)
        failures = self.take_failures()
        if failures:
            raise DeliveryError(
                f"{len(failures)} event(s) were not delivered; first: {failures[0][1]}", failures
            )

    def take_failures(self) -> list[tuple[str, str]]:
        """Delivery failures so far, as (event_id, error); clears the list."""
        with self._lock:
            failures, self._failures = self._failures, []
        return failures

    def close(self, timeout: float = 30.0) -> None:
        self.flush(timeout)

    def __enter__(self) -> TraceProducer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:  # do not hide the caller's exception behind a delivery error
            self._producer.flush(5.0)

    def _produce(self, value: bytes, key: bytes | None, label: str) -> None:
        while True:
            try:
                self._producer.produce(self.topic, value, key, on_delivery=self._on_delivery(label))
                break
            except BufferError:  # local queue full: serve reports until there is room
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise DeliveryError(
                    f"cannot queue event {label}: {exc}", [(label, str(exc))]
                ) from None
        self.sent += 1
        self._producer.poll(0)

    def _on_delivery(self, label: str) -> Any:
        def report(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                self.delivered += 1
            else:
                with self._lock:
                    self._failures.append((label, str(err)))

        return report

    def _fail_pending(self, remaining: int, timeout: float) -> None:
        with self._lock:
            self._failures.append(
                (
                    "*",
                    f"{remaining} event(s) still queued after {timeout}s: is the broker reachable?",
                )
            )


def _encode(event: Mapping[str, Any] | TraceEvent) -> bytes:
    if isinstance(event, TraceEvent):
        return event.model_dump_json(exclude_none=True).encode()
    try:
        return json.dumps(
            event, allow_nan=False, separators=(",", ":"), default=_json_default
        ).encode()
    except ValueError as exc:  # NaN / Infinity: the contract forbids them
        raise InvalidEvent("not_finite", str(exc)) from None
    except TypeError as exc:
        raise InvalidEvent("wrong_type", str(exc)) from None


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError("datetime ts needs a timezone (use datetime.now(UTC))")
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
