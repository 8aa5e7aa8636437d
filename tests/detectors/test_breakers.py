"""Circuit breakers: each trip condition, no re-signal, expiry, bounds, half-open, determinism."""

from __future__ import annotations

import dataclasses
import itertools
import re
import textwrap
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from tracewatch.demo.scenarios import make_scenario
from tracewatch.demo.traffic import DEFAULT_ROUTES, DemoTraffic
from tracewatch.detectors.breakers import (
    BreakerBoard,
    BreakerLimits,
    RouteLimits,
    TraceLimits,
)
from tracewatch.schemas.breaker import BreakerSignal
from tracewatch.schemas.event import TraceEvent
from tracewatch.schemas.rules import parse_rules

T0 = 1_800_000_000.0
_ids = itertools.count()


def ev(ts: float, trace: str = "t1", route: str = "agent/coder", **fields: Any) -> TraceEvent:
    fields.setdefault("kind", "llm")
    return TraceEvent(event_id=f"e{next(_ids)}", trace_id=trace, ts=ts, route=route, **fields)


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def one(signals: list[BreakerSignal]) -> BreakerSignal:
    assert len(signals) == 1, signals
    return signals[0]


def feed(board: BreakerBoard, events: Iterable[TraceEvent]) -> list[list[BreakerSignal]]:
    """The signals of each event, one observe call per event."""
    return [board.observe([event]) for event in events]


# --------------------------------------------------------------------------- trace conditions


def test_loop_depth_trips_on_the_first_event_over_the_limit() -> None:
    board = BreakerBoard()
    steps = feed(board, [ev(T0 + d, loop_depth=d, kind="agent_step") for d in range(26)])
    assert not any(steps)
    signal = one(board.observe([ev(T0 + 26, loop_depth=26, kind="agent_step")]))
    assert signal.scope == "trace:t1"
    assert signal.state == "open"
    assert signal.reason == "loop_depth 26 > 25"
    assert signal.opened_at == at(T0 + 26)
    assert signal.ttl_s == 600


def tool(ts: float, name: str = "search_web", args: str | None = "h1", **kw: Any) -> TraceEvent:
    return ev(ts, kind="tool", tool_name=name, tool_args_hash=args, **kw)


def test_same_tool_with_same_arguments_trips_on_the_sixth_call() -> None:
    board = BreakerBoard()
    noise = [tool(T0 + 0.5, args="other"), tool(T0 + 0.6, name="fetch_url", args="h1")]
    noise += [ev(T0 + 0.7 + i / 10, tool_name="search_web", tool_args_hash="h1") for i in range(3)]
    noise += [tool(T0 + 1.1, args=None)]  # no hash: not compared
    assert not board.observe(noise)  # other args, other tool, llm spans, no hash: not counted
    assert not any(feed(board, [tool(T0 + 2 + i) for i in range(5)]))
    signal = one(board.observe([tool(T0 + 10)]))
    assert signal.reason == "tool search_web called 6 times with the same arguments (limit 5)"
    assert signal.opened_at == at(T0 + 10)


def test_trace_spend_trips_when_cumulative_cost_crosses_the_budget() -> None:
    board = BreakerBoard()
    assert not any(feed(board, [ev(T0 + i, cost_usd=1.0) for i in range(5)]))  # $5.00, not over
    signal = one(board.observe([ev(T0 + 5, cost_usd=0.12)]))
    assert signal.reason == "trace spend $5.12 > $5.00"


def test_spend_reason_shows_enough_digits_to_tell_spend_from_limit() -> None:
    board = BreakerBoard()
    signal = one(board.observe([ev(T0, cost_usd=5.0), ev(T0 + 1, cost_usd=0.001)]))
    assert signal.reason == "trace spend $5.0010 > $5.00"


def test_step_rate_trips_on_the_61st_step_within_a_minute() -> None:
    board = BreakerBoard()
    evals = [ev(T0 + 0.1 * i, kind="eval") for i in range(100)]  # late scores are not steps
    assert not board.observe(evals)
    assert not any(feed(board, [ev(T0 + 10 + 0.5 * i) for i in range(60)]))
    signal = one(board.observe([ev(T0 + 45)]))
    assert signal.reason == "61 steps in 60 s (limit 60)"


