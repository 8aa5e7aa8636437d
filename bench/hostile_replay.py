"""``tracewatch replay`` of a hostile stream against a normal one (issue 16).

The issue's experiment: 300 000 valid events each with its own ``prompt_version``
over 20 000 invented routes, with 300 events dated a year ahead mixed in, slowed
replay from about 33 000 to 2 461 events/s, wrote 300 300 minute rows and counted
295 005 events late. This replays, each in a process and embedded ClickHouse of
its own:

1. normal: ``--events`` demo events (recent: an hour ago);
2. hostile: the same number of events, each with its own prompt version over
   ``--routes`` invented routes, plus ``--future`` events dated a year ahead.

and prints events/s of both, their ratio (the issue asks for at least 1/3), the
minute rows written, the events refused as ``future_timestamp`` and the late
count (0: the rest stays on time).

    .venv/bin/python bench/hostile_replay.py [--events 300000] [--routes 20000] [--future 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tracewatch.demo.traffic import DemoTraffic


def normal_events(t0: float, n: int) -> list[dict[str, Any]]:
    return DemoTraffic(seed=16).take(t0, n, rate_per_s=100.0)


def hostile_events(t0: float, n: int, routes: int, future: int) -> list[dict[str, Any]]:
    span = 1800.0  # half an hour of event time, as the normal stream's
    out: list[dict[str, Any]] = [
        {"event_id": f"h{i}", "trace_id": f"scan-{i}", "ts": t0 + i * span / n, "kind": "llm",
         "route": f"scan/{i % routes}", "model": "m", "prompt_version": f"req-{i}",
         "latency_ms": 10.0 + i % 7, "cost_usd": 0.001}
        for i in range(n)
    ]  # fmt: skip
    every = max(1, n // max(1, future))
    for j in range(future):
        ahead = dict(out[j * every], event_id=f"future-{j}", ts=time.time() + 365 * 86400)
        out.insert(j * every + j, ahead)
    return out


def replay(events: list[dict[str, Any]], home: Path) -> dict[str, Any]:
    """One ``replay_file`` in a child process (chDB: one engine per process)."""
    home.mkdir(parents=True)
    path = home / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from tracewatch.config import Settings\n"
        "from tracewatch.replay import replay_file\n"
        "h = Path(sys.argv[1])\n"
        "r = replay_file(h / 'events.jsonl', h / 'alerts.jsonl', None, Settings())\n"
        "print(json.dumps({'events_per_s': r.events_per_s, 'seconds': r.seconds,\n"
        "  'minutes': r.minutes_written, 'late': r.counters.late,\n"
        "  'rejected': dict(r.counters.rejected), 'valid': r.counters.valid}))\n"
    )
    env = {**os.environ, "TRACEWATCH_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(home)], env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"replay of {home.name} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--routes", type=int, default=20_000)
    parser.add_argument("--future", type=int, default=300)
    args = parser.parse_args()
    t0 = (time.time() // 60) * 60 - 3600
    with tempfile.TemporaryDirectory() as tmp:
        normal = replay(normal_events(t0, args.events), Path(tmp) / "normal")
        hostile = replay(
            hostile_events(t0, args.events, args.routes, args.future), Path(tmp) / "hostile"
        )
    for name, r in (("normal", normal), ("hostile", hostile)):
        print(
            f"{name:8} {r['events_per_s']:>9,.0f} events/s  {r['minutes']:>7} minute rows  "
            f"late {r['late']:>6}  refused {r['rejected']}"
        )
    ratio = hostile["events_per_s"] / normal["events_per_s"]
    print(f"hostile / normal speed: {ratio:.2f} (the issue asks for >= 0.33)")


if __name__ == "__main__":
    main()
