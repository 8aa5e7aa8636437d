"""Alert and breaker latency under a steady load, through the real worker.

A ``tracewatch run`` worker (allowed lateness ``--lateness`` s) gets a steady
live load of demo traffic (``--rate`` events/s, ``ts`` = now). Beside it,
``--routes`` probe routes send a few calls a second each, all failing in one
minute and all succeeding in the next (routes alternate), under a threshold
rule ``error_rate > 0.5`` with ``for``, ``resolve_after`` and ``cooldown`` 0.

What the rule itself requires: a minute's error rate is known once the
watermark passes the minute's end, i.e. once events of ``minute end +
lateness`` have been read. Alert latency is the time from that moment (the
wall clock, since the load is live) to the transition appearing on the alerts
topic, for every firing and resolve of every probe route. Each minute gives
``--routes`` samples that share one close, so the p99 needs several minutes.

In the same run, the breaker latency (produce an agent step over the loop-depth
limit, spin on ``BreakerClient.check`` until it refuses) as in
bench/breaker_latency.py.

    .venv/bin/python bench/latency.py [--rate 3000] [--minutes 6] [--routes 20]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import threading
import time
import uuid
from pathlib import Path

import benchlib
import numpy as np
from breaker_latency import breaker_delays, load, pct, prepare_load
from confluent_kafka import Consumer, Producer

from tracewatch.config import KafkaSettings
from tracewatch.streams.topics import ensure_topics

RULES = """
rules:
  - name: ProbeErrors
    metric: error_rate
    stat: rate
    routes: ["probe/*"]
    above: 0.5
    for: 0
    resolve_after: 0
    cooldown: 0
"""


def probes(kafka: KafkaSettings, routes: int, stop: threading.Event) -> None:
    """Each probe route: 5 calls a second, all errors in alternate minutes."""
    producer = Producer({**kafka.client_config(), "linger.ms": 5})
    while not stop.is_set():
        now = time.time()
        minute = math.floor(now / 60)
        for r in range(routes):
            failing = (minute + r) % 2 == 0
            for _ in range(5):
                trace = uuid.uuid4().hex[:16]
                event = {
                    "event_id": uuid.uuid4().hex, "trace_id": trace, "ts": time.time(),
                    "kind": "llm", "route": f"probe/{r}", "latency_ms": 100.0,
                    "status": "error" if failing else "ok",
                }  # fmt: skip
                producer.produce(kafka.events_topic, json.dumps(event).encode(), trace)
        producer.poll(0)
        time.sleep(max(0.0, 1.0 - (time.time() - now)))
    producer.flush(10)


def watch_alerts(
    kafka: KafkaSettings, lateness: float, stop: threading.Event, out: list[tuple[float, str]]
) -> None:
    """(delay beyond the rule's own decision moment, status) of every probe transition."""
    consumer = Consumer(
        {**kafka.client_config(), "group.id": f"bench-{uuid.uuid4().hex[:8]}",
         "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10}
    )  # fmt: skip
    consumer.subscribe([kafka.alerts_topic])
    while not stop.is_set():
        message = consumer.poll(0.05)
        if message is None or message.error() is not None:
            continue
        seen = time.time()
        alert = json.loads(message.value())
        if alert.get("alertname") != "ProbeErrors":
            continue
        decided = math.floor((seen - lateness) / 60) * 60 + lateness  # minute end + lateness
        out.append((seen - decided, str(alert["status"])))
    consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=3000.0, help="background events/s")
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--routes", type=int, default=20, help="probe routes")
    parser.add_argument("--lateness", type=float, default=5.0, help="allowed lateness, s")
    parser.add_argument("--trials", type=int, default=100, help="breaker trials")
    parser.add_argument("--port", type=int, default=6093)
    args = parser.parse_args()

    benchlib.start_broker()
    kafka = benchlib.bench_kafka("latency")
    ensure_topics(kafka)
    home = Path(tempfile.mkdtemp(prefix="tw-latency-bench-"))
    rules = home / "rules.yaml"
    rules.write_text(RULES)
    worker = benchlib.start_worker(
        kafka, home, args.port,
        {"TRACEWATCH_DETECT_RULES_FILE": str(rules),
         "TRACEWATCH_WORKER_ALLOWED_LATENESS_S": str(args.lateness)},
    )  # fmt: skip
    stop = threading.Event()
    samples: list[tuple[float, str]] = []
    seconds = args.minutes * 60
    threads = [
        threading.Thread(
            target=load,
            args=(kafka, prepare_load(args.rate, seconds + 60), args.rate, stop, [0], True),
        ),
        threading.Thread(target=probes, args=(kafka, args.routes, stop)),
        threading.Thread(target=watch_alerts, args=(kafka, args.lateness, stop, samples)),
    ]
    try:
        benchlib.wait_up(worker, args.port, home)
        for thread in threads:
            thread.start()
        started = time.monotonic()
        breaker = breaker_delays(kafka, args.trials)
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        status = benchlib.worker_status(args.port) or {}
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        benchlib.stop_worker(worker)

    # the first minute close after start-up is partial: its routes were not yet alternating
    delays = [d for d, _ in samples]
    print(f"load: {args.rate:g} events/s demo + {args.routes * 5} events/s probes; "
          f"worker received {status.get('received')}, late {status.get('late')}")  # fmt: skip
    if not delays:
        raise SystemExit(f"no probe alert arrived; see {home / 'worker.log'}")
    d = np.asarray(delays)
    print(
        f"alert transitions {len(d)} ({sum(s == 'firing' for _, s in samples)} firing): "
        f"delay beyond minute end + lateness p50 {np.percentile(d, 50) * 1000:.0f} ms, "
        f"p99 {np.percentile(d, 99) * 1000:.0f} ms, max {d.max() * 1000:.0f} ms"
    )
    print(
        f"breaker: offending event -> BreakerClient.check refuses ({len(breaker)} trials): "
        f"p50 {pct(breaker, 50):.0f} ms, p99 {pct(breaker, 99):.0f} ms, "
        f"max {max(breaker) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