def test_steady_steps_under_the_rate_never_trip() -> None:
    board = BreakerBoard()
    assert not board.observe([ev(T0 + 1.01 * i) for i in range(300)])


# --------------------------------------------------------------------------- open traces


def test_an_open_trace_does_not_signal_again_but_keeps_counting() -> None:
    board = BreakerBoard()
    opened = one(board.observe([ev(T0, loop_depth=26)]))
    more = [ev(T0 + i, loop_depth=26 + i, cost_usd=1.0) for i in range(1, 100)]
    more += [tool(T0 + 100 + i) for i in range(10)]
    assert board.observe(more) == []
    assert board.open_signals() == [opened]
    # still running a ttl later: re-sent open with the current reason (a keep-alive)
    refreshed = one(board.observe([ev(T0 + 600, loop_depth=130)]))
    assert refreshed.state == "open"
    assert refreshed.reason == "loop_depth 130 > 25"
    assert refreshed.opened_at == at(T0 + 600)
    assert board.open_signals() == [refreshed]


def test_idle_open_trace_expires_with_a_closed_signal() -> None:
    board = BreakerBoard()
    one(board.observe([ev(T0, loop_depth=30)]))
    board.observe([ev(T0 + 1, trace="quiet")])
    assert len(board) == 2
    assert board.advance(T0 + 600) == []  # idle for exactly the ttl: kept
    closed = one(board.advance(T0 + 600.5))
    assert closed.scope == "trace:t1"
    assert closed.state == "closed"
    assert closed.reason == "expired: no events for 600 s"
    assert closed.opened_at == at(T0)
    assert len(board) == 1
    assert board.advance(T0 + 602) == []  # a trace that never tripped goes silently
    assert len(board) == 0
    assert board.open_signals() == []


def test_expiry_also_happens_as_events_of_other_traces_move_time() -> None:
    board = BreakerBoard()
    one(board.observe([ev(T0, loop_depth=30)]))
    signals = board.observe([ev(T0 + 700, trace="other")])
    assert [(s.scope, s.state) for s in signals] == [("trace:t1", "closed")]
    # the same trace id later starts afresh
    assert board.observe([ev(T0 + 701, loop_depth=3)]) == []


def test_an_open_trace_is_never_released_to_make_room() -> None:
    """Issue 16: an evicted open trace used to be published ``closed: evicted`` and the
    runaway agent went again. Now closed traces are shed and the open one stays."""
    board = BreakerBoard(max_traces=100)
    opened = one(board.observe([ev(T0, trace="runaway", loop_depth=99)]))
    signals = board.observe([ev(T0 + i / 1000, trace=f"t{i}") for i in range(1, 1000)])
    assert signals == [] and len(board) == 100
    assert board.traces_shed == 900 and board.traces_refused == 0
    assert [s.scope for s in board.open_signals()] == [opened.scope]
    # it stays open while it runs (keep-alive after ttl), and closes only by its own expiry
    assert board.observe([ev(T0 + 300, trace="runaway", loop_depth=3)]) == []
    again = one(board.observe([ev(T0 + 600, trace="runaway", loop_depth=3)]))
    assert (again.scope, again.state) == ("trace:runaway", "open")
    expired = one(board.advance(T0 + 600 + 600.5))
    assert (expired.state, expired.reason) == ("closed", "expired: no events for 600 s")


def test_shedding_drops_the_least_recently_active_closed_trace() -> None:
    board = BreakerBoard(max_traces=3)
    board.observe([ev(T0, trace="a", loop_depth=30), ev(T0 + 1, trace="b"), ev(T0 + 2, trace="c")])
    board.observe([ev(T0 + 3, trace="b")])  # b is now more recent than c
    assert board.observe([ev(T0 + 4, trace="d")]) == []
    assert board.traces_of({-1}) == ["a", "b", "d"]  # c went, without a signal


