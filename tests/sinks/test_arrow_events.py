"""The Arrow insert stores exactly what the column-list insert stored, in a real chDB."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tracewatch.config import ClickHouseSettings
from tracewatch.demo.traffic import DemoTraffic
from tracewatch.schemas.validation import decode_records
from tracewatch.sinks.arrow_events import events_table
from tracewatch.sinks.clickhouse import ClickHouseSink, event_columns
from tracewatch.sinks.clickhouse_schema import EVENT_COLUMNS

T0 = 1_795_341_600.0

ODD_EVENTS: list[dict[str, Any]] = [
    {"event_id": "odd-1", "trace_id": "t", "ts": T0 + 0.0015, "kind": "llm", "route": "r",
     "attributes": {"flag": True, "off": False, "n": 12, "x": 0.1, "big": 2**40, "s": "é😀"},
     "scores": {"groundedness": 0.25, "hallucination": 1}},
    {"event_id": "odd-2", "trace_id": "t", "ts": "2026-11-22T10:00:00.999Z", "kind": "tool",
     "route": "r/ü", "tool_name": "search", "tool_args_hash": "h", "loop_depth": 0,
     "input_tokens": 0, "output_tokens": 2**31 - 1, "cost_usd": 0, "status": "timeout"},
    {"event_id": "odd-3", "trace_id": "t", "ts": T0, "kind": "eval", "route": "r",
     "scores": {"a": 0.0, "b": 1.0, "c": 0.5}, "retry_count": 3, "latency_ms": 0},
]  # fmt: skip


@pytest.fixture
def sink(tmp_path_factory: pytest.TempPathFactory) -> ClickHouseSink:
    engine: Path = tmp_path_factory.getbasetemp() / "chdb"  # one engine per test process
    name = f"t_{uuid.uuid4().hex[:12]}"
    return ClickHouseSink(ClickHouseSettings(dsn=f"chdb://{engine}", database=name)).connect()


def test_arrow_and_column_inserts_store_the_same_rows(sink: ClickHouseSink) -> None:
    demo = DemoTraffic(seed=6).take(T0, 3000)
    values = [json.dumps(e).encode() for e in [*demo, *ODD_EVENTS]]
    records, _, rejected = decode_records(values)
    assert not rejected
    offsets = list(range(len(records)))
    partitions = [o % 3 for o in offsets]
    sink.write_events(event_columns(records, partitions, offsets, "columns"), "a")
    sink.write_event_table(events_table(records, partitions, offsets, "arrow"), "b")

    names = ", ".join(c for c in EVENT_COLUMNS if c != "kafka_topic")
    rows = sink.query(
        f"SELECT kafka_topic, {names} FROM {{db:Identifier}}.events "
        "ORDER BY kafka_topic, kafka_offset",
        {"db": sink.database},
    ).rows
    by_topic: dict[str, list[tuple[Any, ...]]] = {"columns": [], "arrow": []}
    for row in rows:
        by_topic[row[0]].append(tuple(row[1:]))
    assert len(by_topic["arrow"]) == len(records)
    assert by_topic["arrow"] == by_topic["columns"]
    odd = {row[0]: row for row in by_topic["arrow"] if str(row[0]).startswith("odd-")}
    attributes = odd["odd-1"][EVENT_COLUMNS.index("attributes")]
    assert attributes == {
        "flag": "true", "off": "false", "n": "12", "x": "0.1", "big": str(2**40), "s": "é😀"
    }  # fmt: skip
    assert odd["odd-2"][EVENT_COLUMNS.index("ts")].microsecond == 999_000


def test_an_empty_batch_inserts_nothing(sink: ClickHouseSink) -> None:
    sink.write_event_table(events_table([], [], [], "t"), "empty")
    count = sink.query("SELECT count() FROM {db:Identifier}.events", {"db": sink.database})
    assert count.rows == [[0]] or count.rows == [(0,)]


def test_cost_source_says_provided_missing_or_computed() -> None:
    values = [
        json.dumps({"event_id": f"e{i}", "trace_id": "t", "ts": T0, "kind": "llm", "route": "r",
                    **({"cost_usd": 0.1} if i != 1 else {})}).encode()
        for i in range(3)
    ]  # fmt: skip
    records, _, _ = decode_records(values)
    table = events_table(records, [0, 0, 0], [0, 1, 2], "t", [False, False, True])
    assert table.column("cost_source").to_pylist() == ["provided", "missing", "computed"]


def test_recent_event_ids_are_the_newest_per_partition_within_the_lookback(
    sink: ClickHouseSink,
) -> None:
    """What a restart gives the duplicate-id window back (streams/warm_up.py)."""
    demo = DemoTraffic(seed=7).take(T0, 600, rate_per_s=1.0)  # ten minutes, one a second
    records, _, rejected = decode_records([json.dumps(e).encode() for e in demo])
    assert not rejected
    offsets = list(range(len(records)))
    partitions = [o % 3 for o in offsets]
    sink.write_event_table(events_table(records, partitions, offsets, "ids"), "ids")
    newest = max(r.ts for r in records)

    got = sink.recent_event_ids("ids", lookback_s=120.0, per_partition=1_000)
    want = [
        (p, o, r.event_id, r.ts)
        for p in range(3)
        for r, rp, o in zip(records, partitions, offsets, strict=True)
        if rp == p and r.ts >= newest - 120.0
    ]
    assert [g[:3] for g in got] == [w[:3] for w in want]
    assert [g[3] for g in got] == pytest.approx([w[3] for w in want], abs=1e-3)

    capped = sink.recent_event_ids("ids", lookback_s=1e12, per_partition=5)
    for p in range(3):
        mine = [r.event_id for r, rp in zip(records, partitions, strict=True) if rp == p]
        assert [i for q, _, i, _ in capped if q == p] == mine[-5:]
