"""One publisher for the JSON topics of the contract (alerts, breakers).

Both publish pydantic models as plain JSON, one message per model, with an
idempotent ``acks=all`` producer and a ``flush`` that raises ``SinkError`` unless
every message was acknowledged (the worker commits its input offsets only
after). What differs is configuration: the topic, the key, optional headers and
the producer's batching, so the per-topic publishers are thin subclasses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from confluent_kafka import KafkaException, Producer
from pydantic import BaseModel

from tracewatch.config import KafkaSettings
from tracewatch.errors import SinkError
from tracewatch.sinks.delivery import DeliveryTracker

__all__ = ["Headers", "JsonPublisher"]

M = TypeVar("M", bound=BaseModel)
Headers = list[tuple[str, str | bytes | None]]


class JsonPublisher(Generic[M]):
    """Sends models to ``topic``; ``flush`` raises ``SinkError`` if any was not acknowledged."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        key: Callable[[M], bytes],
        what: str,
        producer_config: Mapping[str, Any] | None = None,
        headers: Callable[[M], Headers] | None = None,
    ) -> None:
        self.topic = topic
        self._key = key
        self._headers = headers
        self._what = what
        self._producer = Producer(
            {
                **settings.client_config(),
                "enable.idempotence": True,
                "acks": "all",
                **(producer_config or {}),
            }
        )
        self._delivery = DeliveryTracker()

    @property
    def published(self) -> int:
        """Messages the broker acknowledged so far."""
        return self._delivery.acknowledged

    def publish(self, items: Sequence[M]) -> None:
        """Queue the items in order and hand them to the sender; ``flush`` waits for acks."""
        for item in items:
            self._produce(item)
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Block until every queued message is acknowledged; raise ``SinkError`` otherwise."""
        remaining = self._producer.flush(timeout)
        self._delivery.check(remaining, timeout, f"{self._what} publish")

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:  # do not hide the caller's exception behind a delivery error
            self._producer.flush(5.0)

    def _produce(self, item: M) -> None:
        key = self._key(item)
        headers = self._headers(item) if self._headers is not None else None
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    item.model_dump_json().encode(),
                    key,
                    headers=headers,
                    on_delivery=self._delivery,
                )
                return
            except BufferError:  # local queue full: serve delivery reports until there is room
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise SinkError(f"cannot queue {self._what} {key.decode()}: {exc}") from None
