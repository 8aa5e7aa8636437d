"""The alert subscriber apps use to react to tracewatch's alerts as they happen.

    from tracewatch.sdk import AlertSubscriber

    with AlertSubscriber() as alerts:        # brokers from TRACEWATCH_KAFKA_* settings
        for alert in alerts:                 # blocks; ends when close() is called
            if alert.status == "firing" and alert.labels.get("route") == "refund/primary":
                use_fallback_model()         # your reaction

Each message on the alerts topic is one alert of the contract (contract.md,
"Alert") as plain JSON, keyed by its fingerprint, so any Kafka client reads the
same thing (``kcat -b 127.0.0.1:9092 -C -t tracewatch.alerts``); ``parse_alert``
turns such a value into an ``Alert``.

Who gets what:

- ``group_id=None`` (default): every subscriber gets every alert. It joins a
  throwaway group of its own, commits nothing, and starts at the end of the
  topic (alerts published once it is assigned its partitions), or at the
  beginning of the topic's retention with ``from_beginning=True``.
- ``group_id="my-app"``: the members of the group share the alerts (each alert
  goes to one member) and the group's position is committed, so a restarted
  member continues where the group left off (``from_beginning`` only matters the
  first time the group runs). At least once: an alert counts as handled when the
  next one is asked for or the subscriber is closed without an exception.

A message that is not a valid alert (another producer wrote something else to
the topic) is skipped with a logged warning and counted in ``skipped``; it never
raises. A broker that cannot be reached at start, or that refuses the
subscriber (authentication, authorisation, a fatal client error), raises
``ServiceUnavailable`` saying what to fix; a broker that goes away later is
logged and waited for, and alerts resume when it is back.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from pydantic import ValidationError

from tracewatch.config import KafkaSettings
from tracewatch.errors import ServiceUnavailable
from tracewatch.schemas.alert import Alert

__all__ = ["AlertSubscriber", "parse_alert"]

log = logging.getLogger(__name__)

#: longest single wait inside librdkafka, so close() and Ctrl-C are served promptly
_TICK_S = 0.25

#: errors no retry can cure: the client or the broker's configuration must change
_REFUSED = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
    }
)
_MISSING_TOPIC = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC})

_HOW_TO_FIX = (
    "Start the local broker with `bash infra/kafka/start.sh`, or set "
    "TRACEWATCH_KAFKA_BOOTSTRAP_SERVERS (and TRACEWATCH_KAFKA_SECURITY_PROTOCOL / "
    "TRACEWATCH_KAFKA_SASL_* for a secured cluster) to your brokers."
)


def parse_alert(value: bytes | str | None) -> Alert:
    """One message value of the alerts topic as an ``Alert``.

    Raises ``ValueError`` with a one-line reason when the value is not an alert
    (empty, not JSON, a required field missing or of the wrong type). Unknown
    fields are kept, as the contract allows additions.
    """
    if not value:
        raise ValueError("empty message")
    try:
        return Alert.model_validate_json(value)
    except ValidationError as exc:
        raise ValueError(_first_problem(exc)) from None


def _first_problem(exc: ValidationError) -> str:
    problems = exc.errors(include_url=False)
    first = problems[0]
    where = ".".join(str(part) for part in first["loc"])
    text = f"{where}: {first['msg']}" if where else str(first["msg"])
    return text if len(problems) == 1 else f"{text} (and {len(problems) - 1} more)"


class AlertSubscriber:
    """Receive alerts from the alerts topic; ``poll`` one at a time or iterate.

    ``settings`` defaults to ``KafkaSettings()`` (the ``TRACEWATCH_KAFKA_*``
    environment); ``config`` overrides librdkafka consumer settings. Construction
    checks that the cluster answers within ``connect_timeout`` seconds.
    ``close`` may be called from another thread: an iteration in progress ends
    within a fraction of a second.
    """

    def __init__(
        self,
        settings: KafkaSettings | None = None,
        *,
        group_id: str | None = None,
        from_beginning: bool = False,
        connect_timeout: float = 10.0,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings or KafkaSettings()
        self.topic = self.settings.alerts_topic
        self.group_id = group_id or f"tracewatch-alerts-{uuid.uuid4().hex}"
        self.shared = bool(group_id)
        self.received = 0
        self.skipped = 0
        self._lock = threading.Lock()
        self._closed = False
        self._fatal: KafkaError | None = None
        self._unreachable = False
        self._warned_missing_topic = False
        self._handled: Message | None = None  # returned to the app; stored at the next poll
        consumer = Consumer(self._consumer_config(from_beginning, config))
        self._connect(consumer, connect_timeout)
        consumer.subscribe([self.topic])
        self._consumer: Consumer | None = consumer

    @property
    def closed(self) -> bool:
        return self._closed

    def poll(self, timeout: float = 1.0) -> Alert | None:
        """The next alert, or None if none arrived within ``timeout`` seconds.

        Raises ``ServiceUnavailable`` if the broker refused the subscriber and
        ``RuntimeError`` if the subscriber is closed.
        """
        if self._closed:
            raise RuntimeError("this AlertSubscriber is closed")
        return self._next(timeout)

    def __iter__(self) -> Iterator[Alert]:
        """Alerts as they arrive, until ``close()``."""
        while not self._closed:
            alert = self._next(1.0)
            if alert is not None:
                yield alert

    def close(self) -> None:
        """Leave the group (committing its position if shared) and release the client.

        Idempotent, and safe to call from another thread.
        """
        self._closed = True  # an iteration in progress stops at its next tick
        with self._lock:
            if self._consumer is None:
                return
            consumer, self._consumer = self._consumer, None
            self._store(consumer)
            consumer.close()

    def __enter__(self) -> AlertSubscriber:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is not None:  # the last alert may not have been handled: deliver it again
            self._handled = None
        self.close()

    # -- internals -------------------------------------------------------------------------

    def _consumer_config(
        self, from_beginning: bool, overrides: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        return {
            **self.settings.client_config(),
            "group.id": self.group_id,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "enable.auto.commit": self.shared,
            "enable.auto.offset.store": False,  # stored once the app has had the alert
            "allow.auto.create.topics": False,  # never create the topic with broker defaults
            "error_cb": self._on_error,
            "logger": _LibrdkafkaLog(),
            **(overrides or {}),
        }

    def _connect(self, consumer: Consumer, timeout: float) -> None:
        try:
            topics = consumer.list_topics(self.topic, timeout=timeout).topics
        except KafkaException as exc:
            self._closed = True  # silences the error callbacks that close() still serves
            consumer.close()
            raise ServiceUnavailable(
                f"cannot reach Kafka at {self.settings.bootstrap_servers}: {exc.args[0]}. "
                + _HOW_TO_FIX
            ) from None
        meta = topics.get(self.topic)
        if meta is None or meta.error is not None:
            self._warn_missing_topic()

    def _next(self, timeout: float) -> Alert | None:
        deadline = time.monotonic() + timeout
        while not self._closed:
            with self._lock:
                if self._consumer is None:
                    return None
                self._raise_if_refused()
                self._store(self._consumer)
                left = deadline - time.monotonic()
                message = self._consumer.poll(max(0.0, min(left, _TICK_S)))
                self._raise_if_refused()  # reported through error_cb during that poll
                alert = None if message is None else self._accept(message)
            if alert is not None or time.monotonic() >= deadline:
                return alert
        return None

    def _accept(self, message: Message) -> Alert | None:
        """The alert in a message, or None for an error or a message that is not an alert."""
        error = message.error()
        if error is not None:
            self._on_message_error(error)
            return None
        self._unreachable = False
        try:
            alert = parse_alert(message.value())
        except ValueError as exc:
            self.skipped += 1
            log.warning(
                "skipped a message that is not an alert (%s [%s] at offset %s): %s",
                message.topic(),
                message.partition(),
                message.offset(),
                exc,
            )
            self._handled = message
            return None
        self.received += 1
        self._handled = message
        return alert

    def _store(self, consumer: Consumer) -> None:
        """Record the last message the app had as consumed (shared groups only)."""
        handled, self._handled = self._handled, None
        if handled is None or not self.shared:
            return
        try:
            consumer.store_offsets(message=handled)
        except KafkaException as exc:  # partition revoked meanwhile: its new owner redelivers
            log.debug("offset of %s not stored: %s", handled.offset(), exc)

    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's error callback (served inside ``poll``, lock held)."""
        if self._closed:
            return
        if error.fatal() or error.code() in _REFUSED:
            self._fatal = self._fatal or error
        elif error.code() == KafkaError._ALL_BROKERS_DOWN:
            if not self._unreachable:
                log.warning(
                    "Kafka at %s is unreachable (%s); waiting for it to come back. %s",
                    self.settings.bootstrap_servers,
                    error.str(),
                    _HOW_TO_FIX,
                )
            self._unreachable = True
        else:
            log.debug("Kafka client error (retried): %s", error.str())

    def _on_message_error(self, error: KafkaError) -> None:
        if error.fatal() or error.code() in _REFUSED:
            self._fatal = self._fatal or error
            self._raise_if_refused()
        elif error.code() in _MISSING_TOPIC:
            self._warn_missing_topic()
        elif error.code() != KafkaError._PARTITION_EOF:
            log.warning("Kafka consumer error (retried): %s", error.str())

    def _raise_if_refused(self) -> None:
        if self._fatal is not None:
            raise ServiceUnavailable(
                f"Kafka at {self.settings.bootstrap_servers} refused the alert subscriber: "
                f"{self._fatal.str()}. Check the TRACEWATCH_KAFKA_* settings (servers, "
                "security protocol, SASL/SSL credentials, ACLs on the topic and group)."
            )

    def _warn_missing_topic(self) -> None:
        if not self._warned_missing_topic:
            self._warned_missing_topic = True
            log.warning(
                "topic %s does not exist yet; it is created by `tracewatch topics` or "
                "`tracewatch run`. Waiting for it.",
                self.topic,
            )


class _LibrdkafkaLog:
    """librdkafka's own log lines, at most at INFO: the error callback reports what matters.

    Enable DEBUG on ``tracewatch.sdk.alerts.librdkafka`` to see every reconnect attempt.
    """

    _logger = logging.getLogger(f"{__name__}.librdkafka")

    def log(self, level: int, fmt: str, *args: object) -> None:
        self._logger.log(min(level, logging.INFO), fmt, *args)
