"""The SQL behind the dashboard's JSON endpoints, and the shaping of its answers.

Pure: strings, parameters and plain rows in, JSON-ready dicts out; the views run
the SQL through ``ClickHouseReader.query`` (guarded, read-only) with every user
value bound as a server-side parameter (``{name:Type}``), never spliced.

Where a series comes from:

- ranges up to ``RAW_MAX_RANGE_S`` (6 h): the raw ``events`` of the route (they are
  ordered by ``(route, ts)``, so this reads one contiguous slice), steps from one
  minute. Not ``stats_1m``: its quantiles are finished per (model,
  prompt_version) and cannot be merged in SQL into the route's p95 (the state
  column is tracewatch's own encoding), and a route with a new prompt version
  has two rows a minute exactly when the chart matters most.
- longer ranges: the hourly rollup ``stats_1h`` (quantile states merged by
  ``quantilesDDMerge``), steps from one hour.

Both give quantiles with the stream's 1 % relative-error bound (cost and latency
are sketched in micro-dollars and microseconds; see ``clickhouse_schema``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tracewatch.errors import ConfigError

__all__ = [
    "MAX_RANGE_S",
    "RAW_MAX_RANGE_S",
    "ROUTES_SQL",
    "SERIES_FIELDS",
    "TRACE_ROUTES_SQL",
    "SeriesPlan",
    "plan_series",
    "routes_parameters",
    "series_sql",
    "shape_routes",
    "shape_series",
]

RAW_MAX_RANGE_S = 6 * 3600
MAX_RANGE_S = 400 * 86400
#: a series has at most this many steps (more would not fit a chart's pixels)
TARGET_POINTS = 240
#: steps the dashboard snaps to (seconds); the rollup's start at one hour
STEPS: tuple[int, ...] = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)

_LEVELS = "0.01, 0.5, 0.95, 0.99"  # relative accuracy, then the levels of ROLLUP_QUANTILES

_SERIES_FROM_EVENTS = f"""
SELECT toUnixTimestamp(toStartOfInterval(ts, toIntervalSecond({{step:UInt32}}))) AS t,
       count() AS n,
       countIf(status != 'ok') / count() AS err,
       arrayMap(x -> x / 1000000, quantilesDD({_LEVELS})(cost_usd * 1000000)) AS cost_q,
       arrayMap(x -> x / 1000, quantilesDD({_LEVELS})(latency_ms * 1000)) AS latency_q,
       max(loop_depth) AS depth_max,
       quantilesDD({_LEVELS})(loop_depth) AS depth_q,
       sumMap(scores) AS s_sums,
       sumMap(mapApply((k, v) -> (k, toUInt64(1)), scores)) AS s_counts
FROM {{db:Identifier}}.events
WHERE route = {{route:String}}
  AND ts >= toDateTime64({{start:Int64}}, 3, 'UTC') AND ts < toDateTime64({{end:Int64}}, 3, 'UTC')
GROUP BY t
ORDER BY t
"""

_SERIES_FROM_ROLLUP = f"""
SELECT toUnixTimestamp(toStartOfInterval(hour, toIntervalSecond({{step:UInt32}}))) AS t,
       sum(count) AS n,
       (sum(error_count) + sum(timeout_count)) / sum(count) AS err,
       arrayMap(x -> x / 1000000, quantilesDDMerge({_LEVELS})(cost_micro_quantiles)) AS cost_q,
       arrayMap(x -> x / 1000, quantilesDDMerge({_LEVELS})(latency_us_quantiles)) AS latency_q,
       max(loop_depth_max) AS depth_max,
       quantilesDDMerge({_LEVELS})(loop_depth_quantiles) AS depth_q,
       sumMap(score_sums) AS s_sums,
       sumMap(score_counts) AS s_counts
FROM {{db:Identifier}}.stats_1h
WHERE route = {{route:String}}
  AND hour >= toDateTime({{start:Int64}}, 'UTC') AND hour < toDateTime({{end:Int64}}, 'UTC')
GROUP BY t
ORDER BY t
"""

#: routes with traffic in ``[start, end)``, busiest first, from the hourly rollup
ROUTES_SQL = """
SELECT route, sum(count) AS events
FROM {db:Identifier}.stats_1h
WHERE hour >= toStartOfHour(toDateTime({start:Int64}, 'UTC'))
  AND hour < toDateTime({end:Int64}, 'UTC')
