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
import signal
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
from tracewatch.pricing import PriceTable
from tracewatch.sdk import TraceProducer
from tracewatch.sinks.clickhouse import ClickHouseSink
from tracewatch.streams.topics import ensure_topics

pytestmark = pytest.mark.integration

N_VALID = 30_000
N_INVALID = 1_500
N_DUPLICATES = 300
LATENESS_S = 30.0
LATENESS_ENV = {"TRACEWATCH_WORKER_ALLOWED_LATENESS_S": str(LATENESS_S)}
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


def caught_up(body: dict[str, Any]) -> bool:
    """Everything read is stored and every real minute closed (only the sentinel's is open)."""
    return body["received"] > 0 and body["pending_events"] == 0 and body["open_buckets"] == 1


def read_dlq(kafka: KafkaSettings, expected: int) -> list[dict[str, str]]:
    consumer = Consumer({**kafka.client_config(), "group.id": f"{kafka.consumer_group}-dlq-reader",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe([kafka.dlq_topic])
    letters: list[dict[str, str]] = []
    deadline = time.monotonic() + 60
    while len({x["tracewatch.source"] for x in letters}) < expected and time.monotonic() < deadline:
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


PRICES = PriceTable.load()


def priced(event: dict[str, Any]) -> dict[str, Any]:
    """The event with the cost the worker computes when it has none (tested in test_pricing)."""
    if event.get("cost_usd") is not None or not event.get("model"):
        return event
    tokens = (event.get("input_tokens"), event.get("output_tokens"))
    if tokens == (None, None):
        return event
    cost = PRICES.cost_of(str(event["model"]), tokens[0] or 0, tokens[1] or 0)
    return event if cost is None else {**event, "cost_usd": cost}


def check_clickhouse(home: Path, valid: list[dict[str, Any]]) -> None:
    """Exactly the valid events, and each closed minute equal to numpy over the same events."""
    sink = ClickHouseSink(ClickHouseSettings(dsn=f"chdb://{home / 'clickhouse'}")).connect()
    try:
        stored = sink.query("SELECT event_id FROM tracewatch.events").rows
        stats = sink.query(
            "SELECT route, model, prompt_version, toUnixTimestamp(minute), late, count, "
            "error_count, timeout_count, input_tokens_sum, output_tokens_sum, cost_sum, cost_p50, "
            "cost_p95, cost_p99, latency_p50, latency_p95, latency_p99, loop_depth_max, "
            "loop_depth_p95, score_means FROM tracewatch.stats_1m"
        )
    finally:
        sink.close()
    assert len(stored) == len(valid)
    assert {r[0] for r in stored} == {str(e["event_id"]) for e in valid}

    groups = expected_minutes([priced(e) for e in valid])
    assert all(r[4] == 0 for r in stats.rows), "no minute should have late rows"
    rows = {(r[0], r[1], r[2], float(r[3])): r for r in stats.rows}
    assert len(rows) == len(stats.rows), "one row per key and minute"
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


def test_events_flow_through_kafka_worker_and_clickhouse(
    kafka_settings: KafkaSettings, tmp_path: Path, free_port: int, make_worker: Any
) -> None:
    ensure_topics(kafka_settings)
    t0 = math.floor(time.time() / 60) * 60 - 3 * 3600  # recent enough for the events TTL
    valid, produced = produce(kafka_settings, t0)
    worker = make_worker(kafka_settings, tmp_path, free_port, **LATENESS_ENV)
    worker.start()
    first = worker.wait_for(lambda b: b["received"] > 0)
    started_at = time.monotonic() - 0.2
    worker.wait_for(lambda b: b["received"] >= produced)
    elapsed = time.monotonic() - started_at
    final = worker.wait_for(caught_up)
    worker.stop()
    print(f"\nworker sustained {produced / elapsed:,.0f} events/s end to end over {produced} "
          f"messages (first status already had {first['received']})")  # fmt: skip

    n_rejected = produced - len(valid)
    assert final["received"] == produced
    assert final["valid"] == len(valid) and final["rejected_total"] == n_rejected
    assert final["rejected"]["duplicate_event_id"] == N_DUPLICATES
    assert final["late"] == 0 and final["stored_events"] == len(valid)

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
    check_clickhouse(tmp_path, valid)


def test_restarts_lose_nothing_and_count_nothing_twice(
    kafka_settings: KafkaSettings, tmp_path: Path, free_port: int, make_worker: Any
) -> None:
    """A graceful stop and a kill -9 mid-stream: same events and statistics as one clean run."""
    ensure_topics(kafka_settings)
    t0 = math.floor(time.time() / 60) * 60 - 3 * 3600
    valid, produced = produce(kafka_settings, t0)
    worker = make_worker(kafka_settings, tmp_path, free_port, **LATENESS_ENV)
    for sig, share in ((signal.SIGTERM, 0.3), (signal.SIGKILL, 0.3)):
        worker.start()
        # a run reads on while it stops (a loaded machine: up to 70 % seen in one run),
        # so the next may find less than ``share`` left: then it stops once caught up
        worker.wait_for(lambda b, share=share: b["received"] >= share * produced or caught_up(b))
        worker.stop(sig)
    worker.start()
    final = worker.wait_for(caught_up)
    worker.stop()
    assert final["late"] == 0
    letters = read_dlq(kafka_settings, produced - len(valid))
    # a kill -9 can publish a dead letter twice (before its offset was committed); none is lost
    assert len({letter["tracewatch.source"] for letter in letters}) == produced - len(valid)
    check_clickhouse(tmp_path, valid)
