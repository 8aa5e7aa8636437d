"""Valid messages that attack the worker's state (issue 16), on the real worker.

- an event dated a year ahead: DLQ with ``future_timestamp``, the commits reach the
  end, and a restart reads only what came after;
- 300 000 concurrent agent traces (more than the breaker board holds) with a
  runaway among them: its breaker opens and stays open;
- a hostile key mix (scaled down 10x from the issue's 2 M events, the same ratios:
  half the events with a prompt version each, over 10 000 invented routes): the
  worker's peak RSS stays under ``RSS_BOUND``, the overflow is counted, and the
  normal routes' minutes are exact.
"""

from __future__ import annotations

import json
import math
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tracewatch.config import KafkaSettings
from tracewatch.demo.traffic import DemoTraffic
from tracewatch.streams.topics import ensure_topics

pytestmark = pytest.mark.integration

Event = dict[str, Any]
#: the worker's peak RSS (VmHWM) with the hostile key mix: measured 1 199 MiB here (chDB,
#: 10 000 bucket keys over 4 open minutes, 107 000 breaker traces, 200 000 ids); the issue's
#: bound
RSS_BOUND = 1.5 * 2**30


def produce(kafka: KafkaSettings, events: list[Event]) -> None:
    """Raw JSON, keyed by trace id (the SDK would refuse nothing here, but is slower)."""
    producer = Producer({**kafka.client_config(), "linger.ms": 50, "batch.num.messages": 10000})
    for event in events:
        value = json.dumps(event, separators=(",", ":")).encode()
        while True:
            try:
                producer.produce(kafka.events_topic, value, str(event["trace_id"]).encode())
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0


def committed(kafka: KafkaSettings) -> int:
    consumer = Consumer({**kafka.client_config(), "group.id": kafka.consumer_group})
    try:
        wanted = [TopicPartition(kafka.events_topic, p) for p in range(kafka.events_partitions)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(wanted, timeout=10))
    finally:
        consumer.close()


