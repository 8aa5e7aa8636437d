"""Circuit breakers: trace events in, breaker signals (contract.md, "Breaker signal") out.

An agent stuck calling the same tool, or one whose steps keep climbing, can burn
hundreds of dollars in minutes; a route whose provider fails or whose spend
explodes should be stopped as a whole. ``BreakerBoard.observe`` looks at every
event once and returns the breaker *transitions* it causes, within the event that
crosses a limit. Everything runs on event time (the events' ``ts``), never the
wall clock, so a replay of the same events gives the same signals, whatever the
batches they are split into.

Per trace (scope ``trace:<trace_id>``, limits ``TraceLimits``), a trace opens when

- ``loop_depth``: an event's ``loop_depth`` is above ``max_loop_depth``
  ("loop_depth 26 > 25");
- ``same tool``: more than ``max_same_tool_calls`` ``tool`` events of the trace
  carry the same ``(tool_name, tool_args_hash)`` ("tool search_web called 6 times
  with the same arguments (limit 5)"); events without an args hash are not
  compared, other kinds are not counted (an ``llm`` span naming the tool it
  asked for would count the call twice);
- ``spend``: the trace's cumulative ``cost_usd`` is above ``max_cost_usd``
  ("trace spend $5.12 > $5.00"); events without ``cost_usd`` add nothing;
- ``step rate``: more than ``max_steps_per_minute`` spans of the trace (every
  kind but ``eval``: a late score is not work the app did) ended within the last
  60 s of the trace's event time ("61 steps in 60 s (limit 60)").

An open trace does not signal again on each further event, but its counters go
on, and if it is still active ``ttl_s`` after its ``opened_at`` it is re-sent
``open`` with a fresh ``opened_at`` and the current reason (a keep-alive, so a
client that ignores signals older than ``ttl_s`` still sees a running trace as
open). A trace breaker never closes while the trace runs: it closes when the
trace expires, i.e. no event of it for ``ttl_s`` of event time ("expired: no
events for 600 s"). A trace's limits are those of the route of its first event.

Per route (scope ``route:<name>``, limits ``RouteLimits``), over the route's last
``window_s`` seconds of event time (one-second buckets):

- ``error burst``: at least ``min_calls`` calls and an error rate (``status``
  ``error`` or ``timeout``) of at least ``error_rate`` ("error rate 62% over 40
  calls in 60 s (limit 50%)"). A call is any span but ``eval`` and
  ``agent_step`` (a step covers its LLM and tool calls, which carry their own
  status; counting it too would count a failure twice).
- ``spend burst``: the window's spend is at least ``min_spend_usd`` and more than
  ``spend_ratio`` times the route's baseline, once the route has at least
  ``min_history_s`` of history ("spend $3.10 in 60 s, 8.2x the route's average
  (limit 5x)"); or, if ``max_spend_usd`` is set, the window's spend is above it,
  history or not ("spend $3.10 in 60 s > $2.00"). The baseline is the average
  spend per window over the ``history_s`` before the window, but at least the
  spend of ``min_baseline_traces`` average traces of the route: with a few
  expensive traces a minute (an agent route) the spend per minute is lumpy, and
  on the demo's agent routes at low volume a plain 5x-the-average rule tripped
  on normal traffic. History is kept per minute.

A route breaker is a three-state machine:

- closed -> open: a burst; the signal has ``opened_at`` = the offending
  event's ``ts`` and ``ttl_s`` = ``open_s``.
- open -> half-open: ``open_s`` of event time after ``opened_at``. Nothing is
  published: a client that sees an open route signal older than its ``ttl_s``
  treats the route as half-open and lets a few probe calls through.
- half-open -> closed: once ``probe_calls`` calls arrived since half-open and
  their error rate is below ``error_rate`` and the spend burst no longer holds
  on the window, ``closed`` is published ("recovered: error rate 0% over 5 calls
  since half-open"); the error window starts afresh, so the failures of the burst
  cannot re-open it at once.
- half-open -> open: after ``probe_calls`` calls, either condition still holds:
  ``open`` again with a new ``opened_at`` ("still failing: error rate 80% over 5
  calls since half-open (limit 50%)").

Events that arrive while a route is open still count in its windows. A route
event older than the route's newest second counts in that second.

Cost per event is O(1): a few dict and deque operations. Memory is bounded:
at most ``max_traces`` traces, each with at most ``max_steps_per_minute + 1``
timestamps and ``MAX_TOOL_KEYS`` distinct tool calls (later new ones are not
counted); at most ``max_routes`` routes, each with at most ``window_s`` buckets
and ``history_s / 60 + 1`` minutes of spend.

When the board is full it never releases an open breaker to make room: a
runaway agent would go again (issue 16). It sheds the least recently active
*closed* trace (``traces_shed``); when every tracked trace is open, a new trace
is not tracked (``traces_refused``) until one expires by its own ttl. Routes
likewise: the least recently active closed route goes first, then a half-open
one (its open period is over; clients already let probes through), with
``closed: evicted`` published; an open route never, and a new route that finds
only open ones is not tracked (``routes_refused``). The counters are the
board's pressure, shown on the worker's ``/status`` and ``/metrics``.
Idle traces are found in order of activity (arrival order), so with events out
of order across traces an idle trace may wait for a more recently active one
ahead of it; never longer than the largest ``ttl_s``.

Why the defaults (``TraceLimits``, ``RouteLimits``): the demo's agent routes
(``tracewatch.demo``) run at most 16 steps (loop_depth <= 15), at most 49 spans,
and cost at most about $2 a run, and never repeat a tool call with the same
arguments more than twice; their stuck runs repeat one call 26..40 times. So the
trace limits leave about 60 % headroom over the worst normal run yet stop a
runaway within about a minute or its 6th identical call. Route error rates
are 0.5..3 % in normal traffic and 15..25 % in the demo's error-burst incident:
a route breaker is a big hammer (it stops every request of the route), so it is
for outages (half the calls failing), not for degradations, which alerts cover.
Likewise spend: 5x the route's recent average and at least $1 a minute, not the
2..3x of a price change.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from tracewatch.schemas.breaker import BreakerSignal
from tracewatch.schemas.record import EventRecord

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_TOOL_KEYS",
    "STEP_WINDOW_S",
    "BreakerBoard",
    "BreakerLimits",
    "RouteLimits",
    "TraceLimits",
]

#: The step-rate window of a trace (``max_steps_per_minute``), seconds of event time.
STEP_WINDOW_S: Final = 60.0
#: Distinct (tool_name, tool_args_hash) pairs remembered per trace.
MAX_TOOL_KEYS: Final = 256
#: Route history is kept in slots of this many seconds.
_SLOT_S: Final = 60

_CLOSED, _OPEN, _HALF_OPEN = 0, 1, 2
_NOT_CALLS: Final = frozenset({"eval", "agent_step"})


def _positive(owner: str, name: str, value: float) -> None:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{owner}.{name} must be a finite number > 0, got {value!r}")


def _at_least(owner: str, name: str, value: float, low: float) -> None:
    if not math.isfinite(value) or value < low:
        raise ValueError(f"{owner}.{name} must be a finite number >= {low:g}, got {value!r}")


@dataclass(frozen=True, slots=True)
class TraceLimits:
    """When one trace is stopped; ``ttl_s`` is the signal's ttl and the idle expiry."""

    max_loop_depth: int = 25
    max_same_tool_calls: int = 5
    max_cost_usd: float = 5.0
    max_steps_per_minute: int = 60
    ttl_s: float = 600.0

    def __post_init__(self) -> None:
        _at_least("TraceLimits", "max_loop_depth", self.max_loop_depth, 0)
        _at_least("TraceLimits", "max_same_tool_calls", self.max_same_tool_calls, 1)
        _at_least("TraceLimits", "max_cost_usd", self.max_cost_usd, 0)
        _at_least("TraceLimits", "max_steps_per_minute", self.max_steps_per_minute, 1)
        _positive("TraceLimits", "ttl_s", self.ttl_s)


