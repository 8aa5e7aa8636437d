"""infra/grafana/tracewatch-dashboard.json: it parses, it is wired to Grafana's ClickHouse
data source, and every query in it, with the plugin's macros expanded the way the plugin
documents them, runs against a real embedded ClickHouse (chDB) holding the tracewatch
schema and returns data for a short range (raw events) and a long one (the rollup).
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tracewatch.config import ClickHouseSettings
from tracewatch.sinks.clickhouse import ClickHouseSink

DASHBOARD = Path(__file__).resolve().parents[1] / "infra" / "grafana" / "tracewatch-dashboard.json"
PLUGIN = "grafana-clickhouse-datasource"
ROUTE = "support/it's"  # a quote in the name: ${route:sqlstring} must escape it

INSERT = """
INSERT INTO {db:Identifier}.events
    (event_id, trace_id, ts, kind, route, model, prompt_version, latency_ms, cost_usd, status,
     loop_depth, scores)
SELECT toString(number), toString(number), toDateTime64({t0:Float64} + number * 3, 3, 'UTC'),
       'llm', {route:String}, 'gpt-4o', ['v1', 'v2'][number % 2 + 1],
       300 * exp(randNormal(0, 0.5)), 0.002 * exp(randNormal(0, 0.8)),
       if(number % 9 = 0, 'timeout', 'ok'), toUInt32(number % 5),
       if(number % 2 = 0, map('groundedness', randUniform(0, 1)), map())
FROM numbers({n:UInt64})
"""
INSERT_MINUTES = """
INSERT INTO {db:Identifier}.stats_1m (route, model, prompt_version, minute, count, cost_p95)
SELECT {route:String}, 'gpt-4o', 'v1', toStartOfMinute(now() - toIntervalMinute(number)), 10,
       0.001 * (1 + number % 7)
FROM numbers(120)
"""


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def expand(sql: str, database: str, start: int, end: int, interval: int) -> str:
    """The plugin's macros and Grafana's variables as the plugin's docs say they expand."""
    macros = [
        (r"\$__timeFilter_ms\(([^)]+)\)", lambda m: f"{m[1]} >= fromUnixTimestamp64Milli("
         f"{start * 1000}) AND {m[1]} <= fromUnixTimestamp64Milli({end * 1000})"),
        (r"\$__timeFilter\(([^)]+)\)",
         lambda m: f"{m[1]} >= toDateTime({start}) AND {m[1]} <= toDateTime({end})"),
        (r"\$__timeInterval\(([^)]+)\)",
         lambda m: f"toStartOfInterval(toDateTime({m[1]}), INTERVAL {interval} second)"),
        (r"\$__fromTime\b", lambda m: f"toDateTime({start})"),
        (r"\$__toTime\b", lambda m: f"toDateTime({end})"),
        (r"\$__interval_s\b", lambda m: str(interval)),
        (r"\$\{route:sqlstring\}", lambda m: "'" + ROUTE.replace("'", "''") + "'"),
        (r"\$\{database\}", lambda m: database),
    ]  # fmt: skip
    for pattern, replacement in macros:
        sql = re.sub(pattern, replacement, sql)
    assert "$" not in sql, f"a macro or variable the test does not know: {sql}"
    return sql


@pytest.fixture
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseSink]:
    engine = tmp_path_factory.getbasetemp() / "chdb"  # one per process: every test shares it
    settings = ClickHouseSettings(dsn=f"chdb://{engine}", database=f"g_{uuid.uuid4().hex[:12]}")
    with ClickHouseSink(settings) as opened:
        t0 = (math.floor(time.time() / 3600) - 30) * 3600  # 30 hours of events, one every 3 s
        params = {"db": opened.database, "route": ROUTE}
        opened.query(INSERT, {**params, "t0": t0, "n": 36_000}, readonly=False)
        opened.query(INSERT_MINUTES, params, readonly=False)
        yield opened


def test_the_dashboard_is_wired_to_the_clickhouse_plugin() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == PLUGIN
    assert variables["route"]["type"] == "query" and not variables["route"]["multi"]
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels) >= 7
    titles = " ".join(p["title"] for p in panels)
    for shown in ("p95 and p50 cost", "latency", "error rate", "score means", "loop depth"):
        assert shown in titles
    for panel in panels:
        for target in panel["targets"]:
            assert target["datasource"] == {"type": PLUGIN, "uid": "${datasource}"}
            assert target["editorType"] == "sql" and target["format"] in (0, 1)
            assert (target["format"] == 0) == (panel["type"] == "timeseries")


@pytest.mark.parametrize(("hours", "interval"), [(2, 60), (48, 3600)], ids=["events", "rollup"])
def test_every_panel_query_runs_and_finds_the_data(
    sink: ClickHouseSink, hours: int, interval: int
) -> None:
    end = math.floor(time.time())
    start = end - hours * 3600
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            sql = expand(target["rawSql"], sink.database, start, end, interval)
            result = sink.query(sql)
            assert result.rows, f"{panel['title']}: no rows over {hours} h"
            if panel["type"] == "timeseries":
                assert result.columns[0] == "time"
                assert len({row[0] for row in result.rows}) > 1, panel["title"]


def test_the_route_variable_lists_the_routes(sink: ClickHouseSink) -> None:
    [route] = [v for v in dashboard()["templating"]["list"] if v["name"] == "route"]
    sql = expand(route["query"], sink.database, 0, 1, 60)
    assert sink.query(sql).rows == [(ROUTE,)]
