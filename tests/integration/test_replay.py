"""``tracewatch replay`` runs the pipeline over a file into a real (embedded) ClickHouse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tracewatch.config import ClickHouseSettings
from tracewatch.demo.traffic import DemoTraffic, invalid_events
from tracewatch.sinks.clickhouse import ClickHouseSink

pytestmark = pytest.mark.integration

T0 = 1_795_341_600.0


def test_replay_writes_every_valid_event_into_minutes_and_reports_invalid_lines(
    tmp_path: Path,
) -> None:
    valid = DemoTraffic(seed=4).take(T0, 20_000, rate_per_s=100.0)
    bad = invalid_events(np.random.default_rng(2), 50)
    lines = [json.dumps(e).encode() for e in valid] + [raw.replace(b"\n", b" ") for _, raw in bad]
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"\n".join(lines) + b"\n")
    alerts = tmp_path / "alerts.jsonl"
    env = {**os.environ, "TRACEWATCH_HOME": str(tmp_path)}
    tracewatch = str(Path(sys.executable).with_name("tracewatch"))
    result = subprocess.run(
        [tracewatch, "replay", str(events_file), "--alerts-out", str(alerts)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"{len(valid)} valid, 50 invalid" in result.stderr
    assert alerts.exists()

    sink = ClickHouseSink(ClickHouseSettings(dsn=f"chdb://{tmp_path / 'clickhouse'}")).connect()
    try:
        rows = sink.query(
            "SELECT route, sum(count), sum(error_count) FROM tracewatch.stats_1m GROUP BY route"
        ).rows
    finally:
        sink.close()
    by_route: dict[str, list[int]] = {}
    for e in valid:
        totals = by_route.setdefault(str(e["route"]), [0, 0])
        totals[0] += 1
        totals[1] += e.get("status") == "error"
    assert {r[0]: [r[1], r[2]] for r in rows} == by_route


def test_replay_of_a_missing_file_is_a_clear_usage_error(tmp_path: Path) -> None:
    tracewatch = str(Path(sys.executable).with_name("tracewatch"))
    result = subprocess.run(
        [tracewatch, "replay", str(tmp_path / "nope.jsonl"), "--alerts-out", str(tmp_path / "a")],
        env={**os.environ, "TRACEWATCH_HOME": str(tmp_path)}, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2 and "no such file" in result.stderr


def test_replay_writes_breaker_transitions_for_a_runaway_trace_only(tmp_path: Path) -> None:
    normal = DemoTraffic(seed=6).take(T0, 5_000, rate_per_s=50.0)
    runaway = [
        {"event_id": f"loop-{i}", "trace_id": "loop", "ts": T0 + 5 + i, "kind": "tool",
         "route": "agent/coder", "tool_name": "search", "tool_args_hash": "same", "cost_usd": 0.01}
        for i in range(8)
    ]  # fmt: skip
    events = sorted([*normal, *runaway], key=lambda e: float(e["ts"]))  # type: ignore[arg-type]
    events_file = tmp_path / "events.jsonl"
    events_file.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    breakers = tmp_path / "breakers.jsonl"
    tracewatch = str(Path(sys.executable).with_name("tracewatch"))
    result = subprocess.run(
        [tracewatch, "replay", str(events_file), "--alerts-out", str(tmp_path / "alerts.jsonl"),
         "--breakers-out", str(breakers)],
        env={**os.environ, "TRACEWATCH_HOME": str(tmp_path)}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    signals = [json.loads(line) for line in breakers.read_text().splitlines()]
    assert [(s["scope"], s["state"]) for s in signals][:1] == [("trace:loop", "open")]
    assert {s["scope"] for s in signals} == {"trace:loop"}
    assert "called 6 times with the same arguments" in signals[0]["reason"]
    assert signals[0]["opened_at"].startswith("2026-11-22T")  # event time of the 6th call
