"""The Kafka broker goes down mid-stream: nothing acknowledged is lost, nothing stored twice.

A private broker (the shared one serves other tests) is stopped cleanly and, the
second time, killed with -9, each time for ``OUTAGE_S`` while the SDK's
``TraceProducer`` (idempotent, acks=all) keeps sending from a thread of its own
and a real ``tracewatch run`` keeps consuming. Afterwards both must have
reconnected by themselves, and every event the producer got an acknowledgement
for must be in ClickHouse exactly once. Events whose delivery failed (reported
by ``flush()`` as ``DeliveryError``) were never promised, so they may be absent.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError

from tracewatch.config import KafkaSettings
from tracewatch.demo.traffic import DemoTraffic
from tracewatch.errors import DeliveryError
from tracewatch.streams.topics import ensure_topics

pytestmark = pytest.mark.integration

RATE_PER_S = 800.0  # wall-clock send rate of the producer thread
N_MAX = 80_000  # more than the run can send: the thread is stopped, not exhausted
OUTAGE_S = 10.0


def query(worker: Any, sql: str) -> list[list[Any]]:
    """Through the running worker's /query view (the worker holds the embedded chDB)."""
    body = json.dumps({"sql": sql, "parameters": {}}).encode()
    request = urllib.request.Request(
        f"{worker.url}/query",
        body,
        {"Content-Type": "application/json", **worker.auth()},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            rows: list[list[Any]] = json.loads(response.read())["rows"]
    except urllib.error.HTTPError as exc:
        pytest.fail(f"/query answered {exc.code}: {exc.read().decode()[:2000]}")
    return rows


def topic_event_ids(kafka: KafkaSettings, expected: int) -> Counter[str]:
    """Every event id on the events topic, as often as it is there."""
    consumer = Consumer({**kafka.client_config(), "group.id": f"{kafka.consumer_group}-audit",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "enable.partition.eof": True})  # fmt: skip
    consumer.subscribe([kafka.events_topic])
    ids: Counter[str] = Counter()
    deadline = time.monotonic() + 60
    at_end: set[int] = set()
    while time.monotonic() < deadline and (
        sum(ids.values()) < expected or len(at_end) < kafka.events_partitions
    ):
        for m in consumer.consume(5000, 0.5):
            if m.error() is None:
                ids[json.loads(m.value())["event_id"]] += 1
                at_end.discard(m.partition())
            elif m.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(m.partition())
    consumer.close()
    return ids


def outage(
    name: str, fault: Callable[[], None], broker: Any, worker: Any, sender: Any
) -> dict[str, Any]:
    """Take the broker down for ``OUTAGE_S``, bring it back, wait until both sides move again."""
    fault()
    down_at = time.monotonic()
    sent_before = len(sender.ids)
    uptimes = []
    while time.monotonic() - down_at < OUTAGE_S:
        body = worker.status()  # fails the test if the worker process exited
        assert body is not None, f"{name}: the worker's /status stopped answering"
        uptimes.append(body["uptime_s"])
        assert sender.error is None, f"{name}: the producer raised {sender.error!r}"
        time.sleep(1.0)
    sent_during = len(sender.ids) - sent_before
    assert not broker.running(), f"{name}: the broker was up during the outage"
    assert uptimes == sorted(uptimes) and uptimes[-1] > uptimes[0]
    received_at_restart = worker.wait_for(lambda b: True)["received"]
    delivered_at_restart = sender.producer.delivered
    broker.start()
    back_at = time.monotonic()
    # the consumer reconnects and reads what was produced while the broker was down
    worker.wait_for(lambda b: b["received"] >= received_at_restart + sent_during, timeout=120)
    consumer_back_s = time.monotonic() - back_at
    deadline = time.monotonic() + 120
    while sender.producer.delivered <= delivered_at_restart + sent_during:
        assert time.monotonic() < deadline, f"{name}: the producer did not deliver again"
        time.sleep(0.2)
    producer_back_s = time.monotonic() - back_at
    print(
        f"\n{name}: {sent_during} events sent while down {OUTAGE_S:.0f}s; consumer back in "
        f"{consumer_back_s:.1f}s, producer delivering again in {producer_back_s:.1f}s"
    )
    return {"sent_during": sent_during}


def test_broker_stop_and_kill_lose_no_acknowledged_event(
    private_kafka: Any,
    tmp_path: Path,
    free_port: int,
    make_worker: Any,
    make_sender: Any,
    new_kafka_settings: Any,
) -> None:
    kafka = new_kafka_settings(private_kafka.bootstrap, 3, "br")
    ensure_topics(kafka)
    t0 = math.floor(time.time() / 60) * 60 - 3 * 3600  # recent enough for the events TTL
    events = DemoTraffic(seed=23).take(t0, N_MAX, rate_per_s=RATE_PER_S)
    worker = make_worker(kafka, tmp_path, free_port)
    worker.start()
    worker.wait_for(lambda b: True, timeout=120)
    sender = make_sender(kafka, events, RATE_PER_S)
    sender.start()
    try:
        worker.wait_for(lambda b: b["stored_events"] >= 2_000, timeout=120)
        outage("clean stop (stop.sh)", private_kafka.stop, private_kafka, worker, sender)
        time.sleep(3.0)
        outage("kill -9 of the broker JVM", private_kafka.kill, private_kafka, worker, sender)
        time.sleep(3.0)
    finally:
        sender.halt.set()
        sender.join(30)
    assert sender.error is None, sender.error
    failures: list[tuple[str, str]] = []
    try:
        sender.producer.flush(120)
    except DeliveryError as exc:
        failures = exc.failures
    assert all(label != "*" for label, _ in failures), f"still queued after 120 s: {failures[:3]}"
    sent = sender.ids
    failed = {label for label, _ in failures}
    acknowledged = set(sent) - failed
    assert sender.producer.delivered == len(acknowledged)

    final = worker.wait_for(
        lambda b: b["received"] >= len(acknowledged) and b["pending_events"] == 0, timeout=180
    )
    time.sleep(2.0)  # nothing more arrives
    final = worker.wait_for(lambda b: b["pending_events"] == 0)
    rows = query(worker, "SELECT event_id, count() FROM tracewatch.events GROUP BY event_id")
    stored = {str(event_id): int(n) for event_id, n in rows}
    on_topic = topic_event_ids(kafka, len(acknowledged))
    worker.stop()

    lost = acknowledged - set(stored)
    duplicates = sum(n - 1 for n in stored.values())
    topic_duplicates = sum(n - 1 for n in on_topic.values())
    print(
        f"\nbroker restart: produced {len(sent)}, acknowledged {len(acknowledged)}, "
        f"delivery failed {len(failed)}, on the topic {sum(on_topic.values())} "
        f"({topic_duplicates} duplicates), stored {sum(stored.values())}, "
        f"duplicates stored {duplicates}, acknowledged but lost {len(lost)}; worker "
        f"received {final['received']}, rejected {final['rejected']}"
    )
    print(
        f"| broker restart | stop.sh (SIGTERM) and kill -9 of the private broker, "
        f"{OUTAGE_S:.0f} s each, while producing | {len(sent)} | {sum(stored.values())} | "
        f"{duplicates} | n/a ({final['alerts_sent']} alerts sent) |"
    )
    assert not lost, f"{len(lost)} acknowledged events are not stored, e.g. {sorted(lost)[:3]}"
    assert duplicates == 0
    assert set(stored) <= set(sent), "stored events nobody sent"
    assert topic_duplicates == 0, "the idempotent producer wrote an event twice"
    assert final["rejected_total"] == 0, final["rejected"]