def read_topic(kafka: KafkaSettings, topic: str, quiet_s: float = 3.0) -> list[Any]:
    """Every message of ``topic`` until it has been quiet for ``quiet_s``."""
    consumer = Consumer({**kafka.client_config(), "group.id": f"{kafka.consumer_group}-read",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe([topic])
    out: list[Any] = []
    quiet_until = time.monotonic() + 15  # the first assignment takes a moment
    while time.monotonic() < quiet_until:
        got = [m for m in consumer.consume(5000, 0.5) if m.error() is None]
        out += got
        if got:
            quiet_until = time.monotonic() + quiet_s
    consumer.close()
    return out


def query(worker: Any, sql: str, **parameters: Any) -> list[list[Any]]:
    body = json.dumps({"sql": sql, "parameters": parameters}).encode()
    headers = {"Content-Type": "application/json", **worker.auth()}
    request = urllib.request.Request(f"{worker.url}/query", body, headers, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        rows: list[list[Any]] = json.loads(response.read())["rows"]
    return rows


def peak_rss(worker: Any) -> int:
    for line in Path(f"/proc/{worker.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_an_event_a_year_ahead_is_refused_and_pins_nothing(
    kafka_settings: KafkaSettings, tmp_path: Path, free_port: int, make_worker: Any
) -> None:
    ensure_topics(kafka_settings)
    t0 = math.floor(time.time() / 60) * 60 - 40 * 60
    events = list(DemoTraffic(seed=16).events(t0, 5.0, 600.0))
    ahead = dict(events[len(events) // 2], event_id="a-year-ahead", ts=time.time() + 365 * 86400)
    half = len(events) // 2
    stream = [*events[:half], ahead, *events[half:]]
    produce(kafka_settings, stream)

    worker = make_worker(kafka_settings, tmp_path, free_port)
    worker.start()
    final = worker.wait_for(
        lambda b: b["received"] == len(stream) and b["pending_events"] == 0, timeout=120
    )
    assert final["rejected"] == {"future_timestamp": 1} and final["late"] == 0
    assert final["valid"] == final["stored_events"] == len(events)
    letters = read_topic(kafka_settings, kafka_settings.dlq_topic)
    assert len(letters) == 1 and json.loads(letters[0].value())["event_id"] == "a-year-ahead"
    headers = {k: v.decode() for k, v in letters[0].headers() or []}
    assert headers["tracewatch.reason"] == "future_timestamp"
    assert headers["tracewatch.field"] == "ts"
    # the commits pass the refused event: they stop only at the minutes the watermark
    # (newest event time - 120 s of lateness) has not closed, which a restart reads again
    newest = max(float(e["ts"]) for e in events)
    first_open = min(
        m for m in (float(e["ts"]) // 60 * 60 for e in events) if m + 60 > newest - 120
    )
    reread = sum(1 for e in events if float(e["ts"]) >= first_open)
    deadline = time.monotonic() + 60
    while committed(kafka_settings) < len(stream) - reread and time.monotonic() < deadline:
        time.sleep(0.5)
    assert committed(kafka_settings) == len(stream) - reread, "a partition's commit is pinned"
    worker.stop()

    more = list(DemoTraffic(seed=17).events(t0 + 900, 2.0, 10.0))
    produce(kafka_settings, more)
    worker.start()
    again = worker.wait_for(lambda b: b["stored_events"] == len(more), timeout=120)
    time.sleep(3)  # nothing more comes in
    again = worker.wait_for(lambda b: b["pending_events"] == 0)
    assert again["received"] == reread + len(more), "a restart read again what was committed"
    assert again["rejected_total"] == 0  # the future-dated event was not read again
    worker.stop()


def agent_traces(t0: float, n: int) -> tuple[list[Event], str]:
    """``n`` short agent traces over four minutes, and a runaway: 30 steps in its first
    30 s (it opens at the 27th), quiet for 3.5 minutes while the others flood the board,
    then one more step. The board evicted it before (``closed: evicted``, issue 16)."""
    events: list[Event] = []
    runaway = "runaway-agent"
    for i in range(n):
        events.append({"event_id": f"s{i}", "trace_id": f"agent-{i}", "ts": t0 + i * 240 / n,
                       "kind": "agent_step", "route": "agent/coder", "loop_depth": 0})  # fmt: skip
    steps = [{"event_id": f"r{d}", "trace_id": runaway, "ts": t0 + (d if d < 30 else 239.0),
              "kind": "agent_step", "route": "agent/coder", "loop_depth": d}
             for d in range(31)]  # fmt: skip
    return sorted(events + steps, key=lambda e: float(e["ts"])), runaway


def test_a_runaway_among_300_000_traces_stays_open(
    kafka_settings: KafkaSettings, tmp_path: Path, free_port: int, make_worker: Any
) -> None:
    ensure_topics(kafka_settings)
    t0 = math.floor(time.time() / 60) * 60 - 30 * 60
    events, runaway = agent_traces(t0, 300_000)
    produce(kafka_settings, events)
    worker = make_worker(kafka_settings, tmp_path, free_port)
    worker.start()
    final = worker.wait_for(
        lambda b: b["received"] == len(events) and b["pending_events"] == 0, timeout=300
    )
    assert final["valid"] == len(events)
    overflow = final["overflow"]
    assert overflow["breaker_trace_shed"] >= 300_000 - 200_000  # the board was full
    assert overflow["breaker_trace_refused"] == 0
    assert final["traces_tracked"] <= 200_000
    signals = [
        json.loads(m.value()) for m in read_topic(kafka_settings, kafka_settings.breakers_topic)
    ]
    mine = [s for s in signals if s["scope"] == f"trace:{runaway}"]
    assert mine and mine[0]["state"] == "open" and mine[0]["reason"] == "loop_depth 26 > 25"
    assert all(s["state"] == "open" for s in mine), mine  # never "closed: evicted"
    assert any(b["scope"] == f"trace:{runaway}" for b in worker.get("/breakers")["open"])
    worker.stop()


def hostile_mix(t0: float, n_normal: int, n_hostile: int, routes: int) -> list[Event]:
    """Demo traffic interleaved with events that each carry their own prompt version,
    over ``routes`` invented routes."""
    normal = DemoTraffic(seed=18).take(t0, n_normal, rate_per_s=40.0)  # about 10 minutes
    out: list[Event] = []
    step = max(1, n_hostile // max(1, len(normal)))
    h = 0
    for e in normal:
        out.append(e)
        for _ in range(step):
            if h < n_hostile:
                out.append({"event_id": f"h{h}", "trace_id": f"scan-{h}", "ts": e["ts"],
                            "kind": "llm", "route": f"scan/{h % routes}", "model": "m",
                            "prompt_version": f"req-{h}", "latency_ms": 10.0})  # fmt: skip
                h += 1
    return out


def test_a_hostile_key_mix_keeps_memory_flat_and_other_routes_whole(
    kafka_settings: KafkaSettings, tmp_path: Path, free_port: int, make_worker: Any
) -> None:
    ensure_topics(kafka_settings)
    t0 = math.floor(time.time() / 60) * 60 - 30 * 60
    stream = hostile_mix(t0, 100_000, 100_000, 10_000)
    produce(kafka_settings, stream)
    worker = make_worker(kafka_settings, tmp_path, free_port)
    started = time.monotonic()
    worker.start()
    worker.wait_for(lambda b: b["received"] == len(stream) and b["pending_events"] == 0, 300)
    print(f"\n{len(stream)} events in {time.monotonic() - started:.0f} s")
    time.sleep(5)  # the partitions go idle: the minutes the watermark passed are written
    final = worker.wait_for(lambda b: b["pending_events"] == 0)
    rss = peak_rss(worker)
    print(f"\npeak RSS {rss / 2**20:.0f} MiB with {len(stream)} events, "
          f"overflow {final['overflow']}")  # fmt: skip
    assert rss < RSS_BOUND
    assert final["valid"] == len(stream) and final["late"] == 0
    # at most the caps' keys at once; the rest folded and counted (keys idle for 10 minutes
    # of event time give their place back, so more than 10 000 were admitted in all)
    assert final["bucket_keys"] <= 10_000
    assert final["overflow"]["bucket_key"] + final["overflow"]["bucket_route"] > 50_000
    normal = [e for e in stream if not str(e["route"]).startswith("scan/")]
    closed = final["watermark"] - 60  # minutes that start before this are closed and written
    minutes = ((str(e["route"]), int(float(e["ts"]) // 60 * 60)) for e in normal)
    want = Counter(k for k in minutes if k[1] <= closed)
    rows = query(
        worker,
        "SELECT route, toUnixTimestamp(minute), sum(count) FROM {db:Identifier}.stats_1m "
        "WHERE route NOT LIKE 'scan/%' AND route != '__other__' AND late = 0 "
        "AND toUnixTimestamp(minute) <= {closed:Float64} GROUP BY route, minute",
        db="tracewatch",
        closed=closed,
    )
    assert {(r, int(m)): int(c) for r, m, c in rows} == dict(want)
    # and nothing was dropped: the closed minutes' rows, __other__ ones included, count
    # every event of those minutes
    (total,) = query(
        worker,
        "SELECT sum(count) FROM {db:Identifier}.stats_1m WHERE toUnixTimestamp(minute) <= "
        "{closed:Float64}",
        db="tracewatch",
        closed=closed,
    )[0]
    assert int(total) == sum(1 for e in stream if float(e["ts"]) // 60 * 60 <= closed)
    worker.stop()
