"""kill -9 at random points: every event stored once, clean-run statistics, no alert lost.

About 200 000 demo events (75 minutes of event time, three hours ago, with a
twelve-minute error burst on one route so the automatic watches fire) go onto a
four-partition topic up front. The real worker is killed with SIGKILL three
times at random points and restarted each time, then left to catch up and
stopped. What it stored is compared with the produced events themselves (events,
minute counts and sums exact, quantiles within the sketch's bound), and its
alerts with those of ``tracewatch replay`` over the same events: a clean run of
the same pipeline, in a process and chDB directory of its own.

The kill points come from a seeded RNG whose seed is printed; set
``IT_CRASH_SEED`` to run the same points again.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition

from tracewatch.config import ClickHouseSettings, KafkaSettings
from tracewatch.demo.runner import Incident
from tracewatch.demo.traffic import MODEL_PRICES, DemoTraffic
from tracewatch.schemas.alert import Alert
from tracewatch.sdk import AlertSubscriber, TraceProducer
from tracewatch.sinks.clickhouse import ClickHouseSink
from tracewatch.streams.topics import ensure_topics

pytestmark = pytest.mark.integration

MINUTES = 75
TRACES_PER_S = 13.5  # about 200 000 events over MINUTES
BURST_ROUTE = "search/summarize"
BURST = (35, 47)  # minutes in which 30 % of the route's LLM calls fail
LATENESS_S = 30.0
KILLS = 3
BOUND = 0.01  # the sketch's relative-error guarantee
SENTINEL_ROUTE = "it/sentinel"

Event = dict[str, Any]
Key = tuple[str, str, str, float]


def demo_events(t0: float) -> list[Event]:
    """Demo traffic with an error burst; every event carries its cost.

    The demo leaves ``cost_usd`` out of a few events for the worker to price; it
    is filled here from the demo's own prices so the expected sums are exact
    without re-implementing tracewatch's price table.
    """
    events = list(DemoTraffic(seed=23).events(t0, TRACES_PER_S, MINUTES * 60.0))
    start, end = t0 + 60 * BURST[0], t0 + 60 * BURST[1]
    burst = Incident("errors", BURST_ROUTE, start)
    inside = [i for i, e in enumerate(events) if start <= float(e["ts"]) < end]
    for i, changed in zip(inside, burst.apply(iter([events[i] for i in inside])), strict=True):
        events[i] = changed
    for e in events:
        if e.get("cost_usd") is None and e.get("model") in MODEL_PRICES:
            per_in, per_out = MODEL_PRICES[str(e["model"])]
            tokens_in, tokens_out = e.get("input_tokens"), e.get("output_tokens")
            if tokens_in is not None or tokens_out is not None:
                e["cost_usd"] = (per_in * (tokens_in or 0) + per_out * (tokens_out or 0)) / 1e6
    return events


def produce(kafka: KafkaSettings, events: list[Event]) -> int:
    with TraceProducer(settings=kafka) as producer:
        for event in events:
            producer.send(event)
        producer.flush()
        assert producer.take_failures() == []
        return producer.sent


def start_replay(events: list[Event], home: Path) -> subprocess.Popen[str]:
    """``tracewatch replay`` over the same events, in a process and chDB of its own."""
    home.mkdir()
    path = home / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEWATCH_")}
    tracewatch = str(Path(sys.executable).with_name("tracewatch"))
    return subprocess.Popen(
        [tracewatch, "replay", str(path), "--alerts-out", str(home / "alerts.jsonl"),
         "--allowed-lateness", str(LATENESS_S)],
        env={**env, "TRACEWATCH_HOME": str(home)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def committed(kafka: KafkaSettings) -> int:
    """Offsets the worker's group committed, summed over the events topic's partitions."""
    consumer = Consumer({**kafka.client_config(), "group.id": kafka.consumer_group})
    try:
        wanted = [TopicPartition(kafka.events_topic, p) for p in range(kafka.events_partitions)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(wanted, timeout=10))
    finally:
        consumer.close()


def read_clickhouse(home: Path) -> tuple[list[Any], list[Any]]:
    """The worker's events and minutes, read once it stopped (one chDB process per path)."""
    sink = ClickHouseSink(ClickHouseSettings(dsn=f"chdb://{home / 'clickhouse'}")).connect()
    try:
        stored = sink.query("SELECT event_id FROM tracewatch.events").rows
        stats = sink.query(
            "SELECT route, model, prompt_version, toUnixTimestamp(minute), late, count, "
            "error_count, timeout_count, input_tokens_sum, output_tokens_sum, cost_sum, "
            "cost_p50, cost_p95, cost_p99, latency_p50, latency_p95, latency_p99, "
            "loop_depth_max, loop_depth_p95, score_means FROM tracewatch.stats_1m"
        ).rows
    finally:
        sink.close()
    return stored, stats


def caught_up(body: dict[str, Any]) -> bool:
    """All stored and every real minute closed: only the sentinel's minute is open, which
    needs every partition's events read up to the sentinel's time."""
    return body["pending_events"] == 0 and body["open_buckets"] == 1


def read_alerts(kafka: KafkaSettings, quiet_s: float = 4.0) -> list[Alert]:
    """Everything on the alerts topic: read until nothing new came for ``quiet_s``."""
    seen: list[Alert] = []
    with AlertSubscriber(kafka, from_beginning=True) as subscriber:
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            alert = subscriber.poll(0.5)
            if alert is not None:
                seen.append(alert)
                last = time.monotonic()
    return seen


def expected_minutes(events: list[Event]) -> dict[Key, list[Event]]:
    groups: dict[Key, list[Event]] = defaultdict(list)
    for e in events:
        key = (str(e["route"]), str(e.get("model") or ""), str(e.get("prompt_version") or ""),
               math.floor(float(e["ts"]) / 60) * 60.0)  # fmt: skip
        groups[key].append(e)
    return groups