@dataclass(frozen=True, slots=True)
class RouteLimits:
    """When a whole route is stopped, and how it is probed back (seconds of event time).

    A ``min_history_s`` longer than ``history_s`` counts as ``history_s``.
    """

    error_rate: float = 0.5
    min_calls: int = 20
    window_s: float = 60.0
    spend_ratio: float = 5.0
    history_s: float = 1800.0
    min_history_s: float = 600.0
    min_spend_usd: float = 1.0
    min_baseline_traces: float = 5.0
    max_spend_usd: float | None = None
    open_s: float = 60.0
    probe_calls: int = 5

    def __post_init__(self) -> None:
        if not 0.0 < self.error_rate <= 1.0:
            raise ValueError(f"RouteLimits.error_rate must be in (0, 1], got {self.error_rate!r}")
        _at_least("RouteLimits", "min_calls", self.min_calls, 1)
        _at_least("RouteLimits", "window_s", self.window_s, 1)
        if self.window_s % 1:
            raise ValueError(f"RouteLimits.window_s must be whole seconds, got {self.window_s!r}")
        _at_least("RouteLimits", "spend_ratio", self.spend_ratio, 1)
        _at_least("RouteLimits", "history_s", self.history_s, _SLOT_S)
        _at_least("RouteLimits", "min_history_s", self.min_history_s, 0)
        _at_least("RouteLimits", "min_spend_usd", self.min_spend_usd, 0)
        _at_least("RouteLimits", "min_baseline_traces", self.min_baseline_traces, 0)
        if self.max_spend_usd is not None:
            _positive("RouteLimits", "max_spend_usd", self.max_spend_usd)
        _positive("RouteLimits", "open_s", self.open_s)
        _at_least("RouteLimits", "probe_calls", self.probe_calls, 1)


