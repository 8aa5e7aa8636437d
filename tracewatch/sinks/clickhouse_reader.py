"""Reads for people: ``tracewatch query``, the worker's ``/query`` and the dashboard.

``ClickHouseReader`` is a ClickHouse client of its own, never the writer's
(``ClickHouseSink``): with chDB each client is its own handle to the one engine
of the process, with its own session settings and its own lock, so a query
never holds the lock the writer needs, and nothing a query does to its session
reaches the writer's. Measured on chDB 26.9: inserts on the writer's handle took
6-11 ms each while a 13 s aggregate ran on another handle (0.2 s for the first).

Its session is made read-only from the start: the limits of ``QuerySettings``
first, then ``readonly=1``, which also forbids changing any setting afterwards
(a ``SETTINGS`` clause fails with READONLY). Every query then passes the guard
(``query_guard``): parsed by ClickHouse as exactly one statement, checked as one
SELECT over the tracewatch tables, and run as that canonical statement.

Defense in depth: the guard, ``readonly=1`` (no DDL, no INSERT, no table
function that reads or writes outside) and the limits. Confining the engine's
own file access was tried and is not available with chDB: ``user_files_path``
is accepted (``chdb_options``), but the engine runs as clickhouse-local, which
checks no path against it (``file('/etc/passwd')`` still reads, absolute or
relative to the working directory), and only the first handle of a process
sets it. ``readonly=1`` alone does not stop ``SELECT file(…)`` or ``INTO
OUTFILE``: the guard does. A ClickHouse server confines ``file()`` to its own
``user_files_path``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

from tracewatch.config import ClickHouseSettings, QuerySettings
from tracewatch.errors import QueryRefused, ServiceUnavailable, SinkError
from tracewatch.sinks.clickhouse import QueryResult
from tracewatch.sinks.query_guard import AstNode, check_select, check_text, parse_explain_ast

__all__ = ["ClickHouseReader", "session_settings"]

#: ClickHouse error codes the reader turns into advice
_SYNTAX_ERROR, _READONLY, _TIMEOUT, _TOO_MANY_ROWS, _MEMORY = 62, 164, 159, 396, 241
_CODE = re.compile(r"Code: (\d+)")


def session_settings(limits: QuerySettings) -> dict[str, Any]:
    """The reader's session, in the order applied: limits first, ``readonly`` last
    (after it nothing can be changed, not even by a query's own SETTINGS clause)."""
    return {
        "max_execution_time": limits.max_execution_time_s,
        "timeout_overflow_mode": "throw",
        "max_result_rows": limits.max_result_rows,
        "max_result_bytes": limits.max_result_bytes,
        "result_overflow_mode": "throw",
        "max_memory_usage": limits.max_memory_bytes,
        "allow_introspection_functions": 0,
        "allow_python_table_function": 0,
        "readonly": 1,
    }


class ClickHouseReader:
    """Guarded, limited, read-only queries on a ClickHouse session of their own.

    Thread-safe; connects on first use (or ``connect()``). The database must
    exist: the writer creates it (``ClickHouseSink.connect``).
    """

    def __init__(self, clickhouse: ClickHouseSettings, limits: QuerySettings) -> None:
        self.clickhouse = clickhouse
        self.limits = limits
        self.database = clickhouse.database
        self._client: Any = None
        self._lock = threading.Lock()

    def connect(self) -> ClickHouseReader:
        self._connected()
        return self

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> QueryResult:
        """Run one SELECT with server-side parameter binding (``{name:Type}``).

        Raises ``QueryRefused`` for anything but one SELECT over the tracewatch
        tables and for a query stopped at a limit; ``SinkError`` for any other
        error ClickHouse reports (an unknown column …).
        """
        params = _checked_parameters(parameters)
        canonical = self._canonical(check_text(sql))
        bound = params if _has_placeholders(canonical) else {}
        lines = self._run(f"EXPLAIN AST {canonical}", bound)
        tree = parse_explain_ast([str(row[0]) for row in lines.rows])
        _drop_output_format(tree)
        check_select(tree, self.database)
        return self._run(canonical, bound)

    def _canonical(self, text: str) -> str:
        """The text as one statement, formatted by ClickHouse's own parser: bound as data,
        so it is parsed and never run; several statements are a syntax error here."""
        result = self._run("SELECT formatQuerySingleLine({q:String})", {"q": text})
        return str(result.rows[0][0])

    def _open(self) -> Any:
        import clickhouse_connect  # heavy import, kept off CLI start-up

        creds: dict[str, Any] = {}
        if self.clickhouse.username:
            creds["username"] = self.clickhouse.username
        if self.clickhouse.password is not None:
            creds["password"] = self.clickhouse.password.get_secret_value()
        try:
            return clickhouse_connect.get_client(
                dsn=self.clickhouse.resolved_dsn(),
                database=self.database,
                settings=session_settings(self.limits),
                **creds,
            )
        except Exception as exc:
            raise ServiceUnavailable(
                f"cannot open a read-only ClickHouse session at "
                f"{self.clickhouse.redacted_dsn()}: {_first_line(exc)}"
            ) from None

    def _run(self, sql: str, parameters: dict[str, Any]) -> QueryResult:
        """One call, its rows read in full before it counts as done."""
        client = self._connected()
        try:
            result = client.query(sql, parameters=parameters)
            return QueryResult(list(result.column_names), [tuple(r) for r in result.result_rows])
        except Exception as exc:
            self._discard(client)
            raise self._explain(exc) from None

    def _connected(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._open()
            return self._client

    def _discard(self, client: Any) -> None:
        """Drop a client whose query failed: chDB leaves a failed query's partial output
        on the handle (a result cut at the row limit came back as "unrecognized data" in
        the next query's answer), so the next query gets a fresh handle (a few ms)."""
        with self._lock:
            if self._client is client:
                self._client = None
        client.close()

    def _explain(self, exc: Exception) -> Exception:
        text = _first_line(exc)
        code = getattr(exc, "code", None) or _code_in(text)
        limits = self.limits
        if code == _SYNTAX_ERROR and "Multi-statements" in text:
            return QueryRefused(
                "only one SELECT statement is allowed: remove the `;` and what follows it"
            )
        if code == _SYNTAX_ERROR:
            return QueryRefused(f"the query does not parse: {text}")
        if code == _READONLY:
            return QueryRefused(
                "queries are read-only and their settings are fixed: only one SELECT statement "
                f"is allowed, without a SETTINGS clause ({text})"
            )
        if code == _TIMEOUT:
            return QueryRefused(
                f"the query ran longer than {limits.max_execution_time_s:g} s and was stopped "
                "(TRACEWATCH_QUERY_MAX_EXECUTION_TIME_S of the worker): narrow the time range, "
                "or read the minute or hour tables (stats_1m, stats_1h) instead of events"
            )
        if code == _TOO_MANY_ROWS:
            return QueryRefused(
                f"the result has more than {limits.max_result_rows} rows or "
                f"{limits.max_result_bytes} bytes (TRACEWATCH_QUERY_MAX_RESULT_ROWS / "
                "_MAX_RESULT_BYTES of the worker): add a LIMIT, or aggregate"
            )
        if code == _MEMORY:
            return QueryRefused(
                f"the query needed more than {limits.max_memory_bytes} bytes of memory and was "
                "stopped (TRACEWATCH_QUERY_MAX_MEMORY_BYTES of the worker): narrow the time "
                "range, or aggregate with approximate functions (uniq, quantileDD)"
            )
        return SinkError(f"ClickHouse query failed: {text}")


def _checked_parameters(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Parameters as clickhouse-connect binds them server-side; bytes would be spliced
    into the text as a "binary bind", so they are refused."""
    params = dict(parameters or {})
    for name, value in params.items():
        if isinstance(value, bytes | bytearray | memoryview):
            raise QueryRefused(f"parameter {name!r} must be text or a number, not bytes")
    return params


def _has_placeholders(sql: str) -> bool:
    """Whether clickhouse-connect will bind server-side: without a ``{name:Type}``
    placeholder it formats parameters into the text itself (``%(name)s``), which the
    guard never saw, so parameters are then not sent at all."""
    from clickhouse_connect.driver.binding import external_bind_re

    return external_bind_re.search(sql) is not None


def _drop_output_format(tree: AstNode) -> None:
    """clickhouse-connect appends ``FORMAT Native`` to every query, so ``EXPLAIN AST``
    prints it as the statement's last child; the user's own FORMAT would make that a
    syntax error, so what is dropped here is never theirs."""
    last = tree.children[-1] if len(tree.children) > 1 else None
    if last is not None and last.kind == "Identifier" and last.name == "Native":
        tree.children.pop()


def _code_in(text: str) -> int | None:
    match = _CODE.search(text)
    return int(match[1]) if match else None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:400] if text else type(exc).__name__