def test_when_every_tracked_trace_is_open_a_new_one_is_refused_and_counted() -> None:
    board = BreakerBoard(max_traces=2)
    board.observe([ev(T0, trace="a", loop_depth=30), ev(T0 + 1, trace="b", loop_depth=30)])
    assert board.observe([ev(T0 + 2, trace="c", loop_depth=30)]) == []
    assert len(board) == 2 and board.traces_refused == 1
    assert {s.scope for s in board.open_signals()} == {"trace:a", "trace:b"}
    closed = board.advance(T0 + 700)  # both expire by their ttl: room again
    assert {s.scope for s in closed} == {"trace:a", "trace:b"}
    assert one(board.observe([ev(T0 + 701, trace="c", loop_depth=30)])).scope == "trace:c"


def test_forget_traces_drops_a_partitions_traces_without_a_signal() -> None:
    board = BreakerBoard()
    events = [ev(T0, trace="p0", loop_depth=30), ev(T0 + 1, trace="p1a"), ev(T0 + 2, trace="p1b")]
    board.observe(events, sources=[0, 1, 1])
    assert board.traces_of({1}) == ["p1a", "p1b"]
    assert board.forget_traces([*board.traces_of({0}), "unknown"]) == 1
    assert board.open_signals() == [] and len(board) == 2
    assert board.advance(T0 + 10_000) == []  # nothing left to close: the new owner signals


def test_an_open_route_is_never_shed_and_the_pressure_is_counted() -> None:
    board = BreakerBoard(max_routes=1)
    trip_error_burst(board)
    assert board.observe([ev(T0 + 30, trace="x", route="other/route")]) == []
    assert board.routes_refused == 1 and board.routes_shed == 0
    assert [s.scope for s in board.open_signals()] == [f"route:{ROUTE}"]
    board.advance(T0 + 30 + 61)  # half-open now: it may go, with a signal
    closed = one(board.observe([ev(T0 + 92, trace="y", route="other/route")]))
    assert (closed.scope, closed.state) == (f"route:{ROUTE}", "closed")
    assert closed.reason == "evicted: more than 1 routes tracked" and board.routes_shed == 1


# --------------------------------------------------------------------------- route conditions

ROUTE = "support/chat"


def call(ts: float, ok: bool = True, trace: str | None = None, **kw: Any) -> TraceEvent:
    status = "ok" if ok else "error"
    return ev(ts, trace=trace or f"r{next(_ids)}", route=ROUTE, status=status, **kw)


def trip_error_burst(board: BreakerBoard) -> BreakerSignal:
    """15 good calls, then failures: opens at the 15th failure (30 calls, 50 %)."""
    assert not board.observe([call(T0 + i) for i in range(15)])
    assert not any(feed(board, [call(T0 + 15 + i, ok=False) for i in range(14)]))
    return one(board.observe([call(T0 + 29.5, ok=False)]))


def test_error_burst_opens_the_route() -> None:
    board = BreakerBoard()
    signal = trip_error_burst(board)
    assert signal.scope == f"route:{ROUTE}"
    assert signal.reason == "error rate 50% over 30 calls in 60 s (limit 50%)"
    assert signal.opened_at == at(T0 + 29.5)
    assert signal.ttl_s == 60


def test_error_burst_needs_min_calls() -> None:
    board = BreakerBoard()
    assert not board.observe([call(T0 + i, ok=False) for i in range(19)])
    signal = one(board.observe([call(T0 + 19, ok=False)]))
    assert signal.reason == "error rate 100% over 20 calls in 60 s (limit 50%)"


def test_errors_outside_the_window_and_non_calls_do_not_count() -> None:
    board = BreakerBoard()
    assert not board.observe([call(T0 + i, ok=False) for i in range(15)])
    steps = [call(T0 + 15, ok=False, kind=kind) for kind in ("agent_step", "eval")] * 10
    assert not board.observe(steps)
    assert not board.observe([call(T0 + 61 + i, ok=False) for i in range(15)])  # old ones left


def test_open_route_half_opens_and_recovers_with_good_probes() -> None:
    board = BreakerBoard()
    opened = trip_error_burst(board)
    assert not board.observe([call(T0 + 40 + i, ok=False) for i in range(20)])  # open: silent
    probes = [call(T0 + 89.5 + i) for i in range(4)]  # half-open from T0 + 89.5
    assert not board.observe(probes)
    closed = one(board.observe([call(T0 + 94)]))
    assert (closed.scope, closed.state) == (opened.scope, "closed")
    assert closed.reason == "recovered: error rate 0% over 5 calls since half-open"
    assert closed.opened_at == opened.opened_at
    assert board.open_signals() == []
    # the burst's failures no longer count: a few more errors do not re-open at once
    assert not board.observe([call(T0 + 95 + i, ok=False) for i in range(5)])


