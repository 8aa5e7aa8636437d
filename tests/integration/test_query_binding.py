"""User input reaches ClickHouse as data, never as SQL: ``tracewatch query`` on a real chDB.

Route names that would break string-built SQL (quotes, comments, backslashes,
placeholder look-alikes, right-to-left and astral text) are stored, then asked
for through every query command. Each must come back exactly, alone, and the
tables must still be there afterwards. Every command runs as its own process,
as a user would run it (an embedded chDB is opened by one process at a time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

TRACEWATCH = str(Path(sys.executable).with_name("tracewatch"))
HOSTILE = [
    "x' OR 1=1 --",
    "a\\'; DROP TABLE tracewatch.events; --",
    "{route:String} {db:Identifier} $1 %s ?",
    '\u05e9\u202e\U0001f642 e\u0301 "quoted" \\n /* */',
]
DECOY = "support/chat"
ROUTES = [*HOSTILE, DECOY]

SEED = """
import json, sys
from tracewatch.config import ClickHouseSettings
from tracewatch.sinks.clickhouse import ClickHouseSink

sink = ClickHouseSink(ClickHouseSettings(dsn=sys.argv[1])).connect()
for n, route in json.loads(sys.argv[2]):
    p = {"db": "tracewatch", "route": route, "n": n}
    sink.query("INSERT INTO {db:Identifier}.stats_1m (route, model, minute, late, count) "
               "SELECT {route:String}, {route:String}, toStartOfMinute(now()) - 600, 0, {n:UInt64}",
               p, readonly=False)
    sink.query("INSERT INTO {db:Identifier}.events (event_id, trace_id, ts, kind, route) "
               "SELECT concat({route:String}, toString(number)), 't', now64(3) - 600, 'llm', "
               "{route:String} FROM numbers({n:UInt64})", p, readonly=False)
sink.close()
"""


def environment(home: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("TRACEWATCH_")}
    return {**keep, "TRACEWATCH_HOME": str(home), "TRACEWATCH_CLICKHOUSE_DSN": f"chdb://{home}/ch"}


def tracewatch(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TRACEWATCH, *args], capture_output=True, text=True, timeout=120, env=environment(home)
    )


def json_rows(home: Path, *args: str) -> list[dict[str, Any]]:
    result = tracewatch(home, "query", *args, "--json")
    assert result.returncode == 0, result.stderr
    decoder, text, rows = json.JSONDecoder(), result.stdout, []
    at = 0
    while (at := len(text) - len(text[at:].lstrip())) < len(text):
        row, at = decoder.raw_decode(text, at)
        rows.append(row)
    return rows


@pytest.fixture
def home(tmp_path: Path) -> Path:
    counts = [[100 + i, route] for i, route in enumerate(ROUTES)]
    seeded = subprocess.run(
        [sys.executable, "-c", SEED, f"chdb://{tmp_path}/ch", json.dumps(counts)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment(tmp_path),
    )
    assert seeded.returncode == 0, seeded.stderr
    return tmp_path


def test_hostile_route_names_round_trip_as_data(home: Path) -> None:
    count = {route: 100 + i for i, route in enumerate(ROUTES)}
    for route in HOSTILE:
        rows = json_rows(home, "series", route, "--since", "1h")
        assert [(r["model"], r["n"]) for r in rows] == [(route, count[route])], route

    rows = json_rows(
        home,
        "sql",
        "SELECT route, count FROM {db:Identifier}.stats_1m WHERE route = {route:String}",
        "--param",
        f"route={HOSTILE[0]}",
    )
    assert rows == [{"route": HOSTILE[0], "count": count[HOSTILE[0]]}]

    top = json_rows(home, "top", "--by", "count", "--since", "1h", "--limit", "100")
    assert {r["route"]: r["count"] for r in top} == count  # every table and row still there


def test_sql_in_a_statistic_name_or_a_write_is_refused(home: Path) -> None:
    refused = tracewatch(home, "query", "top", "--by", "score:x') OR 1=1 --")
    assert refused.returncode == 2 and "unknown statistic" in refused.stderr
    dropped = tracewatch(home, "query", "sql", "DROP TABLE {db:Identifier}.events")
    assert dropped.returncode == 2 and "only one SELECT" in dropped.stderr, dropped.stderr
    rows = json_rows(home, "sql", "SELECT count() AS n FROM {db:Identifier}.events")
    assert rows == [{"n": sum(100 + i for i in range(len(ROUTES)))}]
