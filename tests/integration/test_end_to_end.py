"""Events through the real broker, the real worker process and real ClickHouse (chDB).

Produces tens of thousands of demo events with the SDK, mixed with invalid
messages and duplicates, runs ``tracewatch run`` as a subprocess, then checks:
ClickHouse holds exactly the valid events; every rejected message is in the DLQ
with its reason, and valid + DLQ = produced; each closed minute's statistics
match numpy over the same events (counts exact, sums to float tolerance,
quantiles within the sketch's 1 % bound).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer

from tracewatch.config import ClickHouseSettings, KafkaSettings
from tracewatch.demo.traffic import DemoTraffic, invalid_events
from tracewatch.sdk import TraceProducer
from tracewatch.sinks.clickhouse import ClickHouseSink
from tracewatch.streams.topics import ensure_topics

pytestmark = pytest.mark.integration

N_VALID = 30_000
N_INVALID = 1_500
N_DUPLICATES = 300
LATENESS_S = 30.0
BOUND = 0.01  # the sketch's relative-error guarantee


def produce(kafka: KafkaSettings, t0: float) -> tuple[list[dict[str, Any]], int]:
    """Send valid events in event-time order with invalid ones and duplicates mixed in."""
    valid = DemoTraffic(seed=11).take(t0, N_VALID, rate_per_s=40.0)
    sentinel = {"event_id": "sentinel", "trace_id": "sentinel", "kind": "llm",
                "route": "it/sentinel", "ts": float(valid[-1]["ts"]) + 3600}  # fmt: skip
    rng = np.random.default_rng(5)
    bad = [raw for _, raw in invalid_events(rng, N_INVALID)]
    every = N_VALID // len(bad)
    duplicates = 0
    with TraceProducer(settings=kafka) as producer:
        for i, event in enumerate(valid):
            producer.send(event)
            if i % every == 0 and bad:
                producer.send_raw(bad.pop(), b"bad")
            if i % 100 == 99 and duplicates < N_DUPLICATES:  # a re-send of an event already sent
                producer.send(valid[int(rng.integers(0, i))])
                duplicates += 1
        for raw in bad:
            producer.send_raw(raw, b"bad")
        producer.send(sentinel)
        producer.flush()
        total = producer.sent
    return [*valid, sentinel], total


def status(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/status", timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def run_worker_until(
    kafka: KafkaSettings, home: Path, produced: int, port: int
) -> tuple[dict[str, Any], float]:
    env = {
        **os.environ,
        "TRACEWATCH_HOME": str(home),
        "TRACEWATCH_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "TRACEWATCH_KAFKA_EVENTS_TOPIC": kafka.events_topic,
        "TRACEWATCH_KAFKA_DLQ_TOPIC": kafka.dlq_topic,
        "TRACEWATCH_KAFKA_STATS_TOPIC": kafka.stats_topic,
        "TRACEWATCH_KAFKA_ALERTS_TOPIC": kafka.alerts_topic,
        "TRACEWATCH_KAFKA_BREAKERS_TOPIC": kafka.breakers_topic,
        "TRACEWATCH_KAFKA_CONSUMER_GROUP": kafka.consumer_group,
        "TRACEWATCH_WORKER_APP_ID": f"{kafka.consumer_group}-faust",
        "TRACEWATCH_WORKER_WEB_PORT": str(port),
        "TRACEWATCH_WORKER_ALLOWED_LATENESS_S": str(LATENESS_S),
        "TRACEWATCH_WORKER_IDLE_PARTITION_S": "2",
    }
    tracewatch = str(Path(sys.executable).with_name("tracewatch"))
    with (home / "worker.log").open("w") as log:
        worker = subprocess.Popen(
            [tracewatch, "run"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    first_seen: float | None = None
    done_at: float | None = None
    deadline = time.monotonic() + 240
    body: dict[str, Any] = {}
    try:
        while time.monotonic() < deadline:
            assert worker.poll() is None, (home / "worker.log").read_text()[-3000:]
            try:
                body = status(url)
            except OSError:
                time.sleep(0.5)
                continue
            if body["received"] and first_seen is None:
                first_seen = time.monotonic()
            if body["received"] >= produced and done_at is None:
                done_at = time.monotonic()
            # all stored, and the idle partitions have let every real minute close
            if done_at and body["stored_events"] == body["valid"] and body["open_buckets"] == 1:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"worker did not finish in time: {body}")
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            pytest.fail("worker did not stop within 60 s of SIGTERM")
    assert first_seen is not None and done_at is not None
    return body, produced / max(done_at - first_seen, 1e-3)


def read_dlq(kafka: KafkaSettings, expected: int) -> list[dict[str, str]]:
    consumer = Consumer({**kafka.client_config(), "group.id": f"{kafka.consumer_group}-dlq-reader",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe([kafka.dlq_topic])
    letters: list[dict[str, str]] = []
    deadline = time.monotonic() + 60
    while len(letters) < expected and time.monotonic() < deadline:
        for message in consumer.consume(1000, 1.0):
            if message.error() is None:
                letters.append({k: v.decode() for k, v in message.headers() or []})
    time.sleep(1.0)  # and nothing more than expected arrives
    letters += [{k: v.decode() for k, v in m.headers() or []} for m in consumer.consume(1000, 1.0)
                if m.error() is None]  # fmt: skip
    consumer.close()
    return letters


def expected_minutes(
    events: list[dict[str, Any]],
) -> dict[tuple[str, str, str, float], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        key = (str(e["route"]), str(e.get("model") or ""), str(e.get("prompt_version") or ""),
               math.floor(float(e["ts"]) / 60) * 60.0)  # fmt: skip
        groups[key].append(e)
    return groups


def column(events: list[dict[str, Any]], name: str) -> np.ndarray:
    return np.array([float(e[name]) for e in events if e.get(name) is not None])


def within_bound(estimate: float | None, values: np.ndarray, q: float) -> bool:
    if values.size == 0:
        return estimate is None
    exact = float(np.quantile(values, q, method="lower"))
    return estimate is not None and abs(estimate - exact) <= BOUND * exact + 1e-12


def test_events_flow_through_kafka_worker_and_clickhouse(
    kafka_settings: KafkaSettings, tmp_path: Path, free_port: int
) -> None:
    ensure_topics(kafka_settings)
    t0 = math.floor(time.time() / 60) * 60 - 3 * 3600  # recent enough for the events TTL
    valid, produced = produce(kafka_settings, t0)
    final, events_per_s = run_worker_until(kafka_settings, tmp_path, produced, free_port)
    print(f"\nworker sustained {events_per_s:,.0f} events/s end to end over {produced} messages")

    n_rejected = produced - len(valid)
    assert final["received"] == produced
    assert final["valid"] == len(valid) and final["rejected_total"] == n_rejected
    assert final["rejected"]["duplicate_event_id"] == N_DUPLICATES
    assert final["late"] == 0

    letters = read_dlq(kafka_settings, n_rejected)
    assert len(letters) == n_rejected
    assert len(valid) + len(letters) == produced
    assert all(
        letter.get("tracewatch.reason") and letter.get("tracewatch.detail") for letter in letters
    )
    assert (
        sum(letter["tracewatch.reason"] == "duplicate_event_id" for letter in letters)
        == N_DUPLICATES
    )

    sink = ClickHouseSink(ClickHouseSettings(dsn=f"chdb://{tmp_path / 'clickhouse'}")).connect()
    try:
        stored = sink.query("SELECT event_id FROM tracewatch.events").rows
        assert len(stored) == len(valid)
        assert {r[0] for r in stored} == {str(e["event_id"]) for e in valid}
        stats = sink.query(
            "SELECT route, model, prompt_version, toUnixTimestamp(minute), late, count, "
            "error_count, timeout_count, input_tokens_sum, output_tokens_sum, cost_sum, cost_p50, "
            "cost_p95, cost_p99, latency_p50, latency_p95, latency_p99, loop_depth_max, "
            "loop_depth_p95, score_means FROM tracewatch.stats_1m"
        )
    finally:
        sink.close()

    groups = expected_minutes(valid)
    rows = {(r[0], r[1], r[2], float(r[3])): r for r in stats.rows}
    assert all(r[4] == 0 for r in stats.rows), "no minute should have late rows"
    assert set(rows) == set(groups) - {k for k in groups if k[0] == "it/sentinel"}
    for key, row in rows.items():
        events = groups[key]
        statuses = [e.get("status", "ok") for e in events]
        assert row[5] == len(events), key
        assert (row[6], row[7]) == (statuses.count("error"), statuses.count("timeout")), key
        assert row[8] == int(column(events, "input_tokens").sum()), key
        assert row[9] == int(column(events, "output_tokens").sum()), key
        assert row[10] == pytest.approx(column(events, "cost_usd").sum(), rel=1e-9, abs=1e-12), key
        for i, q in zip((11, 12, 13), (0.5, 0.95, 0.99), strict=True):
            assert within_bound(row[i], column(events, "cost_usd"), q), (key, q, row[i])
        for i, q in zip((14, 15, 16), (0.5, 0.95, 0.99), strict=True):
            assert within_bound(row[i], column(events, "latency_ms"), q), (key, q, row[i])
        depth = column(events, "loop_depth")
        assert row[17] == (int(depth.max()) if depth.size else None), key
        assert within_bound(row[18], depth, 0.95), key
        scores: dict[str, list[float]] = defaultdict(list)
        for e in events:
            for name, value in dict(e.get("scores") or {}).items():
                scores[name].append(float(value))
        assert set(row[19]) == set(scores), key
        for name, values in scores.items():
            assert row[19][name] == pytest.approx(float(np.mean(values)), rel=1e-9), (key, name)