def test_half_open_route_reopens_while_still_failing() -> None:
    board = BreakerBoard()
    trip_error_burst(board)
    board.advance(T0 + 90)  # half-open, nothing published
    assert not board.observe([call(T0 + 90 + i, ok=i % 2 == 0) for i in range(4)])
    reopened = one(board.observe([call(T0 + 95, ok=False)]))  # 3 errors out of 5 probes
    assert reopened.state == "open"
    assert reopened.opened_at == at(T0 + 95)
    assert reopened.reason == (
        "still failing: error rate 60% over 5 calls since half-open (limit 50%)"
    )
    # and the cycle goes on: half-open again open_s later
    assert not board.observe([call(T0 + 156 + i) for i in range(4)])
    assert one(board.observe([call(T0 + 161)])).state == "closed"


def spend_history(board: BreakerBoard, minutes: int, per_minute: float) -> float:
    """One call a second for ``minutes``, each costing ``per_minute / 60``; the end time."""
    calls = [call(T0 + s, cost_usd=per_minute / 60) for s in range(minutes * 60)]
    assert not board.observe(calls)
    return T0 + minutes * 60


def test_spend_burst_opens_the_route() -> None:
    board = BreakerBoard()
    end = spend_history(board, 20, per_minute=30.0)  # $30 a minute, 60 traces a minute
    burst = [call(end + i / 100, cost_usd=5.0) for i in range(100)]
    signals = [s for step in feed(board, burst) for s in step]
    signal = one(signals)
    assert signal.scope == f"route:{ROUTE}"
    spend, ratio = re.fullmatch(
        r"spend \$(\d+\.\d\d) in 60 s, (\d+\.\d)x the route's average \(limit 5x\)", signal.reason
    ).groups()  # type: ignore[union-attr]
    assert 150 < float(spend) <= 156 and 5.0 <= float(ratio) <= 5.2


def test_no_spend_burst_without_enough_history() -> None:
    board = BreakerBoard()
    end = spend_history(board, 5, per_minute=30.0)  # < min_history (10 minutes)
    assert not board.observe([call(end + i / 100, cost_usd=5.0) for i in range(100)])


@pytest.mark.parametrize(("min_baseline_traces", "trips"), [(5.0, False), (0.0, True)])
def test_few_expensive_traces_are_not_a_burst(min_baseline_traces: float, trips: bool) -> None:
    # one $3 trace a minute for 20 minutes, then ten in one minute: 10x the average, but
    # only ten traces (a burst must beat 5x the spend of min_baseline_traces traces too)
    limits = BreakerLimits(route=RouteLimits(min_baseline_traces=min_baseline_traces))
    board = BreakerBoard(limits)
    assert not board.observe([call(T0 + 60 * m, cost_usd=3.0) for m in range(20)])
    signals = board.observe([call(T0 + 1200 + i, cost_usd=3.0) for i in range(10)])
    assert bool(signals) is trips
    if trips:
        assert signals[0].reason.startswith("spend $")


def test_absolute_spend_cap_needs_no_history() -> None:
    limits = BreakerLimits(route=RouteLimits(max_spend_usd=10.0))
    board = BreakerBoard(limits)
    assert not board.observe([call(T0 + i, cost_usd=1.0) for i in range(10)])
    signal = one(board.observe([call(T0 + 10, cost_usd=0.5)]))
    assert signal.reason == "spend $10.50 in 60 s > $10.00"


# --------------------------------------------------------------------------- configuration