def column(events: list[Event], name: str) -> np.ndarray:
    return np.array([float(e[name]) for e in events if e.get(name) is not None])


def within_bound(estimate: float | None, values: np.ndarray, q: float) -> bool:
    if values.size == 0:
        return estimate is None
    exact = float(np.quantile(values, q, method="lower"))
    return estimate is not None and abs(estimate - exact) <= BOUND * exact + 1e-12


def check_stats(rows: list[Any], valid: list[Event]) -> None:
    """Each closed minute equal to the same events counted once (a clean run)."""
    groups = expected_minutes(valid)
    assert all(r[4] == 0 for r in rows), "no late rows: every event came within the lateness"
    by_key = {(r[0], r[1], r[2], float(r[3])): r for r in rows}
    assert len(by_key) == len(rows), "one row per key and minute"
    assert set(by_key) == set(groups)
    for key, row in by_key.items():
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


def check_alerts(on_topic: list[Alert], replayed: list[Alert]) -> int:
    """The same (fingerprint, status) pairs as the clean replay; returns the repeats."""
    clean = {(a.fingerprint, a.status): a for a in replayed}
    assert len(clean) == len(replayed), "the clean run raises each transition once"
    assert any(
        a.alertname == "ErrorRateHigh" and a.labels["route"] == BURST_ROUTE for a in replayed
    ), [(a.alertname, a.labels.get("route"), a.status) for a in replayed]
    seen: dict[tuple[str, str], list[Alert]] = defaultdict(list)
    for alert in on_topic:
        seen[(alert.fingerprint, alert.status)].append(alert)
    lost = set(clean) - set(seen)
    assert not lost, f"alerts lost: {[(clean[k].alertname, clean[k].labels, k[1]) for k in lost]}"
    extra = set(seen) - set(clean)
    assert not extra, f"alerts a clean run does not raise: {[seen[k][0] for k in extra]}"
    for key, copies in seen.items():
        want = clean[key]
        # a repeat after a crash is acceptable only as the same alert: same fingerprint
        # (the key) and the same starts_at, so a subscriber can tell it is a duplicate
        assert {a.starts_at for a in copies} == {want.starts_at}, (key, copies, want)
        assert {(a.alertname, a.labels["route"]) for a in copies} == {
            (want.alertname, want.labels["route"])
        }
    return len(on_topic) - len(seen)


def test_kill_9_three_times_loses_nothing_and_counts_nothing_twice(
    kafka_settings: KafkaSettings, tmp_path: Path, free_port: int, make_worker: Any
) -> None:
    seed = int(os.environ.get("IT_CRASH_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    points = sorted(rng.uniform(0.1, 0.9) for _ in range(KILLS))
    print(f"\nkill points seed {seed}: {[round(p, 3) for p in points]}")

    ensure_topics(kafka_settings)
    t0 = math.floor(time.time() / 60) * 60 - 3 * 3600  # recent enough for the events TTL
    valid = demo_events(t0)
    sentinel = {"event_id": "sentinel", "trace_id": "sentinel", "kind": "llm",
                "route": SENTINEL_ROUTE, "ts": t0 + MINUTES * 60 + 3600}  # fmt: skip
    replay = start_replay(valid, tmp_path / "replay")  # a clean run, meanwhile
    produced = produce(kafka_settings, [*valid, sentinel])
    assert produced == len(valid) + 1

    home = tmp_path / "worker"
    home.mkdir()
    worker = make_worker(
        kafka_settings, home, free_port, TRACEWATCH_WORKER_ALLOWED_LATENESS_S=str(LATENESS_S)
    )
    started = time.monotonic()
    for point in points:
        # a run reads again from the last commit: kill it when the group's read position
        # (committed offsets + what this run received) reaches the point
        base = committed(kafka_settings)
        worker.start()
        step = int(point * produced) - base
        at = worker.wait_for(lambda b, step=step: b["received"] >= step, timeout=120)
        worker.stop(signal.SIGKILL)
        print(f"killed run {worker.runs} at {(base + at['received']) / produced:.0%} "
              f"(committed {base}, received {at['received']}, stored {at['stored_events']}, "
              f"pending {at['pending_events']}, alerts sent {at['alerts_sent']})")  # fmt: skip
    worker.start()
    final = worker.wait_for(caught_up, timeout=180)
    print(f"caught up {time.monotonic() - started:.0f}s after the first start; "
          f"last run received {final['received']}")  # fmt: skip

    worker.stop()  # a clean stop writes what the last flush had not (the last minutes)
    on_topic = read_alerts(kafka_settings)
    stored, stats = read_clickhouse(home)

    _, err = replay.communicate(timeout=300)
    assert replay.returncode == 0, err
    replayed = [
        Alert.model_validate_json(line)
        for line in (tmp_path / "replay" / "alerts.jsonl").read_text().splitlines()
    ]

    ids = [r[0] for r in stored]
    duplicates = len(ids) - len(set(ids))
    print(f"events produced {len(valid)} valid (+1 sentinel), stored {len(ids)}, "
          f"duplicates {duplicates}; alerts: clean replay {len(replayed)}, "
          f"on the topic {len(on_topic)}")  # fmt: skip
    assert duplicates == 0
    assert len(ids) == len(valid) + 1  # the sentinel is a valid event too
    assert set(ids) == {str(e["event_id"]) for e in valid} | {"sentinel"}
    check_stats(stats, valid)
    repeats = check_alerts(on_topic, replayed)
    print(f"alerts lost 0, repeated after a crash (same fingerprint and starts_at) {repeats}")
