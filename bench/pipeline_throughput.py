"""Throughput of the pure pipeline (validate, deduplicate, aggregate) on demo events.

Prints events/s for: a bare ``json.loads`` loop over the same messages (the
decode ceiling, measured in the same run), the pipeline, and the pipeline plus
building ClickHouse insert columns. Ratios against the baseline are what to
compare between machines and commits; absolute figures move with machine load.

    .venv/bin/python bench/pipeline_throughput.py [--events 200000] [--batch 5000]
"""

from __future__ import annotations

import argparse
import json
import time

from tracewatch.demo.traffic import DemoTraffic
from tracewatch.pipeline import Pipeline, RawMessage
from tracewatch.sinks.clickhouse import event_columns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000)
    args = parser.parse_args()

    events = DemoTraffic(seed=1).take(1_795_341_600.0, args.events, rate_per_s=500.0)
    messages = [RawMessage(json.dumps(e).encode(), None, i % 6, i) for i, e in enumerate(events)]
    batches = [messages[i : i + args.batch] for i in range(0, len(messages), args.batch)]

    start = time.perf_counter()
    for message in messages:
        json.loads(message.value or b"")
    baseline = len(messages) / (time.perf_counter() - start)

    pipeline = Pipeline(allowed_lateness_s=120)
    start = time.perf_counter()
    for batch in batches:
        pipeline.process(batch)
    pipeline.finish()
    core = len(messages) / (time.perf_counter() - start)

    pipeline = Pipeline(allowed_lateness_s=120)
    start = time.perf_counter()
    for batch in batches:
        result = pipeline.process(batch)
        event_columns(result.events, result.partitions.tolist(), result.offsets.tolist())
    with_rows = len(messages) / (time.perf_counter() - start)

    print(f"events: {len(messages)}, batch: {args.batch}")
    print(f"json.loads baseline          {baseline:12,.0f} events/s   1.00")
    print(f"pipeline                     {core:12,.0f} events/s   {core / baseline:.2f}")
    print(f"pipeline + insert columns    {with_rows:12,.0f} events/s   {with_rows / baseline:.2f}")


if __name__ == "__main__":
    main()
