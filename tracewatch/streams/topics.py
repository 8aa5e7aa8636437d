"""Create tracewatch's topics with their documented settings (idempotent).

| topic    | partitions           | policy                                  |
|----------|----------------------|-----------------------------------------|
| events   | ``events_partitions`` | delete after 7 days                     |
| dlq      | ``events_partitions`` | delete after 30 days, 8 MiB messages    |
| alerts   | 3                    | delete after 30 days                    |
| stats    | 3                    | delete after 7 days (closed buckets)    |
| breakers | 3                    | compact: the latest state per scope wins |
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tracewatch.config import KafkaSettings
from tracewatch.errors import ServiceUnavailable
from tracewatch.sinks.kafka import DLQ_MAX_MESSAGE_BYTES

__all__ = ["TopicSpec", "ensure_topics", "topic_specs"]

_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: KafkaSettings) -> list[TopicSpec]:
    n = settings.events_partitions
    return [
        TopicSpec(settings.events_topic, n, {"retention.ms": str(7 * _DAY_MS)}),
        TopicSpec(
            settings.dlq_topic,
            n,
            {"retention.ms": str(30 * _DAY_MS), "max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)},
        ),
        TopicSpec(settings.alerts_topic, 3, {"retention.ms": str(30 * _DAY_MS)}),
        TopicSpec(settings.stats_topic, 3, {"retention.ms": str(7 * _DAY_MS)}),
        TopicSpec(
            settings.breakers_topic,
            3,
            {
                "cleanup.policy": "compact",
                "min.cleanable.dirty.ratio": "0.1",
                "segment.ms": str(3600 * 1000),
            },
        ),
    ]


def ensure_topics(settings: KafkaSettings, timeout: float = 30.0) -> dict[str, str]:
    """Create missing topics; returns name → "created" | "exists"."""
    admin = AdminClient({**settings.client_config(), "socket.timeout.ms": int(timeout * 1000)})
    specs = topic_specs(settings)
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise ServiceUnavailable(
            f"cannot reach Kafka at {settings.bootstrap_servers}: {exc.args[0]}. "
            "Start the local broker with `bash infra/kafka/start.sh` or set "
            "TRACEWATCH_KAFKA_BOOTSTRAP_SERVERS."
        ) from None
    missing = [
        NewTopic(s.name, s.partitions, settings.replication_factor, config=s.config)
        for s in specs
        if s.name not in existing
    ]
    outcome = {s.name: "exists" for s in specs if s.name in existing}
    for name, future in (
        admin.create_topics(missing, request_timeout=timeout).items() if missing else []
    ):
        try:
            future.result(timeout)
            outcome[name] = "created"
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise ServiceUnavailable(f"cannot create topic {name}: {exc.args[0]}") from None
            outcome[name] = "exists"
    return outcome
