"""End-to-end throughput: a preloaded topic through the real worker, against the bare ceiling.

Preloads a topic of its own with ``--events`` valid demo events (6 routes, several
models and prompt versions, agent traces with tool calls; keyed by trace id),
then measures, over the same messages:

1. the bare ceiling: a confluent-kafka ``consume(n)`` loop that ``json.loads``
   every value (nothing else), the practical limit of this machine;
2. ``tracewatch run`` end to end: consumed, validated, aggregated, detectors and
   breakers run, events and statistics written to its embedded ClickHouse,
   offsets committed. Timed from the first event received to the last one
   stored (the worker's ``/status``), so start-up is not counted;
3. with ``--workers 2`` (the default runs 1 and then 2): two workers in one
   consumer group over the same partitions, each with its own embedded ClickHouse;
4. ``tracewatch replay`` (in-process) over the same events as a JSON-lines file
   (statistics to ClickHouse; replay does not store raw events).

Figures move with machine load; the ratios against the bare ceiling of the same
run are what to compare between machines and commits.

    .venv/bin/python bench/throughput.py [--events 1000000] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import benchlib
from confluent_kafka import Consumer, Producer

from tracewatch.config import ClickHouseSettings, KafkaSettings, Settings
from tracewatch.demo.traffic import DemoTraffic
from tracewatch.replay import replay_file
from tracewatch.streams.topics import ensure_topics

T0 = 1_795_341_600.0
#: DemoTraffic's trace rate: about 330 events/s of event time, so a million events span
#: some 50 minutes and minutes close, statistics are written and detectors run as in
#: production (a faster event clock would fit the whole run in two open minutes)
TRACE_RATE = 100.0


def events_file(n: int, seed: int) -> Path:
    """Demo events as JSON lines, made once and kept (generating a million takes a while)."""
    path = benchlib.ROOT / ".tracewatch" / "bench" / f"demo-{n}-{seed}-r{TRACE_RATE:g}.jsonl"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    partial = path.with_suffix(".partial")
    with partial.open("w") as out:
        for event in DemoTraffic(seed=seed).take(T0, n, rate_per_s=TRACE_RATE):
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
    partial.rename(path)
    print(f"generated {n:,} demo events in {time.perf_counter() - started:.0f} s: {path}")
    return path


def preload(kafka: KafkaSettings, path: Path) -> int:
    ensure_topics(kafka)
    producer = Producer(
        {**kafka.client_config(), "linger.ms": 50, "batch.size": 1_000_000,
         "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000}
    )  # fmt: skip
    started, n = time.perf_counter(), 0
    with path.open("rb") as lines:
        for line in lines:
            value = line.rstrip(b"\n")
            key = json.loads(value)["trace_id"].encode()
            while True:
                try:
                    producer.produce(kafka.events_topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.05)
            n += 1
            if n % 10_000 == 0:
                producer.poll(0)
    if producer.flush(120) != 0:
        raise SystemExit("the preload did not finish: is the broker healthy?")
    print(f"preloaded {n:,} events in {time.perf_counter() - started:.1f} s")
    return n


def bare_ceiling(kafka: KafkaSettings, n: int) -> float:
    """consume(n) + json.loads of every value: nothing the worker does, only what it must."""
    consumer = Consumer(
        {**kafka.client_config(), "group.id": f"{kafka.consumer_group}-bare",
         "auto.offset.reset": "earliest", "enable.auto.commit": False,
         "fetch.max.bytes": 64 * 1024 * 1024, "queued.max.messages.kbytes": 256 * 1024}
    )  # fmt: skip
    consumer.subscribe([kafka.events_topic])
    seen, first = 0, 0.0
    deadline = time.monotonic() + 600
    while seen < n and time.monotonic() < deadline:
        for message in consumer.consume(5000, 1.0):
            if message.error() is None:
                if not seen:
                    first = time.perf_counter()
                json.loads(message.value())
                seen += 1
    elapsed = time.perf_counter() - first
    consumer.close()
    if seen < n:
        raise SystemExit(f"the bare consumer saw {seen:,} of {n:,} messages")
    return n / elapsed


def worker_run(kafka: KafkaSettings, n: int, workers: int, base_port: int) -> tuple[float, str]:
    """Events/s of ``workers`` processes in one group, from first received to last stored."""
    group = kafka.model_copy(update={"consumer_group": f"{kafka.consumer_group}-{workers}w"})
    homes = [Path(tempfile.mkdtemp(prefix=f"tw-throughput-{i}-")) for i in range(workers)]
    ports = [base_port + i for i in range(workers)]
    procs = [benchlib.start_worker(group, h, p) for h, p in zip(homes, ports, strict=True)]
    try:
        for proc, port, home in zip(procs, ports, homes, strict=True):
            benchlib.wait_up(proc, port, home)
        first, done, statuses = 0.0, 0.0, []
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            statuses = [benchlib.worker_status(p) or {} for p in ports]
            if any(proc.poll() is not None for proc in procs):
                raise SystemExit(f"a worker exited; see {homes}")
            received, stored = total(statuses, "received"), total(statuses, "stored_events")
            now = time.perf_counter()
            if received and not first:
                first = now
            if stored >= n:
                done = now
                break
            time.sleep(0.1)
        if not done:
            raise SystemExit(f"the workers did not store {n:,} events in time: {statuses}")
        detail = (
            f"rejected {total(statuses, 'rejected_total')}, "
            f"stats rows {total(statuses, 'stats_rows')}"
        )
        return n / (done - first), detail
    finally:
        for proc in procs:
            benchlib.stop_worker(proc)


def total(statuses: list[dict[str, object]], name: str) -> int:
    return sum(int(str(s.get(name) or 0)) for s in statuses)


def replay_rate(path: Path) -> float:
    home = Path(tempfile.mkdtemp(prefix="tw-throughput-replay-"))
    settings = Settings(clickhouse=ClickHouseSettings(dsn=f"chdb://{home / 'clickhouse'}"))
    report = replay_file(path, home / "alerts.jsonl", home / "breakers.jsonl", settings)
    return report.events_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--port", type=int, default=6092, help="first worker web port")
    parser.add_argument("--no-replay", action="store_true")
    args = parser.parse_args()

    path = events_file(args.events, args.seed)
    benchlib.start_broker()
    kafka = benchlib.bench_kafka("throughput", args.partitions)
    n = preload(kafka, path)
    rows = [("bare consume + json.loads", bare_ceiling(kafka, n), "the ceiling")]
    for workers in args.workers:
        rate, detail = worker_run(kafka, n, workers, args.port)
        rows.append((f"tracewatch run x{workers}", rate, detail))
    if not args.no_replay:
        rows.append(("tracewatch replay (in-process)", replay_rate(path), "no raw-event writes"))
    ceiling = rows[0][1]
    print(f"\n{n:,} events, {args.partitions} partitions")
    print(f"{'path':34s} {'events/s':>12s} {'x ceiling':>10s}")
    for name, rate, detail in rows:
        print(f"{name:34s} {rate:12,.0f} {rate / ceiling:10.2f}   {detail}")


if __name__ == "__main__":
    main()
