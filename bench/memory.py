"""Resident memory against active keys, routes and traces (each size in a fresh process).

Three parts of the worker's state, measured separately so each figure means one
thing (RSS after building the state minus RSS just before, in the same process):

- **keys**: open one-minute buckets in the ``Pipeline`` for N (route, model,
  prompt_version) keys, three open minutes each, 20 events a minute;
- **routes**: the ``AlertEngine`` with N routes after 65 closed minutes each (its
  steady state: every watch's window and baseline full);
- **traces**: the ``BreakerBoard`` tracking N active agent traces of 8 steps;
- **ids**: the duplicate-id window (``RecentIds``) holding N event ids (UUID-like,
  36 characters) over 6 partitions.

    .venv/bin/python bench/memory.py [--sizes 100 1000 10000] [--route-sizes 100 1000]
    .venv/bin/python bench/memory.py --at-caps   # each part at its default cap

``--at-caps`` sizes each part at the worker's defaults (``WorkerSettings``: keys
``bucket_max_keys``, traces ``breaker_max_traces``, ids ``dedup_window`` per
partition x 6; routes ``DetectSettings.max_routes`` is slow to fill, so 1 000),
which is what the README's memory figures come from.

The engine part is slow to fill (about 1 ms per route-minute), so its default
sizes stop at 1 000 routes; the state is bounded per route, so it is linear.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from pathlib import Path

T0 = 1_795_341_600.0


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure_keys(n: int) -> int:
    import numpy as np

    from tracewatch.pipeline import Pipeline, RawMessage

    rng = np.random.default_rng(1)

    def chunk(minute: int, keys: range) -> list[RawMessage]:
        out = []
        for key in keys:
            for i in range(20):
                event = {
                    "event_id": f"{minute}-{key}-{i}", "trace_id": f"t{key}-{i}",
                    "ts": T0 + minute * 60 + i, "kind": "llm", "route": f"route/{key // 10}",
                    "model": f"model-{key % 10}", "prompt_version": "v1",
                    "cost_usd": float(rng.lognormal(-6, 1)),
                    "latency_ms": float(rng.lognormal(6, 0.5)),
                    "input_tokens": 500, "output_tokens": 100,
                    "scores": {"groundedness": float(rng.random())},
                }  # fmt: skip
                out.append(RawMessage(json.dumps(event).encode(), None, 0, len(out)))
        return out

    pipeline = Pipeline(allowed_lateness_s=3600, dedup_window=0)
    pipeline.process(chunk(0, range(1)))  # warm: imports, caches, first allocations
    gc.collect()
    before = rss_bytes()
    for minute in range(3):
        for start in range(0, n, 250):  # small chunks: the input is not what is measured
            pipeline.process(chunk(minute, range(start, min(n, start + 250))))
    gc.collect()
    assert pipeline.aggregator.open_buckets == 3 * n
    return rss_bytes() - before


def measure_routes(n: int) -> int:
    import numpy as np

    from tracewatch.detectors.buckets import ClosedBucket
    from tracewatch.detectors.columns import EventColumns
    from tracewatch.detectors.engine import AlertEngine
    from tracewatch.detectors.stats import BucketStats
    from tracewatch.schemas.event import TraceEvent

    rng = np.random.default_rng(2)
    template = [
        TraceEvent.model_validate(
            {"event_id": f"e{i}", "trace_id": "t", "ts": T0 + i, "kind": "llm", "route": "r",
             "cost_usd": float(rng.lognormal(-6, 0.3)), "latency_ms": float(rng.lognormal(6, 0.3)),
             "input_tokens": 500, "output_tokens": 100, "loop_depth": i % 5,
             "scores": {"groundedness": float(rng.beta(17, 3))}}
        )
        for i in range(20)
    ]  # fmt: skip
    stats = BucketStats()
    stats.add(EventColumns.from_events(template))
    engine = AlertEngine()
    gc.collect()
    before = rss_bytes()
    for minute in range(65):
        engine.observe(
            [
                ClosedBucket((f"route/{r}", "m", "v1"), T0 + 60 * minute, 60.0, False, stats)
                for r in range(n)
            ]
        )
    gc.collect()
    assert engine.routes == n
    return rss_bytes() - before


def measure_traces(n: int) -> int:
    from tracewatch.detectors.breakers import BreakerBoard
    from tracewatch.schemas.event import TraceEvent

    events = [
        TraceEvent.model_validate(
            {"event_id": f"{t}-{s}", "trace_id": f"trace-{t}", "ts": T0 + s * 5 + t * 1e-4,
             "kind": "tool" if s % 2 else "agent_step", "route": f"agent/{t % 20}",
             "loop_depth": s, "tool_name": "search", "tool_args_hash": f"h{s}",
             "cost_usd": 0.01}
        )
        for s in range(8)
        for t in range(n)
    ]  # fmt: skip
    board = BreakerBoard(max_traces=max(n, 1))
    gc.collect()
    before = rss_bytes()
    board.observe(events)
    del events
    gc.collect()
    assert len(board) == n
    return rss_bytes() - before


def measure_ids(n: int) -> int:
    import uuid

    from tracewatch.detectors.dedup import RecentIds

    window = RecentIds(capacity=n, window_s=10 * n)
    gc.collect()
    before = rss_bytes()
    for start in range(0, n, 5000):  # the id strings are kept by the window alone, as live
        chunk = range(start, min(n, start + 5000))
        window.repeats(
            [str(uuid.UUID(int=i)) for i in chunk],
            [i % 6 for i in chunk],
            [T0 + i / 1000 for i in chunk],
        )
    gc.collect()
    assert len(window) == n
    return rss_bytes() - before


PARTS = {
    "keys": measure_keys,
    "routes": measure_routes,
    "traces": measure_traces,
    "ids": measure_ids,
}


def at_caps() -> list[tuple[str, int]]:
    from tracewatch.config import WorkerSettings

    worker = WorkerSettings()
    return [
        ("keys", worker.bucket_max_keys),
        ("routes", 1000),
        ("traces", worker.breaker_max_traces),
        ("ids", worker.dedup_window * 6),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 1000, 10000])
    parser.add_argument("--route-sizes", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--at-caps", action="store_true", help="each part at its default cap")
    parser.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:  # the child: one measurement, in a fresh process
        print(PARTS[args.part](args.n))
        return
    print(f"{'state':8} {'n':>7} {'RSS growth':>12} {'per item':>10}")
    plan = [("keys", n) for n in args.sizes] + [("routes", n) for n in args.route_sizes]
    plan += [("traces", n) for n in args.sizes] + [("ids", n) for n in args.sizes]
    if args.at_caps:
        plan = at_caps()
    for part, n in plan:
        out = subprocess.run(
            [sys.executable, __file__, "--part", part, "--n", str(n)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        grown = int(out.stdout.strip().splitlines()[-1])
        print(f"{part:8} {n:>7} {grown / 2**20:>9.1f} MiB {grown / n:>8,.0f} B")


if __name__ == "__main__":
    main()
