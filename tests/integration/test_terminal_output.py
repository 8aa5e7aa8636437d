"""Route, tool and scope names from events reach a terminal as text, never as commands.

Events with escape sequences in their route (a window-title OSC, a screen clear, a
one-byte C1 CSI, a right-to-left override, DEL, markup) are stored in the embedded
ClickHouse and shown by ``tracewatch query top`` and
``query trace``; breaker signals with such scopes and reasons go through the real
breakers topic to ``tracewatch breakers``. No control character may be printed,
and ``--json`` must still give back the exact names.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tracewatch.config import KafkaSettings
from tracewatch.schemas.breaker import BreakerSignal
from tracewatch.sinks.kafka_breakers import BreakerPublisher
from tracewatch.streams.topics import ensure_topics

pytestmark = pytest.mark.integration

#: what a terminal obeys: C0 (ESC, BEL, CR …), DEL, C1 (a one-byte CSI is 0x9b), bidi controls
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

TRACEWATCH = str(Path(sys.executable).with_name("tracewatch"))
ROUTES = [
    "title\x1b]0;pwned\x07/chat",
    "clear\x1b[2J\x1b[H/chat",
    "c1\x9b31m/red",
    "bidi\u202eexe.txt",
    "del\x7f/[bold]markup[/bold]",
]


def cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRACEWATCH_")}
    return subprocess.run(
        [TRACEWATCH, *args],
        env={**clean, "TRACEWATCH_HOME": str(home), "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_shown_as_text(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr[-2000:]
    found = UNSAFE.search(done.stdout + done.stderr)
    assert found is None, f"{found.group()!r} reached the terminal:\n{done.stdout!r}"


#: stores the events of a JSON-lines file in the embedded ClickHouse, as the worker does
#: (in a process of its own: the embedded engine opens in one process at a time)
STORE = """
import json, sys
from tracewatch.config import ClickHouseSettings
from tracewatch.schemas.event import TraceEvent
from tracewatch.schemas.record import record_from_model
from tracewatch.sinks.clickhouse import ClickHouseSink, event_columns
lines = open(sys.argv[1]).read().splitlines()
records = [record_from_model(TraceEvent.model_validate_json(line)) for line in lines]
with ClickHouseSink(ClickHouseSettings()) as sink:
    n = len(records)
    sink.write_events(event_columns(records, [0] * n, list(range(n))), "terminal-test")
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """Events with hostile routes and tool names, stored in the embedded ClickHouse."""
    t0 = time.time() - 600
    events = [
        {
            "event_id": f"e{n}", "trace_id": "trace-1", "ts": t0 + n, "kind": "tool",
            "route": route, "tool_name": f"tool\x1b[31m{n}\u202e", "latency_ms": 10.0 + n,
            "cost_usd": 0.001 * (n + 1),
        }
        for n, route in enumerate(ROUTES)
    ]  # fmt: skip
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    done = subprocess.run(
        [sys.executable, "-c", STORE, str(path)],
        env={**os.environ, "TRACEWATCH_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return tmp_path


def test_query_top_and_trace_print_routes_and_tools_as_text(home: Path) -> None:
    assert_shown_as_text(cli(home, "query", "top", "--by", "count", "--since", "1h"))
    assert_shown_as_text(cli(home, "query", "trace", "trace-1"))


def test_json_output_keeps_the_exact_names(home: Path) -> None:
    done = cli(home, "query", "top", "--by", "count", "--since", "1h", "--json")
    assert_shown_as_text(done)
    decoder, text, rows, at = json.JSONDecoder(), done.stdout, [], 0
    while (at := len(text) - len(text[at:].lstrip())) < len(text):
        row, at = decoder.raw_decode(text, at)
        rows.append(row)
    assert sorted(row["route"] for row in rows) == sorted(ROUTES)


def test_breakers_print_scopes_and_reasons_as_text(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    ensure_topics(kafka_settings)
    now = datetime.now(UTC)
    with BreakerPublisher(kafka_settings) as publisher:
        publisher.publish(
            [
                BreakerSignal(
                    scope=f"route:{route}", state="open", reason=f"loop\x1b[2J {route}",
                    opened_at=now, ttl_s=600,
                )
                for route in ROUTES
            ]
        )  # fmt: skip
    done = cli(
        tmp_path,
        "breakers",
        TRACEWATCH_KAFKA_BOOTSTRAP_SERVERS=kafka_settings.bootstrap_servers,
        TRACEWATCH_KAFKA_BREAKERS_TOPIC=kafka_settings.breakers_topic,
    )
    assert_shown_as_text(done)
    assert "route:title\\x1b]0;pwned\\x07/chat" in done.stdout  # shown, escaped
