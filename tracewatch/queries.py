"""The named queries behind ``tracewatch query``, and how they reach ClickHouse.

Every value that comes from a user (route names, time ranges, limits) is bound
as a server-side parameter (``{name:Type}``); the only text spliced into SQL is
a statistic name checked against a fixed list. Named and free-form queries take
the same road: the worker's ``/query``, or, with no worker running, a
``ClickHouseReader`` of this process; either way one guarded, limited, read-only
SELECT (``tracewatch.sinks.clickhouse_reader``).
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from tracewatch.config import KafkaSettings, Settings
from tracewatch.errors import ConfigError, QueryRefused, ServiceUnavailable
from tracewatch.schemas.alert import Alert
from tracewatch.sinks.clickhouse import ClickHouseSink, QueryResult
from tracewatch.sinks.clickhouse_reader import ClickHouseReader
from tracewatch.sinks.clickhouse_schema import COST_SCALE
from tracewatch.streams.worker import read_run_file, worker_headers

__all__ = [
    "TOP_STATISTICS",
    "QueryClient",
    "alert_time",
    "compare_periods",
    "filter_alerts",
    "parse_duration",
    "parse_time",
    "prompt_change_query",
    "prompt_first_seen_query",
    "read_alert_history",
    "series_query",
    "top_routes_query",
    "trace_timeline_query",
]

#: statistic name → the SQL column (over ``events``) the top-routes query shows and ranks by.
#: Costs are quantiled in micro-dollars, as the rollup does: quantileDD's relative error
#: bound does not hold for values below 1 (a call costs about $0.002). They are not rounded
#: in SQL: six decimals would be a 1% error at 50 micro-dollars; the table shows 6 digits.
TOP_STATISTICS: dict[str, str] = {
    "count": "count()",
    "error_rate": "round(countIf(status != 'ok') / count(), 4)",
    "cost_sum": "round(sum(cost_usd), 4)",
    "cost_p50": f"quantileDD(0.01, 0.5)(cost_usd * {COST_SCALE}) / {COST_SCALE}",
    "cost_p95": f"quantileDD(0.01, 0.95)(cost_usd * {COST_SCALE}) / {COST_SCALE}",
    "cost_p99": f"quantileDD(0.01, 0.99)(cost_usd * {COST_SCALE}) / {COST_SCALE}",
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


def prompt_first_seen_query() -> str:
    """When ``{to_version}`` first appeared on ``{route}`` (Unix ms, NULL if never), and its
    event count. Milliseconds, not a DateTime: they bind back unchanged through the worker's
    JSON ``/query`` as well as in-process."""
    return """
SELECT if(count() = 0, NULL, toUnixTimestamp64Milli(min(ts))) AS first_seen_ms, count() AS n
FROM {db:Identifier}.events
WHERE route = {route:String} AND prompt_version = {to_version:String}
""".strip()


def prompt_change_query() -> str:
    """The route before and after ``{first_seen_ms}``, one row per period, from raw events.

    Before: the route's events in ``[first_seen - window, first_seen)``, only of
    prompt version ``{from_version}`` unless it is empty. After: events of ``{to_version}``
    in ``[first_seen, first_seen + window)``. Quantiles are exact over the rows
    (``quantileExact``), not averages of per-minute quantiles.
    """
    return """
WITH fromUnixTimestamp64Milli({first_seen_ms:Int64}, 'UTC') AS first_seen,
     toIntervalSecond({window_s:UInt32}) AS span
SELECT if(ts < first_seen, 'before', 'after') AS period,
       count() AS n,
       countIf(status != 'ok') / count() AS error_rate,
       quantileExact(0.5)(cost_usd) AS cost_p50,
       quantileExact(0.95)(cost_usd) AS cost_p95,
       quantileExact(0.5)(latency_ms) AS latency_p50,
       quantileExact(0.95)(latency_ms) AS latency_p95,
       avg(output_tokens) AS output_tokens_mean,
       max(loop_depth) AS loop_depth_max,
       sumMap(scores) AS score_sums,
       sumMap(mapApply((k, v) -> (k, toUInt64(1)), scores)) AS score_counts
FROM {db:Identifier}.events
WHERE route = {route:String}
  AND ts >= first_seen - span AND ts < first_seen + span
  AND if(ts < first_seen,
         {from_version:String} = '' OR prompt_version = {from_version:String},
         prompt_version = {to_version:String})
GROUP BY period
ORDER BY period = 'after'
""".strip()


#: the rows of the prompt-change table, in order, and the SQL column each comes from
_CHANGE_ROWS = (
    "n",
    "error_rate",
    "cost_p50",
    "cost_p95",
    "latency_p50",
    "latency_p95",
    "output_tokens_mean",
    "loop_depth_max",
)


def compare_periods(result: QueryResult) -> QueryResult:
    """Pivot ``prompt_change_query``'s two rows into statistic / before / after / ratio.

    A period with no events shows ``None``; the ratio is after / before, ``None``
    when either side is missing or before is zero.
    """
    periods = {row[0]: dict(zip(result.columns, row, strict=True)) for row in result.rows}
    before, after = periods.get("before", {}), periods.get("after", {})
    rows = [(name, before.get(name), after.get(name)) for name in _CHANGE_ROWS]
    scores = sorted({*before.get("score_sums", {}), *after.get("score_sums", {})})
    rows += [
        (f"score:{name}", _score_mean(before, name), _score_mean(after, name)) for name in scores
    ]
    return QueryResult(
        ["statistic", "before", "after", "ratio"],
        [(name, b, a, _ratio(b, a)) for name, b, a in rows],
    )


def _score_mean(period: Mapping[str, Any], name: str) -> float | None:
    count = period.get("score_counts", {}).get(name, 0)
    return float(period["score_sums"][name]) / count if count else None


def _ratio(before: Any, after: Any) -> float | None:
    if before is None or after is None or before == 0:
        return None
    return round(float(after) / float(before), 3)


def trace_timeline_query() -> str:
    """One trace's events in time order, with the time since its start and the spend so far."""
    return """
SELECT toString(ts) AS time,
       dateDiff('millisecond', min(ts) OVER (), ts) AS at_ms,
       kind, route, model, tool_name AS tool, status, latency_ms, cost_usd,
       loop_depth,
       round(sum(ifNull(cost_usd, 0)) OVER (ORDER BY ts, event_id
             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW), 6) AS cost_so_far,
       span_id, parent_span_id, event_id
FROM {db:Identifier}.events
WHERE trace_id = {trace:String}
ORDER BY ts, event_id
LIMIT {limit:UInt32}
""".strip()


