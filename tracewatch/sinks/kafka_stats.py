"""Publishes each closed statistics bucket to the internal ``tracewatch.stats`` topic.

This is the low-volume stream (one message per key per minute) that faust
agents consume: route-level state, and the detectors built on it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Producer

from tracewatch.config import KafkaSettings
from tracewatch.detectors.buckets import ClosedBucket
from tracewatch.sinks.delivery import DeliveryTracker

__all__ = ["StatsPublisher", "bucket_message"]


def bucket_message(bucket: ClosedBucket) -> dict[str, Any]:
    """The JSON form of a closed bucket on the stats topic."""
    route, model, prompt_version = bucket.key
    return {
        "route": route,
        "model": model,
        "prompt_version": prompt_version,
        "minute": bucket.start,
        "width_s": bucket.width,
        "late": bucket.late,
        **bucket.stats.summary(),
    }


class StatsPublisher:
    def __init__(self, settings: KafkaSettings) -> None:
        self.topic = settings.stats_topic
        self._producer = Producer({**settings.client_config(), "linger.ms": 20, "acks": "all"})
        self._delivery = DeliveryTracker()

    def publish(self, buckets: Sequence[ClosedBucket]) -> None:
        for bucket in buckets:
            value = json.dumps(bucket_message(bucket), allow_nan=False).encode()
            key = "|".join(bucket.key).encode()
            self._producer.produce(self.topic, value, key, on_delivery=self._delivery)
        remaining = self._producer.flush(30.0)
        self._delivery.check(remaining, 30.0, "stats publish")
