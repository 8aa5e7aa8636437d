"""Query building: user input is bound, never spliced; times parse as documented."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tracewatch.errors import ConfigError
from tracewatch.queries import TOP_STATISTICS, parse_time, series_query, top_routes_query

NOW = 1_795_341_600.0


@pytest.mark.parametrize(
    ("text", "seconds_ago"), [("15m", 900), ("2h", 7200), ("1d", 86400), ("30s", 30), ("now", 0)]
)
def test_relative_times(text: str, seconds_ago: int) -> None:
    assert parse_time(text, NOW).timestamp() == NOW - seconds_ago


def test_absolute_times() -> None:
    assert parse_time("2026-11-22T10:00:00Z", NOW) == datetime(2026, 11, 22, 10, tzinfo=UTC)
    assert parse_time("1795341600", NOW).timestamp() == NOW
    assert parse_time("2026-11-22T10:00:00", NOW).tzinfo is UTC


def test_bad_time_says_what_is_accepted() -> None:
    with pytest.raises(ConfigError, match="15m, 2h, 1d"):
        parse_time("last tuesday", NOW)


def test_every_statistic_builds_and_unknown_ones_are_refused() -> None:
    for name in TOP_STATISTICS:
        assert f"ORDER BY {name} DESC" in top_routes_query(name)
    assert "{score:String}" in top_routes_query("score:groundedness")
    for hostile in ("cost_p95; DROP TABLE events", "score:x') OR 1=1 --", "count DESC, route"):
        with pytest.raises(ConfigError, match="unknown statistic"):
            top_routes_query(hostile)


def test_user_values_are_placeholders() -> None:
    sql = series_query()
    for placeholder in ("{route:String}", "{since:DateTime64(3, 'UTC')}", "{limit:UInt32}"):
        assert placeholder in sql
    assert "score:" not in top_routes_query("cost_p95")


@pytest.mark.parametrize(
    "text",
    ["inf", "-inf", "nan", "Infinity", "1e300", "-5", "99999999999d", "1e20s",
     "9999-12-31T00:00:00Z", "0001-01-01T00:00:00Z", "2301-01-01T00:00:00Z"],
)  # fmt: skip
def test_times_that_are_not_finite_or_out_of_range_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match=r"cannot read time|out of range"):
        parse_time(text, NOW)


def test_the_edges_of_the_range_are_times() -> None:
    assert parse_time("0", NOW).timestamp() == 0
    assert parse_time("2299-12-31T23:59:59Z", NOW).year == 2299