def alert_time(alert: Alert) -> datetime:
    """When a transition happened: firing at ``starts_at``, resolved at ``ends_at``."""
    if alert.status == "resolved" and alert.ends_at is not None:
        return alert.ends_at
    return alert.starts_at


def filter_alerts(
    alerts: Iterable[Alert], since: datetime, route: str | None = None
) -> list[Alert]:
    """Alert transitions at or after ``since`` (of ``route`` if given), oldest first."""
    kept = [
        a
        for a in alerts
        if alert_time(a) >= since and (route is None or a.labels.get("route") == route)
    ]
    return sorted(kept, key=alert_time)


def read_alert_history(kafka: KafkaSettings, quiet_s: float = 3.0) -> list[Alert]:
    """Every alert transition on the alerts topic (its whole retention), in topic order.

    There is no alerts table in ClickHouse: the topic is the history. Reading
    stops after ``quiet_s`` seconds with nothing new (caught up).
    """
    from tracewatch.sdk.alerts import AlertSubscriber

    seen: list[Alert] = []
    with AlertSubscriber(kafka, from_beginning=True) as subscriber:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet_s:
            alert = subscriber.poll(0.5)
            if alert is not None:
                seen.append(alert)
                quiet_since = time.monotonic()
    return seen


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``30s`` / ``15m`` / ``24h`` / ``7d`` as seconds."""
    if (m := _RELATIVE.match(text.strip())) is None:
        raise ConfigError(f"cannot read duration {text!r}: use 30s, 15m, 24h or 7d")
    return float(m[1]) * _UNIT_S[m[2]]


#: the times a query may name: the Unix epoch up to the end of ClickHouse's DateTime64
#: range (2299-12-31); ``inf``, ``1e300`` or ``99999999999d`` ago are not times
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
_TIME_FORMS = (
    "use 15m, 2h, 1d (ago), now, an RFC 3339 time such as 2026-11-22T10:00:00Z, or Unix seconds"
)


def parse_time(text: str, now: float | None = None) -> datetime:
    """``15m`` / ``2h`` / ``1d`` ago, ``now``, an RFC 3339 time, or Unix seconds, between
    1970 and 2299; anything else (``inf``, ``nan``, far out of range) is a ``ConfigError``."""
    now = time.time() if now is None else now
    text = text.strip()
    parsed = _parse_time(text, now)
    if not _EARLIEST <= parsed <= _LATEST:
        raise ConfigError(
            f"cannot read time {text!r}: {parsed:%Y-%m-%d} is out of range "
            f"({_EARLIEST:%Y-%m-%d} to {_LATEST:%Y-%m-%d}); {_TIME_FORMS}"
        )
    return parsed


def _parse_time(text: str, now: float) -> datetime:
    if text == "now":
        seconds: float | None = now
    elif (m := _RELATIVE.match(text)) is not None:
        seconds = now - float(m[1]) * _UNIT_S[m[2]]
    else:
        try:
            seconds = float(text)
        except ValueError:
            seconds = None
    if seconds is not None:
        lowest, highest = _EARLIEST.timestamp(), _LATEST.timestamp()
        if not math.isfinite(seconds) or not lowest <= seconds <= highest:
            raise ConfigError(f"cannot read time {text!r}: out of range; {_TIME_FORMS}")
        return datetime.fromtimestamp(seconds, UTC)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"cannot read time {text!r}: {_TIME_FORMS}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class QueryClient:
    """Runs read-only queries: in-process, or through the running worker's ``/query``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sink: ClickHouseSink | None = None
        self._reader: ClickHouseReader | None = None

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
            return self._via_worker(str(worker["url"]), sql, params, worker_headers(self.settings))
        return self._open_reader().query(sql, params)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._sink is not None:
            self._sink.close()

    def _open_reader(self) -> ClickHouseReader:
        """The store opened here (no worker holds it): the writer's ``connect`` creates the
        tables of a fresh store, then every query goes through a reader of its own."""
        if self._reader is None:
            if self._sink is None:
                self._sink = ClickHouseSink(self.settings.clickhouse).connect()
            self._reader = ClickHouseReader(self.settings.clickhouse, self.settings.query)
            self._reader.connect()
        return self._reader

    @staticmethod
    def _via_worker(
        url: str, sql: str, params: Mapping[str, Any], headers: Mapping[str, str]
    ) -> QueryResult:
        """``headers``: the worker's token (``worker_headers``)."""
        body = json.dumps({"sql": sql, "parameters": params}, default=_param_text).encode()
        request = urllib.request.Request(
            f"{url}/query", body, {"Content-Type": "application/json", **headers}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 400:  # the worker refused the query, or ClickHouse failed it
                raise QueryRefused(_error_text(exc)) from None
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