@dataclass(frozen=True, slots=True)
class BreakerLimits:
    """The trace and route limits that apply to one route."""

    trace: TraceLimits = field(default_factory=TraceLimits)
    route: RouteLimits = field(default_factory=RouteLimits)


DEFAULT_LIMITS: Final = BreakerLimits()


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _usd(value: float, limit: float) -> tuple[str, str]:
    """``$5.12``, ``$5.00``; more digits when cents cannot tell the two apart."""
    digits = 2
    while digits < 6 and f"{value:.{digits}f}" == f"{limit:.{digits}f}":
        digits += 2
    return f"${value:.{digits}f}", f"${limit:.2f}"


# --------------------------------------------------------------------------- per trace


class _Trace:
    """What one trace has done so far; ``opened_ts`` is None while its breaker is closed."""

    __slots__ = (
        "cost",
        "group",
        "last_ts",
        "limits",
        "max_depth",
        "opened_ts",
        "reason",
        "seq",
        "source",
        "steps",
        "tools",
        "top_calls",
        "top_tool",
        "trace_id",
    )

    def __init__(self, trace_id: str, limits: TraceLimits, group: OrderedDict[str, _Trace]):
        self.trace_id = trace_id
        self.limits = limits
        self.group = group
        self.source = -1  # the source partition of its latest event (-1: not known)
        self.last_ts = -math.inf
        self.seq = 0
        self.max_depth = -1
        self.tools: dict[tuple[str, str], int] | None = None  # made at the first tool call
        self.top_tool = ""
        self.top_calls = 0
        self.cost = 0.0
        self.steps: deque[float] = deque(maxlen=limits.max_steps_per_minute + 1)
        self.opened_ts: float | None = None
        self.reason = ""

    def update(self, event: EventRecord) -> bool:
        """Fold ``event`` in; True when a limit is now exceeded (``breach`` says which).

        The check is the same as ``breach``'s, done here on the values just updated
        so that the common case (no limit near) costs no second call per event.
        """
        ts = event.ts
        if ts > self.last_ts:
            self.last_ts = ts
        limits = self.limits
        depth = event.loop_depth
        if depth is not None and depth > self.max_depth:
            self.max_depth = depth
        if event.kind == "tool" and event.tool_name is not None:
            args = event.tool_args_hash
            if args is not None:
                key = (event.tool_name, args)
                tools = self.tools
                if tools is None:
                    tools = self.tools = {}
                calls = tools.get(key, 0) + 1
                if calls > 1 or len(tools) < MAX_TOOL_KEYS:
                    tools[key] = calls
                    if calls > self.top_calls:
                        self.top_calls = calls
                        self.top_tool = event.tool_name
        cost = event.cost_usd
        if cost:
            self.cost += cost
        steps = self.steps
        if event.kind != "eval":
            steps.append(ts)
        return (
            self.max_depth > limits.max_loop_depth
            or self.top_calls > limits.max_same_tool_calls
            or self.cost > limits.max_cost_usd
            or (len(steps) == steps.maxlen and steps[0] > steps[-1] - STEP_WINDOW_S)
        )

    def breach(self) -> str | None:
        """Why the trace is over a limit now, or None."""
        limits = self.limits
        if self.max_depth > limits.max_loop_depth:
            return f"loop_depth {self.max_depth} > {limits.max_loop_depth}"
        if self.top_calls > limits.max_same_tool_calls:
            return (
                f"tool {self.top_tool} called {self.top_calls} times with the same arguments "
                f"(limit {limits.max_same_tool_calls})"
            )
        if self.cost > limits.max_cost_usd:
            spent, limit = _usd(self.cost, limits.max_cost_usd)
            return f"trace spend {spent} > {limit}"
        steps = self.steps
        if len(steps) == steps.maxlen and steps[0] > steps[-1] - STEP_WINDOW_S:
            return (
                f"{len(steps)} steps in {STEP_WINDOW_S:g} s (limit {limits.max_steps_per_minute})"
            )
        return None


