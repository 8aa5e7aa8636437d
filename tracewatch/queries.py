"""The named queries behind ``tracewatch query``, and how they reach ClickHouse.

Every value that comes from a user (route names, time ranges, limits) is bound
as a server-side parameter (``{name:Type}``); the only text spliced into SQL is
a statistic name checked against a fixed list.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tracewatch.config import Settings
from tracewatch.errors import ConfigError, ServiceUnavailable
from tracewatch.sinks.clickhouse import ClickHouseSink, QueryResult
from tracewatch.streams.worker import read_run_file

__all__ = [
    "TOP_STATISTICS",
    "QueryClient",
    "parse_time",
    "series_query",
    "top_routes_query",
]

#: statistic name → the SQL column (over ``events``) the top-routes query shows and ranks by.
TOP_STATISTICS: dict[str, str] = {
    "count": "count()",
    "error_rate": "round(countIf(status != 'ok') / count(), 4)",
    "cost_sum": "round(sum(cost_usd), 4)",
    "cost_p50": "round(quantileDD(0.01, 0.5)(cost_usd), 6)",
    "cost_p95": "round(quantileDD(0.01, 0.95)(cost_usd), 6)",
    "cost_p99": "round(quantileDD(0.01, 0.99)(cost_usd), 6)",
    "latency_p50": "round(quantileDD(0.01, 0.5)(latency_ms), 1)",
    "latency_p95": "round(quantileDD(0.01, 0.95)(latency_ms), 1)",
    "latency_p99": "round(quantileDD(0.01, 0.99)(latency_ms), 1)",
    "input_tokens_mean": "round(avg(input_tokens), 1)",
    "output_tokens_mean": "round(avg(output_tokens), 1)",
    "loop_depth_max": "max(loop_depth)",
}

_SCORE = re.compile(r"^score:([A-Za-z0-9_.\-]{1,64})$")


def top_routes_query(statistic: str) -> str:
    """Routes ranked by ``statistic`` over ``[{since}, {until})``.

    ``score:NAME`` ranks by the mean of evaluator score NAME.
    """
    if (m := _SCORE.match(statistic)) is not None:
        order = "score_mean"
    elif statistic in TOP_STATISTICS:
        order = statistic
    else:
        choices = ", ".join([*TOP_STATISTICS, "score:<name>"])
        raise ConfigError(f"unknown statistic {statistic!r}; choose one of: {choices}")
    score_column = (
        ",\n       round(avgIf(scores[{score:String}], mapContains(scores, {score:String})), 4)"
        " AS score_mean"
        if m
        else ""
    )
    columns = ",\n       ".join(f"{sql} AS {name}" for name, sql in TOP_STATISTICS.items())
    return f"""
SELECT route,
       {columns}{score_column}
FROM {{db:Identifier}}.events
WHERE ts >= {{since:DateTime64(3, 'UTC')}} AND ts < {{until:DateTime64(3, 'UTC')}}
GROUP BY route
ORDER BY {order} DESC, route
LIMIT {{limit:UInt32}}
""".strip()


def series_query() -> str:
    """One route's one-minute statistics rows, as the stream wrote them."""
    return """
SELECT formatDateTime(minute, '%H:%i') AS time, model, prompt_version AS prompt, late,
       count AS n, round(error_rate, 4) AS err_rate,
       round(cost_p50, 6) AS cost_p50, round(cost_p95, 6) AS cost_p95,
       round(cost_p99, 6) AS cost_p99, round(latency_p50) AS lat_p50,
       round(latency_p95) AS lat_p95, round(latency_p99) AS lat_p99,
       round(input_tokens_mean) AS tok_in, round(output_tokens_mean) AS tok_out,
       loop_depth_max AS depth_max, round(loop_depth_p95, 1) AS depth_p95,
       arrayStringConcat(arrayMap((k, v) -> concat(substring(k, 1, 12), '=', toString(round(v, 2))),
                                  mapKeys(score_means), mapValues(score_means)), ' ') AS scores
FROM {db:Identifier}.stats_1m
WHERE route = {route:String} AND minute >= {since:DateTime64(3, 'UTC')}
  AND minute < {until:DateTime64(3, 'UTC')}
ORDER BY minute, model, prompt_version, late
LIMIT {limit:UInt32}
""".strip()


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: float | None = None) -> datetime:
    """``15m`` / ``2h`` / ``1d`` ago, ``now``, an RFC 3339 time, or Unix seconds."""
    now = time.time() if now is None else now
    text = text.strip()
    if text == "now":
        return datetime.fromtimestamp(now, UTC)
    if (m := _RELATIVE.match(text)) is not None:
        return datetime.fromtimestamp(now - float(m[1]) * _UNIT_S[m[2]], UTC)
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"cannot read time {text!r}: use 15m, 2h, 1d (ago), now, an RFC 3339 time "
            "such as 2026-11-22T10:00:00Z, or Unix seconds"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class QueryClient:
    """Runs read-only queries: in-process, or through the running worker's ``/query``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sink: ClickHouseSink | None = None

    def run(self, sql: str, parameters: Mapping[str, Any] | None = None) -> QueryResult:
        params = {
            name: _param_text(value) if isinstance(value, datetime) else value
            for name, value in {
                "db": self.settings.clickhouse.database,
                **(parameters or {}),
            }.items()
        }
        worker = read_run_file(self.settings.home) if self.settings.clickhouse.embedded else None
        if worker is not None:
            return self._via_worker(str(worker["url"]), sql, params)
        if self._sink is None:
            self._sink = ClickHouseSink(self.settings.clickhouse).connect()
        return self._sink.query(sql, params)

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()

    @staticmethod
    def _via_worker(url: str, sql: str, params: Mapping[str, Any]) -> QueryResult:
        body = json.dumps({"sql": sql, "parameters": params}, default=_param_text).encode()
        request = urllib.request.Request(
            f"{url}/query", body, {"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ServiceUnavailable(f"query failed in the worker: {_error_text(exc)}") from None
        except (urllib.error.URLError, TimeoutError) as exc:
            raise ServiceUnavailable(f"the worker at {url} did not answer: {exc}") from None
        return QueryResult(payload["columns"], [tuple(r) for r in payload["rows"]])


def _error_text(exc: urllib.error.HTTPError) -> str:
    body = exc.read()
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.code} {body[:200].decode(errors='replace')}"


def _param_text(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return str(value)
