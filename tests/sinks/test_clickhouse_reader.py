"""The query guard and the read-only reader on a real embedded ClickHouse (chDB).

Every query a person can send (``tracewatch query``, ``/query``, the dashboard)
goes through ``ClickHouseReader``: these are the statements it must run and the
ones it must refuse, tricky spellings included, and the limits it holds. Each
test reads a database of its own in the one chDB engine of this test process.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tracewatch.config import ClickHouseSettings, QuerySettings
from tracewatch.dashboard import queries as dashboard
from tracewatch.errors import QueryRefused
from tracewatch.queries import (
    prompt_change_query,
    prompt_first_seen_query,
    series_query,
    top_routes_query,
    trace_timeline_query,
)
from tracewatch.sinks.clickhouse import ClickHouseSink
from tracewatch.sinks.clickhouse_reader import ClickHouseReader, session_settings
from tracewatch.sinks.query_guard import AstNode, check_select, parse_explain_ast

LIMITS = QuerySettings(
    max_execution_time_s=1.5, max_result_rows=1000, max_memory_bytes=64 * 1024 * 1024
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClickHouseSink, Any]]:
    """A writer (which created the tables) and a reader on a database of their own."""
    engine: Path = tmp_path_factory.getbasetemp() / "chdb"
    settings = ClickHouseSettings(dsn=f"chdb://{engine}", database=f"q_{uuid.uuid4().hex[:12]}")
    sink = ClickHouseSink(settings).connect()
    reader = ClickHouseReader(settings, LIMITS).connect()
    sink.query(
        "INSERT INTO {db:Identifier}.events (event_id, trace_id, ts, kind, route) "
        "SELECT toString(number), 't', now64(3) - 60, 'llm', 'r' FROM numbers(10)",
        {"db": sink.database},
        readonly=False,
    )
    yield sink, reader
    reader.close()
    sink.close()


@pytest.fixture
def reader(store: tuple[ClickHouseSink, ClickHouseReader]) -> ClickHouseReader:
    return store[1]


def ask(reader: ClickHouseReader, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    return reader.query(sql, {"db": reader.database, **params}).rows


ACCEPTED = [
    ("SELECT 1", [(1,)]),
    ("select 1;", [(1,)]),
    ("/* ; DROP TABLE x */ SELECT 1 -- ; DROP TABLE x", [(1,)]),
    ("SELECT count() FROM {db:Identifier}.events", [(10,)]),
    ("SELECT count() FROM events", [(10,)]),  # the reader's own database
    ("WITH r AS (SELECT route FROM {db:Identifier}.events) SELECT count() FROM r", [(10,)]),
    ("SELECT x FROM (SELECT 1 AS x UNION ALL SELECT 2 AS x) ORDER BY x", [(1,), (2,)]),
    ("SELECT number FROM numbers(3) INTERSECT SELECT number FROM numbers(2) ORDER BY 1",
     [(0,), (1,)]),
    ("SELECT 1 FROM system.one", [(1,)]),
    ("SELECT sum(x) FROM values('x UInt8', 1, 2)", [(3,)]),
    ("SELECT count() FROM generate_series(1, 7)", [(7,)]),
    ("SELECT count() FROM numbers(10) WHERE number % 2 = 0", [(5,)]),  # % with parameters
    ("SELECT format('{}-{}', 'a', 'b')", [("a-b",)]),  # the string function, not the table one
    ("SELECT 'file(''/etc/passwd'')' AS file", [("file('/etc/passwd')",)]),
    ("SELECT count() FROM numbers(10) WHERE number IN (SELECT number FROM numbers(4))", [(4,)]),
    ("SELECT count() FROM numbers(20) WHERE toString(number) IN "
     "(SELECT event_id FROM {db:Identifier}.events)", [(10,)]),
    ("SELECT 'x' AS `a b`, '\u05e9\u202e\U0001f642' AS s", [("x", "\u05e9\u202e\U0001f642")]),
]  # fmt: skip


@pytest.mark.parametrize(("sql", "rows"), ACCEPTED, ids=[s for s, _ in ACCEPTED])
def test_one_select_over_the_tracewatch_tables_runs(
    reader: ClickHouseReader, sql: str, rows: list[tuple[Any, ...]]
) -> None:
    assert ask(reader, sql) == rows


NAMED = {
    "top": (top_routes_query("cost_p95"), {"since": "2026-01-01 00:00:00.000",
                                           "until": "2036-01-01 00:00:00.000", "limit": 10}),
    "top_score": (top_routes_query("score:groundedness"),
                  {"since": "2026-01-01 00:00:00.000", "until": "2036-01-01 00:00:00.000",
                   "limit": 10, "score": "groundedness"}),
    "series": (series_query(), {"route": "r", "since": "2026-01-01 00:00:00.000",
                                "until": "2036-01-01 00:00:00.000", "limit": 10}),
    "first_seen": (prompt_first_seen_query(), {"route": "r", "to_version": "v2"}),
    "prompt_change": (prompt_change_query(), {"route": "r", "first_seen_ms": 1, "window_s": 60,
                                              "from_version": "", "to_version": "v2"}),
    "trace": (trace_timeline_query(), {"trace": "t", "limit": 100}),
    "dash_routes": (dashboard.ROUTES_SQL, dashboard.routes_parameters("x", 0, 3600)),
    "dash_raw": (dashboard.series_sql(dashboard.plan_series("r", 0, 3600)),
                 dashboard.plan_series("r", 0, 3600).parameters("x")),
    "dash_rollup": (dashboard.series_sql(dashboard.plan_series("r", 0, 86400 * 7)),
                    dashboard.plan_series("r", 0, 86400 * 7).parameters("x")),
    "dash_traces": (dashboard.TRACE_ROUTES_SQL, {"ids": ["t", "u"]}),
}  # fmt: skip


@pytest.mark.parametrize("name", NAMED)
def test_every_named_and_dashboard_query_passes_the_guard(
    reader: ClickHouseReader, name: str
) -> None:
    sql, params = NAMED[name]
    reader.query(sql, {**params, "db": reader.database})  # runs, whatever the rows


REFUSED = [
    ("SELECT 1; SELECT 2", "one SELECT"),
    ("SELECT 1; CREATE DATABASE pwned; SELECT 1", "one SELECT"),
    ("SELECT 1 /* \u202e */; DROP TABLE {db:Identifier}.events", "one SELECT"),
    ("CREATE TABLE {db:Identifier}.pwned (a UInt8) ENGINE = Memory", "CREATE is not"),
    ("DROP TABLE {db:Identifier}.events", "DROP is not"),
    ("ALTER TABLE {db:Identifier}.events DELETE WHERE 1", "ALTER is not"),
    ("INSERT INTO {db:Identifier}.events (event_id) SELECT 'x'", "INSERT is not"),
    ("INSERT INTO FUNCTION url('http://127.0.0.1:9/', 'CSV', 'a String') SELECT 'x'",
     "INSERT is not"),
    ("SET max_threads = 1", "SET is not"),
    ("USE system", "USE is not"),
    ("EXPLAIN SELECT 1", "EXPLAIN is not"),
    ("SHOW TABLES", "SHOW is not"),
    ("DESCRIBE TABLE {db:Identifier}.events", "DESCRIBE is not"),
    ("SELECT file('/etc/passwd')", "file() is not allowed"),
    ("select FiLe('/etc/passwd')", "FiLe() is not allowed"),
    ("SELECT `file`('/etc/passwd')", "file() is not allowed"),
    ("SELECT x FROM (SELECT file('/proc/self/environ') AS x)", "file() is not allowed"),
    ("SELECT 1 WHERE 'a' IN (SELECT file('/proc/self/environ'))", "file() is not allowed"),
    ("SELECT length(file('/etc/passwd')) > 0 FROM numbers(1)", "file() is not allowed"),
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "table function file()"),
    ("SELECT * FROM numbers(1) AS n JOIN url('http://127.0.0.1:9/', 'CSV', 'a String') AS u "
     "ON 1", "table function url()"),
    ("SELECT * FROM s3('http://127.0.0.1:9/b/k.csv')", "table function s3()"),
    ("SELECT * FROM remote('127.0.0.1', system.one)", "table function remote()"),
    ("SELECT * FROM executable('id', 'TSV', 'x String')", "table function executable()"),
    ("SELECT * FROM Python(df)", "table function Python()"),
    ("SELECT * FROM merge('system', '.*')", "table function merge()"),
    ("SELECT * FROM view(SELECT 1)", "table function view()"),
    ("SELECT dictGet('d', 'x', toUInt64(1))", "dictGet() is not allowed"),
    ("SELECT getServerSetting('user_files_path')", "getServerSetting() is not allowed"),
    ("SELECT joinGet('j', 'x', 1)", "joinGet() is not allowed"),
    ("SELECT 1 INTO OUTFILE '/tmp/tracewatch-owned.pth' TRUNCATE", "INTO OUTFILE"),
    ("SELECT 1 INTO OUTFILE '/tmp/tracewatch-owned.pth' AND STDOUT FORMAT TSVRaw",
     "INTO OUTFILE"),
    ("SELECT 1 FORMAT JSON", "FORMAT"),
    ("SELECT 1 SETTINGS readonly = 0", "SETTINGS"),
    ("SELECT 1 SETTINGS max_execution_time = 0", "SETTINGS"),
    ("SELECT * FROM (SELECT 1 SETTINGS max_threads = 1)", "SETTINGS"),
    ("SELECT * FROM system.processes", "table system.processes is not allowed"),
    ("SELECT name FROM system.settings", "table system.settings is not allowed"),
    ("SELECT * FROM INFORMATION_SCHEMA.TABLES", "is not allowed"),
    ("SELECT 1 WHERE 1 IN system.processes", "table system.processes is not allowed"),
    ("SELECT 1 FROM `odd db`.`t t`", "table name"),
    ("SELECT \uff46\uff49\uff4c\uff45('/etc/passwd')", "does not parse"),  # fullwidth "file"
    ("SELECT fi\u200ble('/etc/passwd')", "does not parse"),  # a zero-width space inside
    ("SELECT fi\u0307le('/etc/passwd')", "does not parse"),  # a combining dot
    ("SELECT 1 AS `a\n   Function file`", "cannot check"),  # a line break faking a node
    ("SELECT %(x)s", "does not parse"),  # client-side formatting never happens
    ("", "empty"),
    ("  \n ", "empty"),
    ("SELECT " + "1 + " * 40_000 + "1", "longer than"),
]  # fmt: skip


@pytest.mark.parametrize(("sql", "error"), REFUSED, ids=[s[:60] for s, _ in REFUSED])
def test_anything_else_is_refused_with_a_reason(
    reader: ClickHouseReader, sql: str, error: str
) -> None:
    with pytest.raises(QueryRefused) as refused:
        ask(reader, sql, x="1")
    assert error in str(refused.value)
    assert not Path("/tmp/tracewatch-owned.pth").exists()


def test_a_bound_identifier_cannot_name_another_database(reader: ClickHouseReader) -> None:
    with pytest.raises(QueryRefused, match=r"system\.processes is not allowed"):
        reader.query("SELECT * FROM {d:Identifier}.processes", {"d": "system"})


def test_bytes_parameters_are_refused(reader: ClickHouseReader) -> None:
    with pytest.raises(QueryRefused, match="not bytes"):
        reader.query("SELECT {x:String}", {"x": b"1"})


def test_the_session_is_read_only_and_keeps_its_limits(reader: ClickHouseReader) -> None:
    for sql in ("SET readonly = 0", "SET max_execution_time = 0", "SELECT 1 SETTINGS readonly=0"):
        with pytest.raises(QueryRefused):
            reader.query(sql)
    got = ask(reader, "SELECT getSetting('readonly'), getSetting('max_execution_time')")
    assert got == [(1, LIMITS.max_execution_time_s)]
    assert list(session_settings(LIMITS))[-1] == "readonly"  # applied last


def test_limits_stop_queries_with_advice(reader: ClickHouseReader) -> None:
    with pytest.raises(QueryRefused, match="TRACEWATCH_QUERY_MAX_RESULT_ROWS"):
        ask(reader, "SELECT number FROM numbers(5000)")
    # chDB left the cut result's rows on the handle, garbling the next answer
    assert ask(reader, "SELECT 1") == [(1,)]
    assert len(ask(reader, "SELECT number FROM numbers(5000) LIMIT 1000")) == 1000
    with pytest.raises(QueryRefused, match="TRACEWATCH_QUERY_MAX_MEMORY_BYTES"):
        ask(reader, "SELECT length(groupArray(number)) FROM numbers(100000000)")
    started = time.monotonic()
    with pytest.raises(QueryRefused, match="TRACEWATCH_QUERY_MAX_EXECUTION_TIME_S"):
        ask(reader, "SELECT count() FROM numbers(10000000000) WHERE sipHash64(number) % 7 = 3")
    assert time.monotonic() - started < LIMITS.max_execution_time_s + 2


def test_a_long_query_does_not_block_the_writer(
    store: tuple[ClickHouseSink, ClickHouseReader],
) -> None:
    sink, reader = store
    errors: list[Exception] = []

    def runaway() -> None:
        try:
            ask(reader, "SELECT count() FROM numbers(10000000000) WHERE sipHash64(number) % 7 = 3")
        except QueryRefused as exc:
            errors.append(exc)

    thread = threading.Thread(target=runaway)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    sink.query(
        "INSERT INTO {db:Identifier}.stats_1m (route, model, minute, late, count) "
        "SELECT 'w', 'm', now(), 0, 1",
        {"db": sink.database},
        readonly=False,
    )
    took = time.monotonic() - started
    running = thread.is_alive()
    thread.join()
    assert running and took < 1.0, f"the insert waited {took:.2f} s for the query"
    assert errors, "the query was not stopped by its time limit"


def test_the_tree_is_read_fail_closed() -> None:
    lines = [
        "SelectWithUnionQuery (children 1)",
        " ExpressionList (children 1)",
        "  SelectQuery (children 1)",
        "   ExpressionList (children 1)",
        "    Function FILE (alias f) (children 1)",
        "     ExpressionList (children 1)",
        "      Literal '/etc/passwd'",
    ]
    tree = parse_explain_ast(lines)
    function = tree.children[0].children[0].children[0].children[0]
    assert (function.kind, function.name) == ("Function", "FILE")
    with pytest.raises(QueryRefused, match="FILE"):
        check_select(tree, "tracewatch")
    for broken in (
        [*lines[:4], "      Literal UInt64_1"],  # skips a level
        [*lines, "   Function file)"],  # more children than declared
        [*lines[:3]],  # fewer
        [lines[0], "?? not a node"],
        [lines[0], lines[0]],  # two roots
    ):
        with pytest.raises(QueryRefused):
            parse_explain_ast(broken)
    select = AstNode("SelectWithUnionQuery", "", [AstNode("ExpressionList")])
    assert check_select(select, "tracewatch") is None