# --------------------------------------------------------------------------- per route


class _Route:
    """A route's sliding window (one-second buckets), spend history and breaker state."""

    __slots__ = (
        "buckets",
        "calls",
        "error_rate",
        "errors",
        "first_sec",
        "hist",
        "hist_sum",
        "hist_traces",
        "limits",
        "min_calls",
        "opened_ts",
        "probe_calls",
        "probe_errors",
        "scope",
        "sec",
        "spend",
        "spend_trip",
        "state",
        "window",
    )

    def __init__(self, name: str, limits: BreakerLimits, sec: int) -> None:
        self.scope = f"route:{name}"
        self.limits = limits
        self.window = int(limits.route.window_s)
        # the closed-state checks, unpacked: they run on every event
        self.min_calls = limits.route.min_calls
        self.error_rate = limits.route.error_rate
        self.first_sec = sec
        self.sec = sec
        # [second, calls, errors, spend, new traces] for each second of the window with events
        self.buckets: deque[list[float]] = deque([[sec, 0, 0, 0.0, 0]])
        self.calls = 0
        self.errors = 0
        self.spend = 0.0
        # [slot, spend, new traces] per minute (slot = second // 60) behind the window
        self.hist: deque[list[float]] = deque()
        self.hist_sum = 0.0
        self.hist_traces = 0.0
        self.state = _CLOSED
        self.opened_ts = 0.0
        self.probe_calls = 0
        self.probe_errors = 0
        self.spend_trip = self._spend_trip()

    def update(self, event: EventRecord, new_trace: bool) -> None:
        sec = int(event.ts)
        if sec > self.sec:
            self._roll(sec)
        bucket = self.buckets[-1]
        if new_trace:
            bucket[4] += 1
        if event.kind not in _NOT_CALLS:
            bucket[1] += 1
            self.calls += 1
            if event.status != "ok":
                bucket[2] += 1
                self.errors += 1
        cost = event.cost_usd
        if cost:
            bucket[3] += cost
            self.spend += cost

    def _roll(self, sec: int) -> None:
        """Move the window to end at ``sec``: old seconds leave it for the history."""
        self.sec = sec
        buckets, hist = self.buckets, self.hist
        start = sec - self.window
        while buckets and buckets[0][0] <= start:
            old_sec, calls, errors, spend, traces = buckets.popleft()
            self.calls -= int(calls)
            self.errors -= int(errors)
            self.spend -= spend
            if spend or traces:
                slot = old_sec // _SLOT_S
                if hist and hist[-1][0] == slot:
                    hist[-1][1] += spend
                    hist[-1][2] += traces
                else:
                    hist.append([slot, spend, traces])
                self.hist_sum += spend
                self.hist_traces += traces
        if not buckets:
            self.spend = 0.0  # no rounding residue when the window empties
        oldest = (start - self.limits.route.history_s) // _SLOT_S
        while hist and hist[0][0] < oldest:
            _, spend, traces = hist.popleft()
            self.hist_sum -= spend
            self.hist_traces -= traces
        if not hist:
            self.hist_sum = 0.0
        buckets.append([sec, 0, 0, 0.0, 0])
        self.spend_trip = self._spend_trip()

    def _covered(self) -> float:
        """Seconds of history behind the window (at most ``history_s``)."""
        return min(self.limits.route.history_s, self.sec - self.window + 1 - self.first_sec)

    def _baseline(self) -> tuple[float, float, float] | None:
        """(average spend per window, the baseline a burst is measured against, seconds of
        history), or None without enough history.

        The baseline is the average, but at least the spend of ``min_baseline_traces``
        average traces: on a route with few, expensive traces (an agent route at one run
        a minute) the window's spend is lumpy, and two runs ending in the same minute
        are not a burst.
        """
        limits = self.limits.route
        covered = self._covered()
        if covered < min(limits.min_history_s, limits.history_s) or covered <= 0:
            return None
        average = self.hist_sum * limits.window_s / covered
        per_trace = self.hist_sum / self.hist_traces if self.hist_traces > 0 else 0.0
        return average, max(average, limits.min_baseline_traces * per_trace), covered

    def _spend_trip(self) -> float:
        """A window spend below this cannot be a spend burst (it changes once a second)."""
        limits = self.limits.route
        trip = math.inf if limits.max_spend_usd is None else limits.max_spend_usd
        baseline = self._baseline()
        if baseline is not None:
            trip = min(trip, max(limits.min_spend_usd, limits.spend_ratio * baseline[1]))
        return trip

    def error_burst(self) -> str | None:
        limits = self.limits.route
        calls = self.calls
        if calls >= limits.min_calls and self.errors >= limits.error_rate * calls:
            return (
                f"error rate {self.errors / calls:.0%} over {calls} calls in "
                f"{limits.window_s:g} s (limit {limits.error_rate:.0%})"
            )
        return None

    def spend_burst(self) -> str | None:
        limits = self.limits.route
        spend = self.spend
        if limits.max_spend_usd is not None and spend > limits.max_spend_usd:
            spent, limit = _usd(spend, limits.max_spend_usd)
            return f"spend {spent} in {limits.window_s:g} s > {limit}"
        baseline = self._baseline()
        if spend < limits.min_spend_usd or spend <= 0 or baseline is None:
            return None
        average, level, covered = baseline
        if spend <= limits.spend_ratio * level:
            return None
        if average > 0:
            how = f"{spend / average:.1f}x the route's average"
        else:
            how = f"the route spent nothing in the previous {covered:g} s"
        return f"spend ${spend:.2f} in {limits.window_s:g} s, {how} (limit {limits.spend_ratio:g}x)"

    def probe(self, event: EventRecord) -> None:
        if event.kind not in _NOT_CALLS:
            self.probe_calls += 1
            if event.status != "ok":
                self.probe_errors += 1

    def probe_verdict(self) -> tuple[bool, str] | None:
        """(still failing, reason) once enough probes came in, else None."""
        limits = self.limits.route
        calls, errors = self.probe_calls, self.probe_errors
        if calls < limits.probe_calls:
            return None
        rate = f"error rate {errors / calls:.0%} over {calls} calls since half-open"
        if errors >= limits.error_rate * calls:
            return True, f"still failing: {rate} (limit {limits.error_rate:.0%})"
        spend = self.spend_burst()
        if spend is not None:
            return True, f"still failing: {spend}"
        return False, f"recovered: {rate}"

    def forget_errors(self) -> None:
        """Start the error window afresh (after a recovery)."""
        for bucket in self.buckets:
            bucket[1] = bucket[2] = 0
        self.calls = self.errors = 0