def test_per_route_limits_from_a_rules_file() -> None:
    rules = parse_rules(
        textwrap.dedent("""\
        breakers:
          trace: {max_loop_depth: 20}
          route: {min_calls: 5}
          overrides:
            - route: "agent/*"
              trace: {max_loop_depth: 40}
              route_limits: {error_rate: 0.9}
        """)
    )
    board = BreakerBoard(rules.breaker_limits)
    deep = [ev(T0, trace=f"x{r}", route=r, loop_depth=30) for r in ("support/chat", "agent/coder")]
    assert [s.scope for s in board.observe(deep)] == ["trace:xsupport/chat"]
    assert one(board.observe([ev(T0 + 1, trace="y", loop_depth=41)])).reason == (
        "loop_depth 41 > 40"
    )
    errors = [
        ev(T0 + 2 + i / 10, trace=f"z{i}", route=r, status="error" if i % 4 else "ok")
        for r in ("support/chat", "agent/coder")
        for i in range(8)
    ]
    assert [s.scope for s in board.observe(errors)] == ["route:support/chat"]


def test_one_limits_object_for_every_route() -> None:
    board = BreakerBoard(BreakerLimits(trace=TraceLimits(max_loop_depth=3)))
    assert one(board.observe([ev(T0, loop_depth=4)])).reason == "loop_depth 4 > 3"


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (TraceLimits, {"max_loop_depth": -1}),
        (TraceLimits, {"max_same_tool_calls": 0}),
        (TraceLimits, {"ttl_s": 0}),
        (TraceLimits, {"max_cost_usd": float("nan")}),
        (RouteLimits, {"error_rate": 0}),
        (RouteLimits, {"error_rate": 1.5}),
        (RouteLimits, {"window_s": 1.5}),
        (RouteLimits, {"spend_ratio": 0.5}),
        (RouteLimits, {"max_spend_usd": 0}),
        (RouteLimits, {"open_s": -1}),
    ],
)
def test_impossible_limits_are_refused(cls: type[Any], kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        cls(**kwargs)


# --------------------------------------------------------------------------- whole streams


def demo_events(
    seed: int, rate: float, duration_s: float, **route_changes: Any
) -> list[TraceEvent]:
    routes = [
        dataclasses.replace(r, **route_changes) if r.workload == "agent" else r
        for r in DEFAULT_ROUTES
    ]
    raw = DemoTraffic(seed=seed, routes=routes).events(T0, rate, duration_s, drain=True)
    return [TraceEvent.model_validate(e) for e in raw]


def test_runaway_agents_trip_within_their_sixth_identical_call() -> None:
    events = demo_events(3, 0.5, 600, runaway_rate=1.0, error_rate=0.0)  # no early failure
    signals = BreakerBoard().observe(events)
    runaway = {e.trace_id for e in events if e.route.startswith("agent/")}
    assert {s.scope for s in signals} == {f"trace:{t}" for t in runaway}
    for signal in signals:
        assert signal.reason.endswith("called 6 times with the same arguments (limit 5)")


def test_same_signals_however_the_events_are_batched() -> None:
    events = demo_events(4, 2.0, 900, runaway_rate=0.3)
    rng = np.random.default_rng(0)
    failing = {int(i) for i in rng.choice(len(events), size=len(events) // 3, replace=False)}
    events = [  # a burst of failures on top, so route breakers move too
        e.model_copy(update={"status": "error"}) if i in failing and e.ts > T0 + 300 else e
        for i, e in enumerate(events)
    ]
    whole = BreakerBoard(max_traces=50)
    expected = whole.observe(events) + whole.advance(events[-1].ts + 3600)
    assert {s.scope.split(":")[0] for s in expected} == {"trace", "route"}
    split = BreakerBoard(max_traces=50)
    got: list[BreakerSignal] = []
    start = 0
    while start < len(events):
        stop = start + int(rng.integers(1, 500))
        got += split.observe(events[start:stop])
        got += split.advance(split.now)  # the worker may call it between batches
        start = stop
    got += split.advance(events[-1].ts + 3600)
    assert got == expected


def test_normal_demo_traffic_never_trips() -> None:
    # ~4 500 traces over 25 minutes, long enough for the spend history to count
    events = demo_events(11, 3.0, 1500)
    board = BreakerBoard()
    assert board.observe(events) == []
    assert board.advance(events[-1].ts + 3600) == []
    assert len(board) == 0


@pytest.mark.parametrize("kind", ["clean", "error_burst", "cost_jump"])
def test_benchmark_scenarios_never_trip(kind: str) -> None:
    scenario = make_scenario(kind, 2)
    events = [TraceEvent.model_validate(e) for e in scenario.events]
    assert BreakerBoard().observe(events) == []