GROUP BY route
ORDER BY events DESC, route
LIMIT {limit:UInt32}
""".strip()

#: the route of each trace in ``ids`` (for breakers scoped ``trace:<id>``); the
#: bloom-filter index on ``trace_id`` keeps this from reading every event
TRACE_ROUTES_SQL = """
SELECT trace_id, any(route)
FROM {db:Identifier}.events
WHERE trace_id IN {ids:Array(String)}
GROUP BY trace_id
""".strip()

#: the per-step series every answer carries, besides ``t`` and ``scores``
SERIES_FIELDS: tuple[str, ...] = (
    "count", "error_rate", "cost_p50", "cost_p95", "cost_p99", "latency_p50", "latency_p95",
    "latency_p99", "loop_depth_max", "loop_depth_p95",
)  # fmt: skip

Source = Literal["events", "stats_1h"]


@dataclass(frozen=True)
class SeriesPlan:
    """One series request, checked and aligned: ``[start, end)`` in whole steps."""

    route: str
    start: int
    end: int
    step: int
    source: Source

    @property
    def points(self) -> int:
        return (self.end - self.start) // self.step

    def parameters(self, database: str) -> dict[str, Any]:
        return {
            "db": database,
            "route": self.route,
            "start": self.start,
            "end": self.end,
            "step": self.step,
        }


def plan_series(route: str, start: float, end: float, step: int | None = None) -> SeriesPlan:
    """Pick the table and the step for a route's series over ``[start, end)`` (Unix s).

    ``step`` is rounded up to what the table holds (a minute for raw events, an
    hour for the rollup) and the range widened to whole steps.
    """
    if not route or len(route) > 256:
        raise ConfigError("pick a route: `route` must be 1 to 256 characters")
    if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
        raise ConfigError("`from` must be before `to`")
    if end - start > MAX_RANGE_S:
        raise ConfigError(f"a range can span at most {MAX_RANGE_S // 86400} days")
    source: Source = "events" if end - start <= RAW_MAX_RANGE_S else "stats_1h"
    floor_step = 60 if source == "events" else 3600
    wanted = max(step or 0, floor_step, math.ceil((end - start) / TARGET_POINTS))
    chosen = next((s for s in STEPS if s >= wanted), math.ceil(wanted / 86400) * 86400)
    first = math.floor(start / chosen) * chosen
    last = math.ceil(end / chosen) * chosen
    return SeriesPlan(route, first, last, chosen, source)


def series_sql(plan: SeriesPlan) -> str:
    return (_SERIES_FROM_EVENTS if plan.source == "events" else _SERIES_FROM_ROLLUP).strip()


def routes_parameters(database: str, start: float, end: float, limit: int = 500) -> dict[str, Any]:
    return {"db": database, "start": math.floor(start), "end": math.ceil(end), "limit": limit}


def shape_series(plan: SeriesPlan, rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """The JSON answer: one value per step on a full grid, ``None`` where there was no data
    (a gap in the chart, not a zero), and one mean series per evaluator score name."""
    grid = list(range(plan.start, plan.end, plan.step))
    index = {t: i for i, t in enumerate(grid)}
    out: dict[str, Any] = {name: [None] * len(grid) for name in SERIES_FIELDS}
    score_sums: dict[str, list[float | None]] = {}
    for t, count, error_rate, cost, latency, depth_max, depth, sums, counts in rows:
        i = index.get(int(t))
        if i is None:
            continue
        values = {
            "count": int(count),
            "error_rate": error_rate,
            "cost_p50": cost[0], "cost_p95": cost[1], "cost_p99": cost[2],
            "latency_p50": latency[0], "latency_p95": latency[1], "latency_p99": latency[2],
            "loop_depth_max": depth_max,
            "loop_depth_p95": depth[1],
        }  # fmt: skip
        for name, value in values.items():
            out[name][i] = _finite(value)
        for name, n in _score_means(sums, counts).items():
            score_sums.setdefault(name, [None] * len(grid))[i] = n
    return {
        "route": plan.route,
        "source": plan.source,
        "step": plan.step,
        "start": plan.start,
        "end": plan.end,
        "t": grid,
        **out,
        "scores": dict(sorted(score_sums.items())),
    }


def shape_routes(rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    return [{"route": str(route), "events": int(events)} for route, events in rows]


def _score_means(sums: Mapping[str, float], counts: Mapping[str, int]) -> dict[str, float]:
    # sumMap leaves out names whose sum is 0, so a name counted but not summed has mean 0
    return {name: float(sums.get(name, 0.0)) / n for name, n in counts.items() if n}


def _finite(value: Any) -> float | int | None:
    """NaN (a quantile of nothing) and None become None: JSON has no NaN."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    number = float(value)
    return number if math.isfinite(number) else None