# --------------------------------------------------------------------------- the board


class BreakerBoard:
    """Trace and route breakers over a stream of events, in event time.

    ``limits_for`` maps a route to its limits (e.g. ``RulesFile.breaker_limits``)
    or is one ``BreakerLimits`` for every route; it is called once per route.
    ``observe`` takes events in partition order and returns the transitions they
    cause; ``advance`` lets event time pass without events.
    """

    def __init__(
        self,
        limits_for: Callable[[str], BreakerLimits] | BreakerLimits = DEFAULT_LIMITS,
        max_traces: int = 100_000,
        max_routes: int = 10_000,
    ) -> None:
        if max_traces < 1 or max_routes < 1:
            raise ValueError("max_traces and max_routes must be >= 1")
        self.limits_for = limits_for
        self.max_traces = max_traces
        self.max_routes = max_routes
        self._lookup: Callable[[str], BreakerLimits] = (
            (lambda _route: limits_for) if isinstance(limits_for, BreakerLimits) else limits_for
        )
        self._traces: dict[str, _Trace] = {}
        # traces by (ttl, open), each in order of activity: the idle ones are at the front,
        # and the closed groups' fronts are the ones that may be shed for room
        self._by_ttl: dict[tuple[float, bool], OrderedDict[str, _Trace]] = {}
        #: pressure: closed traces dropped before their ttl to make room, new traces not
        #: tracked because every tracked one was open, routes shed and routes not tracked
        self.traces_shed = 0
        self.traces_refused = 0
        self.routes_shed = 0
        self.routes_refused = 0
        self._routes: OrderedDict[str, _Route] = OrderedDict()
        self._open: dict[str, BreakerSignal] = {}
        self._now = -math.inf
        self._seq = 0
        # No trace can be idle for longer than its ttl before this event time.
        self._due = math.inf

    def __len__(self) -> int:
        return len(self._traces)

    @property
    def now(self) -> float:
        """The latest event time seen (``-inf`` before any)."""
        return self._now

    def open_signals(self) -> list[BreakerSignal]:
        """The latest ``open`` signal of every scope that is open now (or half-open)."""
        return list(self._open.values())

    def observe(
        self, events: Sequence[EventRecord], sources: Sequence[int] | None = None
    ) -> list[BreakerSignal]:
        """Process ``events`` one by one, in order; the transitions they cause.

        ``sources[i]``: the source partition of ``events[i]``, remembered per trace so
        that a revoke can forget exactly the traces of the partitions that moved.
        """
        out: list[BreakerSignal] = []
        if sources is None:
            for event in events:
                self._observe_one(event, out, -1)
        else:
            for event, source in zip(events, sources, strict=True):
                self._observe_one(event, out, source)
        return out

    def traces_of(self, sources: Collection[int]) -> list[str]:
        """The tracked traces whose latest event came from one of ``sources``."""
        return [t.trace_id for t in self._traces.values() if t.source in sources]

    def forget_traces(self, trace_ids: Iterable[str]) -> int:
        """Drop the state of these traces without a signal; how many were tracked.

        For a partition that moved to another worker: its new owner judges (and
        signals) the traces from now on, so this board must neither close nor
        re-open them.
        """
        forgotten = 0
        for trace_id in trace_ids:
            trace = self._traces.get(trace_id)
            if trace is not None:
                self._drop(trace)
                self._open.pop(f"trace:{trace_id}", None)
                forgotten += 1
        return forgotten

    def advance(self, ts: float) -> list[BreakerSignal]:
        """Let event time pass to ``ts``: idle traces expire, open routes turn half-open."""
        out: list[BreakerSignal] = []
        if ts > self._now:
            self._now = ts
        if self._now > self._due:
            self._expire(out)
        for route in self._routes.values():
            if route.state == _OPEN and self._now >= route.opened_ts + route.limits.route.open_s:
                self._half_open(route)
        return out

    # ------------------------------------------------------------------ internals

    def _observe_one(self, event: EventRecord, out: list[BreakerSignal], source: int) -> None:
        ts = event.ts
        if ts > self._now:
            self._now = ts
        if self._now > self._due:
            self._expire(out)
        route = self._routes.get(event.route)
        if route is None:
            route = self._new_route(event.route, int(ts), out)
        elif int(ts) > route.sec:
            self._routes.move_to_end(event.route)
        self._seq += 1
        trace = self._traces.get(event.trace_id)
        new = trace is None
        if trace is None:
            limits = self._lookup(event.route) if route is None else route.limits
            trace = self._new_trace(event.trace_id, ts, limits.trace, out)
        else:
            trace.group.move_to_end(event.trace_id)
        if trace is not None:
            trace.seq = self._seq
            trace.source = source
            if trace.update(event) or trace.opened_ts is not None:
                self._check_trace(trace, ts, out)
        if route is None:
            return  # every tracked route is open: this one is not judged (routes_refused)
        route.update(event, new)
        if (
            route.state != _CLOSED
            or (route.calls >= route.min_calls and route.errors >= route.error_rate * route.calls)
            or route.spend >= route.spend_trip
        ):
            self._check_route(route, event, out)  # a closed route under its limits: nothing

    def _check_trace(self, trace: _Trace, ts: float, out: list[BreakerSignal]) -> None:
        if trace.opened_ts is None:
            reason = trace.breach()
            if reason is not None:
                self._open_trace(trace, ts, reason, out)
        elif ts >= trace.opened_ts + trace.limits.ttl_s:  # keep-alive of a running open trace
            self._open_trace(trace, ts, trace.breach() or trace.reason, out)

    def _open_trace(self, trace: _Trace, ts: float, reason: str, out: list[BreakerSignal]) -> None:
        if trace.opened_ts is None:  # into the open group: never shed, only expired
            del trace.group[trace.trace_id]
            trace.group = self._group(trace.limits.ttl_s, True)
            trace.group[trace.trace_id] = trace
        trace.opened_ts, trace.reason = ts, reason
        scope = f"trace:{trace.trace_id}"
        signal = BreakerSignal(
            scope=scope, state="open", reason=reason, opened_at=_utc(ts), ttl_s=trace.limits.ttl_s
        )
        self._open[scope] = signal
        out.append(signal)

    def _close_trace(self, trace: _Trace, reason: str, out: list[BreakerSignal]) -> None:
        scope = f"trace:{trace.trace_id}"
        opened = self._open.pop(scope)
        out.append(
            BreakerSignal(scope=scope, state="closed", reason=reason, opened_at=opened.opened_at)
        )

    def _group(self, ttl: float, opened: bool) -> OrderedDict[str, _Trace]:
        group = self._by_ttl.get((ttl, opened))
        if group is None:
            group = self._by_ttl[ttl, opened] = OrderedDict()
        return group

    def _new_trace(
        self, trace_id: str, ts: float, limits: TraceLimits, out: list[BreakerSignal]
    ) -> _Trace | None:
        if len(self._traces) >= self.max_traces and not self._shed_trace():
            self.traces_refused += 1
            return None
        group = self._group(limits.ttl_s, False)
        trace = _Trace(trace_id, limits, group)
        self._traces[trace_id] = trace
        group[trace_id] = trace
        due = ts + limits.ttl_s
        if due < self._due:
            self._due = due
        return trace

    def _shed_trace(self) -> bool:
        """Drop the least recently active closed trace (the oldest front of the closed
        groups); False when every tracked trace is open. No signal: it was closed."""
        fronts = [
            next(iter(group.values()))
            for (_, opened), group in self._by_ttl.items()
            if group and not opened
        ]
        if not fronts:
            return False
        self._drop(min(fronts, key=lambda trace: trace.seq))
        self.traces_shed += 1
        return True

    def _drop(self, trace: _Trace) -> None:
        del self._traces[trace.trace_id]
        del trace.group[trace.trace_id]

    def _expire(self, out: list[BreakerSignal]) -> None:
        """Drop the traces idle for longer than their ttl; close the open ones.

        Each ttl group is in order of activity, so only its front is looked at;
        ``_due`` is then the earliest time a front can expire, and nothing needs
        looking at before it (with events in ts order, a front only gets more
        recent; out of order, an idle trace may be noticed a little late).
        """
        now, due = self._now, math.inf
        for (ttl, _), group in self._by_ttl.items():
            while group:
                trace = next(iter(group.values()))
                if now - trace.last_ts <= ttl:
                    due = min(due, trace.last_ts + ttl)
                    break
                self._drop(trace)
                if trace.opened_ts is not None:
                    self._close_trace(trace, f"expired: no events for {ttl:g} s", out)
        self._due = due

    def _new_route(self, name: str, sec: int, out: list[BreakerSignal]) -> _Route | None:
        if len(self._routes) >= self.max_routes and not self._shed_route(out):
            self.routes_refused += 1
            return None
        route = self._routes[name] = _Route(name, self._lookup(name), sec)
        return route

    def _shed_route(self, out: list[BreakerSignal]) -> bool:
        """Drop the least recently active closed route, else half-open one; never an
        open one (False when all are open). Open routes are few, so the scan is short."""
        half_open: tuple[str, _Route] | None = None
        for name, route in self._routes.items():
            if route.state == _CLOSED:
                del self._routes[name]
                self.routes_shed += 1
                return True
            if route.state == _HALF_OPEN and half_open is None:
                half_open = name, route
        if half_open is None:
            return False
        del self._routes[half_open[0]]
        self.routes_shed += 1
        self._close_route(half_open[1], f"evicted: more than {self.max_routes} routes tracked", out)
        return True

    def _check_route(self, route: _Route, event: EventRecord, out: list[BreakerSignal]) -> None:
        state = route.state
        if state == _CLOSED:
            reason = None
            if route.calls >= route.min_calls and route.errors >= route.error_rate * route.calls:
                reason = route.error_burst()
            elif route.spend >= route.spend_trip:
                reason = route.spend_burst()
            if reason is not None:
                self._open_route(route, event.ts, reason, out)
            return
        if state == _OPEN:
            if self._now < route.opened_ts + route.limits.route.open_s:
                return
            self._half_open(route)
        route.probe(event)
        verdict = route.probe_verdict()
        if verdict is None:
            return
        failing, reason = verdict
        if failing:
            self._open_route(route, event.ts, reason, out)
        else:
            route.forget_errors()
            self._close_route(route, reason, out)

    def _half_open(self, route: _Route) -> None:
        route.state = _HALF_OPEN
        route.probe_calls = route.probe_errors = 0

    def _open_route(self, route: _Route, ts: float, reason: str, out: list[BreakerSignal]) -> None:
        route.state, route.opened_ts = _OPEN, ts
        signal = BreakerSignal(
            scope=route.scope,
            state="open",
            reason=reason,
            opened_at=_utc(ts),
            ttl_s=route.limits.route.open_s,
        )
        self._open[route.scope] = signal
        out.append(signal)

    def _close_route(self, route: _Route, reason: str, out: list[BreakerSignal]) -> None:
        route.state = _CLOSED
        opened = self._open.pop(route.scope)
        out.append(
            BreakerSignal(
                scope=route.scope, state="closed", reason=reason, opened_at=opened.opened_at
            )
        )
