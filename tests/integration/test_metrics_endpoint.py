"""The worker's /metrics and /health, scraped from a real worker process on a real broker.

Valid demo events, undecodable ones, ones missing a field and repeated event
ids are produced; what Prometheus would read must count exactly those.
"""

from __future__ import annotations

import json
import math
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from tracewatch.config import KafkaSettings
from tracewatch.demo.traffic import DemoTraffic
from tracewatch.streams.topics import ensure_topics

pytestmark = pytest.mark.integration

N_VALID, N_NOT_JSON, N_MISSING, N_DUPLICATE = 600, 25, 15, 10

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def messages() -> list[tuple[bytes, bytes]]:
    t0 = math.floor(time.time() / 60) * 60 - 600
    events = DemoTraffic(seed=7).take(t0, N_VALID, rate_per_s=5.0)
    valid = [(str(e["trace_id"]).encode(), json.dumps(e).encode()) for e in events]
    not_json = [(b"bad", b"\xffnot json %d" % i) for i in range(N_NOT_JSON)]
    missing = [
        (b"missing", json.dumps({k: v for k, v in e.items() if k != "route"}).encode())
        for e in events[:N_MISSING]
    ]
    return valid + not_json + missing + valid[-N_DUPLICATE:]  # repeats come after the firsts


def produce(kafka: KafkaSettings, stream: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({**kafka.client_config(), "enable.idempotence": True, "acks": "all"})
    for key, value in stream:
        producer.produce(kafka.events_topic, value, key)
        producer.poll(0)
    assert producer.flush(60) == 0


def scrape(worker: Any) -> tuple[str, Samples]:
    """What Prometheus reads, with the worker's token (its ``credentials_file``)."""
    with urllib.request.urlopen(worker.request("/metrics"), timeout=10) as response:
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return content_type, samples


def health(url: str) -> tuple[int, dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
        return response.status, json.loads(response.read())


def test_metrics_count_what_was_produced_and_health_is_ok(
    kafka_settings: KafkaSettings,
    tmp_path: Path,
    free_port: int,
    make_worker: Callable[..., Any],
) -> None:
    ensure_topics(kafka_settings)
    stream = messages()
    produce(kafka_settings, stream)
    worker = make_worker(kafka_settings, tmp_path, free_port)
    worker.start()
    worker.wait_for(
        lambda b: b["received"] >= len(stream) and b["pending_events"] == 0, timeout=120
    )

    deadline = time.monotonic() + 30
    while True:  # the lag is measured once a second by the ingest thread
        content_type, got = scrape(worker)
        lags = {k: v for k, v in got.items() if k[0] == "tracewatch_consumer_lag"}
        if len(lags) == kafka_settings.events_partitions and not any(lags.values()):
            break
        assert time.monotonic() < deadline, f"consumer lag never reached 0: {lags}"
        time.sleep(0.5)

    assert content_type.startswith("text/plain; version=0.0.4")
    assert got["tracewatch_events_consumed_total", ()] == len(stream)
    assert got["tracewatch_events_valid_total", ()] == N_VALID
    assert got["tracewatch_events_stored_total", ()] == N_VALID
    assert got["tracewatch_events_rejected_total", (("reason", "not_json"),)] == N_NOT_JSON
    assert got["tracewatch_events_rejected_total", (("reason", "missing_field"),)] == N_MISSING
    duplicate = (("reason", "duplicate_event_id"),)
    assert got["tracewatch_events_rejected_total", duplicate] == N_DUPLICATE
    assert got["tracewatch_events_duplicate_total", ()] == N_DUPLICATE
    assert got["tracewatch_sink_errors_total", ()] == 0
    assert got["tracewatch_batch_processing_seconds_count", ()] >= 1
    assert got["tracewatch_sink_write_seconds_count", (("table", "events"),)] >= 1
    assert got["tracewatch_flushes_total", ()] >= 1

    assert health(worker.url) == (200, {"status": "ok"})
    worker.stop()
