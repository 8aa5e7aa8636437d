"""Breaker latency: from producing an offending event to the SDK's check saying "open".

Starts the local broker (infra/kafka) if needed and a real ``tracewatch run``
worker on topics of its own, keeps a steady background load of demo traffic
(``--rate`` events/s, sent live), then ``--trials`` times: produces one agent
step whose ``loop_depth`` is over the limit for a fresh trace and spins on
``BreakerClient.check`` until it refuses. Prints p50/p99/max of that delay, and,
as the baseline measured in the same run, the bare Kafka round trip (produce one
message, see it in a consumer) under the same load.

    .venv/bin/python bench/breaker_latency.py [--rate 3000] [--trials 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path

import benchlib
import numpy as np
from confluent_kafka import Consumer, Producer

from tracewatch.config import KafkaSettings
from tracewatch.demo.traffic import DemoTraffic
from tracewatch.detectors.breakers import DEFAULT_LIMITS
from tracewatch.sdk import BreakerClient
from tracewatch.streams.topics import ensure_topics


def prepare_load(rate: float, seconds: float) -> list[tuple[bytes, bytes]]:
    """Demo events for ``seconds`` at ``rate`` events/s, serialised ahead (the sender is light).

    Their ``ts`` starts a little in the future, so they are about live when sent.
    """
    events_per_trace = 3.4  # DemoTraffic's average, so traces/s ~ rate / 3.4
    begin = time.time() + 0.05 * rate * seconds / 10_000  # about the time this takes
    stream = DemoTraffic(seed=9).events(begin, rate / events_per_trace, seconds)
    return [(json.dumps(e).encode(), str(e["trace_id"]).encode()) for e in stream]


def load(
    kafka: KafkaSettings,
    messages: list[tuple[bytes, bytes]],
    rate: float,
    stop: threading.Event,
    sent: list[int],
    live: bool = False,
) -> None:
    """Send ``messages`` evenly at ``rate`` per second until done or stopped; ``live``
    sets each event's ts to the moment it is sent."""
    producer = Producer({**kafka.client_config(), "linger.ms": 5})
    started = time.perf_counter()
    for i, (value, key) in enumerate(messages):
        if stop.is_set():
            break
        ahead = i / rate - (time.perf_counter() - started)
        if ahead > 0.002:
            time.sleep(ahead)
        if live:
            value = json.dumps({**json.loads(value), "ts": time.time()}).encode()
        producer.produce(kafka.events_topic, value, key)
        if i % 100 == 0:
            producer.poll(0)
        sent[0] += 1
    producer.flush(10)


def breaker_delays(kafka: KafkaSettings, trials: int) -> list[float]:
    producer = Producer({**kafka.client_config(), "linger.ms": 0})
    limit = DEFAULT_LIMITS.trace.max_loop_depth
    delays = []
    with BreakerClient(kafka) as client:
        client.wait_ready(30)
        for _ in range(trials):
            trace = f"bench-{uuid.uuid4().hex[:12]}"
            event = {
                "event_id": trace, "trace_id": trace, "ts": time.time(), "kind": "agent_step",
                "route": "bench/agent", "loop_depth": limit + 1, "cost_usd": 0.001,
            }  # fmt: skip
            started = time.perf_counter()
            producer.produce(kafka.events_topic, json.dumps(event).encode(), trace)
            producer.poll(0)
            while client.check(trace_id=trace).allowed:
                time.sleep(0.0005)
                if time.perf_counter() - started > 10:
                    raise SystemExit(f"no breaker for {trace} after 10 s: is the worker alive?")
            delays.append(time.perf_counter() - started)
            time.sleep(0.05)
    return delays


def kafka_round_trips(kafka: KafkaSettings, trials: int) -> list[float]:
    """The floor: one message produced and seen by a consumer, same broker, same load."""
    topic = kafka.stats_topic  # low volume, already exists
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "latest",
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.subscribe([topic])
    producer = Producer({**kafka.client_config(), "linger.ms": 0})

    def round_trip(marker: bytes, timeout: float) -> float | None:
        started = time.perf_counter()
        producer.produce(topic, b"{}", marker)
        producer.poll(0)
        while time.perf_counter() - started < timeout:
            message = consumer.poll(0.01)
            if message is not None and message.error() is None and message.key() == marker:
                return time.perf_counter() - started
        return None

    # until the consumer has its position, a marker can be produced before it and missed
    while round_trip(f"warm-{uuid.uuid4().hex}".encode(), 2.0) is None:
        pass
    delays = []
    for i in range(trials):
        delay = round_trip(f"rt-{i}-{uuid.uuid4().hex[:6]}".encode(), 5.0)
        if delay is not None:
            delays.append(delay)
    consumer.close()
    return delays


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=3000.0, help="background events/s")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=120.0, help="background load length")
    parser.add_argument("--port", type=int, default=6091, help="the bench worker's web port")
    args = parser.parse_args()

    benchlib.start_broker()
    kafka = benchlib.bench_kafka("breakers")
    ensure_topics(kafka)
    home = Path(tempfile.mkdtemp(prefix="tw-breaker-bench-"))
    worker = benchlib.start_worker(kafka, home, args.port)
    stop, sent = threading.Event(), [0]
    try:
        benchlib.wait_up(worker, args.port, home)
        messages = prepare_load(args.rate, args.seconds)
        feeder = threading.Thread(
            target=load, args=(kafka, messages, args.rate, stop, sent), daemon=True
        )
        feeder.start()
        time.sleep(5)  # let the load settle
        started, sent_before = time.perf_counter(), sent[0]
        delays = breaker_delays(kafka, args.trials)
        rate = (sent[0] - sent_before) / (time.perf_counter() - started)
        floor = kafka_round_trips(kafka, args.trials)
        status = benchlib.worker_status(args.port) or {}
    finally:
        stop.set()
        benchlib.stop_worker(worker)

    print(f"background load: {rate:,.0f} events/s sent during the trials (target {args.rate:g})")
    print(
        f"worker: received {status.get('received')}, "
        f"breaker signals {status.get('breaker_signals')}"
    )
    print(
        f"offending event -> BreakerClient.check refuses ({len(delays)} trials): "
        f"p50 {pct(delays, 50):.0f} ms, p99 {pct(delays, 99):.0f} ms, "
        f"max {max(delays) * 1000:.0f} ms"
    )
    print(
        f"bare Kafka round trip (baseline): p50 {pct(floor, 50):.1f} ms, "
        f"p99 {pct(floor, 99):.1f} ms;"
        f" breaker p50 / baseline p50 = {pct(delays, 50) / pct(floor, 50):.1f}x"
    )


if __name__ == "__main__":
    main()
