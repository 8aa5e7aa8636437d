"""Labelled benchmark streams: realistic background traffic with one known incident.

Why this exists: a detector is only as good as what it catches and what it
leaves alone, and both need ground truth. ``make_scenario(kind, seed)`` builds
four hours of event time over five routes whose scales differ by three orders
of magnitude, with the nuisances real traffic has -- a compressed diurnal swing,
a harmless slow cost drift on one route, heavy-tailed latency and cost, rare
errors and timeouts, sparse evaluator scores, agent runs -- and, unless the kind
is ``clean``, one incident on one route whose kind, metric, start, end and size
are recorded. ``score`` then matches the alerts a pipeline produced on the
streams against those incidents. Pure: numpy and a seed in, contract-shaped
event dicts (contract.md, "Trace event") out; the only I/O is the explicit
``Scenario.write_jsonl``.

Randomness comes from separate generators: the background of a route from
``(seed, route)``, the incident from ``(seed, kind)`` and the ids from
``(seed, kind, "ids")``. So every kind of one seed shares exactly the same
background traffic, and a stream differs from ``clean`` only by its incident
(and its event ids, so streams never collide in one store).

Every stream has the same routes (``ROUTES``); per-route means, before the
diurnal swing:

==================  ========  =========  =============  ==================================
route               workload  cost/call  latency (p50)  events/min
==================  ========  =========  =============  ==================================
search/suggest      chat      ~$0.0002   150 ms         80
support/answer      rag       ~$0.0006   1.2 s (+80ms)  40 (retrieval + llm, half scored)
refund/assistant    chat      ~$0.007    2.4 s          25 (40 % scored)
agent/researcher    agent     ~$0.016    1.8 s          ~18 (llm + tool steps, evals)
report/writer       chat      ~$0.2      8 s            15
==================  ========  =========  =============  ==================================

About 43 000 events a stream. Failures are 1 % of spans (a fifth of the failed
LLM calls are timeouts at the client's limit); evaluator scores are Beta draws.

Volume follows ``1 + A sin(2 pi t / 4 h + phase)`` with A in 0.5..0.6 and a
random phase: a day compressed into the stream. One random route's cost per
call drifts up by 25..30 % over the stream, linearly: about 7 % an hour.

Incident kinds (``KINDS``), each on a random route (never the drifting one),
starting uniformly between 100 and 160 minutes in; an incident changes the
requests that start inside its window:

- ``cost_jump`` (``cost_usd``): a price change, cost per call x2..3 from the
  start on; tokens, latency, errors and scores unchanged.
- ``prompt_quality_drop`` (``score:groundedness``, on a route scored for
  groundedness): the route's prompt version moves to the next one and the
  groundedness mean drops from 0.85 to 0.55..0.65; nothing else moves.
- ``latency_regression`` (``latency_ms``): every span of the route takes
  x2..3 longer from the start on.
- ``error_burst`` (``error_rate``): the route's error rate goes from 1 % to
  15..25 % for 8..12 minutes, then back. Failed calls report no tokens or cost
  and take their usual time, so only the error rate moves.

Scoring alerts against these labels is ``tracewatch.demo.scoring``.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt

from tracewatch.demo.traffic import Event, RouteProfile, ScoreSpec

__all__ = [
    "COST_FACTOR",
    "DIURNAL_AMPLITUDE",
    "DRIFT_TOTAL",
    "DURATION_S",
    "ERROR_MINUTES",
    "ERROR_RATE",
    "GROUNDEDNESS_MEAN",
    "INCIDENT_KINDS",
    "INCIDENT_METRICS",
    "KINDS",
    "LATENCY_FACTOR",
    "MATCH_GRACE_S",
    "ROUTES",
    "START_MINUTES",
    "Background",
    "Incident",
    "Scenario",
    "ScenarioRoute",
    "make_scenario",
    "scenario_labels",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

INCIDENT_KINDS: Final = ("cost_jump", "prompt_quality_drop", "latency_regression", "error_burst")
KINDS: Final = ("clean", *INCIDENT_KINDS)
#: The alert ``labels.metric`` each incident kind should fire.
INCIDENT_METRICS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "cost_jump": "cost_usd",
        "prompt_quality_drop": "score:groundedness",
        "latency_regression": "latency_ms",
        "error_burst": "error_rate",
    }
)

#: Stream length in event time: four hours.
DURATION_S: Final = 4 * 3600.0
#: Incident start, minutes after the stream start: well after any warm-up.
START_MINUTES: Final = (100.0, 160.0)
COST_FACTOR: Final = (2.0, 3.0)
LATENCY_FACTOR: Final = (2.0, 3.0)
#: The groundedness mean after a bad prompt version (it is 0.85 before).
GROUNDEDNESS_MEAN: Final = (0.55, 0.65)
ERROR_RATE: Final = (0.15, 0.25)
ERROR_MINUTES: Final = (8.0, 12.0)
#: Diurnal swing of every route's volume, +-50..60 % over one stream length.
DIURNAL_AMPLITUDE: Final = (0.5, 0.6)
#: Harmless drift: cost per call of one route grows by 25..30 % over the stream.
DRIFT_TOTAL: Final = (0.25, 0.30)
#: An alert decided up to this long after an incident's end still detects it.
MATCH_GRACE_S: Final = 15 * 60.0

#: 2026-01-01T00:00:00Z; seed ``s`` starts ``s % 300`` days later (always a whole minute).
#: In the past: the worker refuses events dated over an hour ahead of its clock
#: (``future_timestamp``), which streams from 2027 were until then.
_EPOCH: Final = 1_767_225_600.0
_SCORE_CONCENTRATION: Final = 10.0  # a + b of the groundedness Beta, before and after
_LATENCY_TOKEN_RHO: Final = 0.6  # corr. of log latency and log output tokens, as in traffic.py
_BURST_ERRORS: Final = ("RateLimitError", "InternalServerError", "APIConnectionError")
_LLM_ERRORS: Final = ("RateLimitError", "InternalServerError", "BadRequestError")

# event kinds and statuses, as small codes in the column arrays
_LLM, _TOOL, _RETRIEVAL, _EVAL = 0, 1, 2, 3
_KIND_NAMES: Final = ("llm", "tool", "retrieval", "eval")
_OK, _ERROR, _TIMEOUT = 0, 1, 2
_STATUS_NAMES: Final = ("ok", "error", "timeout")


@dataclass(frozen=True, slots=True)
class ScenarioRoute:
    """A route of every benchmark stream: its behaviour and its request rate."""

    profile: RouteProfile
    requests_per_min: float

    @property
    def name(self) -> str:
        return self.profile.name


_GROUNDEDNESS: Final = ScoreSpec("groundedness", 8.5, 1.5)

ROUTES: Final[tuple[ScenarioRoute, ...]] = (
    ScenarioRoute(
        RouteProfile(
            name="search/suggest",
            app="search",
            model="gemini-2.0-flash",
            provider="google",
            workload="chat",
            prompt_version="v3",
            latency_median_ms=150.0,
            latency_sigma=0.35,
            input_tokens_median=1200.0,
            input_tokens_sigma=0.3,
            output_tokens_median=150.0,
            output_tokens_sigma=0.4,
            timeout_share=0.2,
            timeout_ms=5_000.0,
        ),
        requests_per_min=80.0,
    ),
    ScenarioRoute(
        RouteProfile(
            name="support/answer",
            app="helpdesk",
            model="gpt-4o-mini",
            provider="openai",
            workload="rag",
            prompt_version="v12",
            latency_median_ms=1200.0,
            input_tokens_median=2400.0,
            input_tokens_sigma=0.35,
            output_tokens_median=250.0,
            timeout_share=0.2,
            scores=(_GROUNDEDNESS, ScoreSpec("context_relevance", 6.0, 2.0)),
            score_rate=0.5,
        ),
        requests_per_min=20.0,
    ),
    ScenarioRoute(
        RouteProfile(
            name="refund/assistant",
            app="payments-assistant",
            model="gpt-4.1",
            provider="openai",
            workload="chat",
            prompt_version="v31",
            latency_median_ms=2400.0,
            input_tokens_median=1800.0,
            input_tokens_sigma=0.4,
            output_tokens_median=350.0,
            timeout_share=0.2,
            timeout_ms=60_000.0,
            scores=(_GROUNDEDNESS, ScoreSpec("task_completion", 7.0, 2.0)),
            score_rate=0.4,
        ),
        requests_per_min=25.0,
    ),
    ScenarioRoute(
        RouteProfile(
            name="agent/researcher",
            app="research-agent",
            model="gpt-4o",
            provider="openai",
            workload="agent",
            prompt_version="v9",
            latency_median_ms=1800.0,
            latency_sigma=0.6,
            input_tokens_median=3000.0,
            input_tokens_sigma=0.4,
            output_tokens_median=300.0,
            output_tokens_sigma=0.7,
            timeout_share=0.2,
            timeout_ms=60_000.0,
            tools=("web_search", "fetch_url", "read_pdf"),
            tool_call_prob=0.85,
            tool_latency_median_ms=900.0,
            tool_latency_sigma=0.7,
            min_steps=2,
            mean_steps=4.5,
            max_steps=10,
            context_growth=0.15,
            scores=(ScoreSpec("task_completion", 6.0, 2.0),),
            score_rate=0.4,
        ),
        requests_per_min=3.5,
    ),
    ScenarioRoute(
        RouteProfile(
            name="report/writer",
            app="analytics",
            model="claude-sonnet-4",
            provider="anthropic",
            workload="chat",
            prompt_version="v5",
            latency_median_ms=8000.0,
            latency_sigma=0.45,
            input_tokens_median=40_000.0,
            input_tokens_sigma=0.3,
            output_tokens_median=5000.0,
            output_tokens_sigma=0.5,
            timeout_share=0.2,
            timeout_ms=120_000.0,
        ),
        requests_per_min=15.0,
    ),
)


# --- the labelled stream ---------------------------------------------------------------------


@dataclass(frozen=True)
class Incident:
    """One injected incident: the alert ``labels.route``/``labels.metric`` that should fire.

    ``magnitude`` is the factor (cost, latency), the new groundedness mean, or
    the error rate during the burst. ``end`` is None when it lasts to the end.
    """

    kind: str
    route: str
    metric: str
    start: float
    end: float | None
    magnitude: float
    description: str


@dataclass(frozen=True)
class Background:
    """The nuisances every stream has: the diurnal swing and the slow drift."""

    diurnal_amplitude: float
    diurnal_phase: float
    drift_route: str
    drift_metric: str
    drift_total: float  # relative growth over the whole stream, e.g. 0.27 = +27 %


@dataclass
class Scenario:
    """A labelled stream: contract events in ``ts`` order over [start, end)."""

    kind: str
    seed: int
    start: float
    end: float
    routes: list[str]
    background: Background
    incidents: list[Incident]
    events: list[Event] = field(repr=False)
    volume: float = 1.0

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.seed}"

    @property
    def route_hours(self) -> float:
        return len(self.routes) * (self.end - self.start) / 3600.0

    def lines(self) -> Iterator[bytes]:
        """Each event as compact JSON bytes, without a newline (one Kafka value each)."""
        dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
        for event in self.events:
            yield dumps(event).encode()

    def write_jsonl(self, path: str | Path) -> int:
        """Write the events as JSON lines (what ``tracewatch replay`` reads); returns the count."""
        with Path(path).open("wb") as out:
            for line in self.lines():
                out.write(line + b"\n")
        return len(self.events)


def make_scenario(kind: str, seed: int, *, volume: float = 1.0) -> Scenario:
    """The stream of ``kind`` (one of ``KINDS``) for ``seed``; same arguments, same events.

    ``volume`` scales every route's request rate (0.25 gives a quarter of the
    events, for quick tests); the incident and background labels do not depend on it.
    """
    if not 0 < volume <= 100:
        raise ValueError("volume must be in (0, 100]")
    start = _start(seed)
    background, incidents = scenario_labels(kind, seed)
    columns = []
    for spec in ROUTES:
        mine = next((i for i in incidents if i.route == spec.name), None)
        columns.append((spec.profile, _route_columns(spec, seed, start, background, mine, volume)))
    events = _events(columns, start, np.random.default_rng((seed, _tag(kind), _tag("ids"))))
    return Scenario(
        kind=kind,
        seed=seed,
        start=start,
        end=start + DURATION_S,
        routes=[r.name for r in ROUTES],
        background=background,
        incidents=incidents,
        events=events,
        volume=volume,
    )


def scenario_labels(kind: str, seed: int) -> tuple[Background, list[Incident]]:
    """The background and the incidents of a stream, without generating its events."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if seed < 0:
        raise ValueError("seed must be >= 0")
    background = _background(seed)
    if kind == "clean":
        return background, []
    return background, [_incident(kind, seed, _start(seed), background)]


def _start(seed: int) -> float:
    return _EPOCH + (seed % 300) * 86_400.0


def _tag(text: str) -> int:
    """A stable integer for a name, to seed an independent generator with it."""
    return zlib.crc32(text.encode())


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def _background(seed: int) -> Background:
    rng = np.random.default_rng((seed, _tag("background")))
    return Background(
        diurnal_amplitude=_uniform(rng, DIURNAL_AMPLITUDE),
        diurnal_phase=float(rng.uniform(0.0, 2.0 * math.pi)),
        drift_route=ROUTES[int(rng.integers(len(ROUTES)))].name,
        drift_metric="cost_usd",
        drift_total=_uniform(rng, DRIFT_TOTAL),
    )


def _incident(kind: str, seed: int, start: float, background: Background) -> Incident:
    """Draw the incident's route, start and size; the drifting route is never chosen."""
    rng = np.random.default_rng((seed, _tag(kind)))
    eligible = [
        r.name
        for r in ROUTES
        if r.name != background.drift_route
        and (kind != "prompt_quality_drop" or _GROUNDEDNESS in r.profile.scores)
    ]
    route = eligible[int(rng.integers(len(eligible)))]
    at = start + round(_uniform(rng, START_MINUTES) * 60.0)
    minute = round((at - start) / 60.0)
    end: float | None = None
    if kind == "cost_jump":
        size = _uniform(rng, COST_FACTOR)
        text = f"cost per call x{size:.2f} on {route} from minute {minute} (price change)"
    elif kind == "latency_regression":
        size = _uniform(rng, LATENCY_FACTOR)
        text = f"every span of {route} x{size:.2f} slower from minute {minute}"
    elif kind == "prompt_quality_drop":
        size = _uniform(rng, GROUNDEDNESS_MEAN)
        text = f"new prompt version on {route} at minute {minute}: groundedness 0.85 -> {size:.2f}"
    else:
        size = _uniform(rng, ERROR_RATE)
        length = round(_uniform(rng, ERROR_MINUTES) * 60.0)
        end = at + length
        text = f"error rate 1% -> {size:.0%} on {route} for {length / 60:.1f} min from {minute}"
    return Incident(kind, route, INCIDENT_METRICS[kind], at, end, size, text)


# --- one route's events as columns -------------------------------------------------------------


@dataclass
class _Columns:
    """One route's spans as parallel arrays, ordered by request then span; times from start."""

    n_requests: int
    req: IntArray
    kind: npt.NDArray[np.int8]
    depth: IntArray  # -1: none
    gap_s: FloatArray  # idle time before the span starts
    latency_ms: FloatArray
    status: npt.NDArray[np.int8]
    error_type: list[str]  # "" when ok
    input_tokens: IntArray  # -1: absent
    output_tokens: IntArray
    cost: FloatArray  # NaN: absent
    tool: IntArray  # -1: none
    scores: dict[str, FloatArray]  # NaN: not scored
    new_version: BoolArray
    ts: FloatArray  # span end, seconds after the stream start

    def take(self, keep: BoolArray) -> _Columns:
        idx = np.flatnonzero(keep)
        return _Columns(
            n_requests=self.n_requests,
            req=self.req[idx],
            kind=self.kind[idx],
            depth=self.depth[idx],
            gap_s=self.gap_s[idx],
            latency_ms=self.latency_ms[idx],
            status=self.status[idx],
            error_type=[self.error_type[i] for i in idx.tolist()],
            input_tokens=self.input_tokens[idx],
            output_tokens=self.output_tokens[idx],
            cost=self.cost[idx],
            tool=self.tool[idx],
            scores={name: values[idx] for name, values in self.scores.items()},
            new_version=self.new_version[idx],
            ts=self.ts[idx],
        )


@dataclass(frozen=True)
class _Uniforms:
    """Background uniforms that decide failures; an error burst reuses ``err``."""

    err: FloatArray
    timeout: FloatArray
    error_type: FloatArray


def _route_columns(
    spec: ScenarioRoute,
    seed: int,
    start: float,
    bg: Background,
    incident: Incident | None,
    volume: float,
) -> _Columns:
    """One route's spans over the stream, with its share of the incident, if any.

    Every background draw comes from the route's own generator in a fixed order,
    before and regardless of the incident, so incidents never change the background.
    """
    p = spec.profile
    rng = np.random.default_rng((seed, _tag(p.name)))
    starts = _request_starts(rng, spec.requests_per_min * volume / 60.0, bg)
    req, kind, depth = _skeleton(rng, p, starts.size)
    cols, u = _draw_background(rng, p, starts.size, req, kind, depth)
    t_req = starts[req]
    hit = _in_window(incident, start, t_req)
    _fail(cols, p, u, hit, incident, seed)
    _price(cols, p, t_req, bg, hit, incident)
    _degrade(cols, hit, incident, seed)
    cols.ts = _span_ends(req, starts, cols.gap_s, cols.latency_ms)
    return cols.take(cols.ts < DURATION_S)


def _request_starts(rng: np.random.Generator, rate_per_s: float, bg: Background) -> FloatArray:
    """A Poisson process whose rate follows the compressed diurnal sinusoid (by thinning)."""
    peak = 1.0 + bg.diurnal_amplitude
    n = int(rng.poisson(rate_per_s * peak * DURATION_S))
    t = np.sort(rng.uniform(0.0, DURATION_S, n))
    wave = 1.0 + bg.diurnal_amplitude * np.sin(2.0 * math.pi * t / DURATION_S + bg.diurnal_phase)
    starts: FloatArray = t[rng.uniform(0.0, peak, n) < wave]
    return starts


def _skeleton(
    rng: np.random.Generator, p: RouteProfile, n_req: int
) -> tuple[IntArray, npt.NDArray[np.int8], IntArray]:
    """(request, kind, loop depth) of every span, ordered within each request."""
    req = np.arange(n_req, dtype=np.int64)
    none = np.full(n_req, -1, dtype=np.int64)
    if p.workload == "chat":
        return req, np.full(n_req, _LLM, np.int8), none
    if p.workload == "rag":
        kinds = np.tile(np.array([_RETRIEVAL, _LLM], np.int8), n_req)
        return np.repeat(req, 2), kinds, np.repeat(none, 2)
    if p.workload != "agent":
        raise ValueError(f"workload {p.workload!r} is not supported in scenarios")
    return _agent_skeleton(rng, p, req, none)


def _agent_skeleton(
    rng: np.random.Generator, p: RouteProfile, req: IntArray, none: IntArray
) -> tuple[IntArray, npt.NDArray[np.int8], IntArray]:
    """Agent runs: per step an LLM call and usually a tool call, sometimes a late evaluation."""
    extra = rng.geometric(1.0 / (1.0 + p.mean_steps - p.min_steps), req.size) - 1
    steps = p.min_steps + np.minimum(extra, p.max_steps - p.min_steps)
    step_req = np.repeat(req, steps)
    depth = np.arange(step_req.size, dtype=np.int64) - np.repeat(np.cumsum(steps) - steps, steps)
    last = np.repeat(steps, steps) - 1
    tool = (rng.uniform(size=step_req.size) < p.tool_call_prob) & (depth < last)
    evaluated = rng.uniform(size=req.size) < p.score_rate
    n_tool, n_eval = int(tool.sum()), int(evaluated.sum())
    all_req = np.concatenate([step_req, step_req[tool], req[evaluated]])
    order = np.concatenate([2 * depth, 2 * depth[tool] + 1, 2 * steps[evaluated]])
    kinds = np.concatenate(
        [
            np.full(step_req.size, _LLM, np.int8),
            np.full(n_tool, _TOOL, np.int8),
            np.full(n_eval, _EVAL, np.int8),
        ]
    )
    depths = np.concatenate([depth, depth[tool], none[evaluated]])
    index = np.lexsort((order, all_req))
    return all_req[index], kinds[index], depths[index]


def _draw_background(
    rng: np.random.Generator,
    p: RouteProfile,
    n_req: int,
    req: IntArray,
    kind: npt.NDArray[np.int8],
    depth: IntArray,
) -> tuple[_Columns, _Uniforms]:
    """Tokens, latency, scores and the failure uniforms of every span, all ok for now."""
    n = req.size
    z_out, z_lat, z_in, z_other = rng.standard_normal((4, n))
    u_err, u_timeout, u_score, u_type = rng.uniform(size=(4, n))
    gap = 0.0005 + rng.exponential(0.002, n)
    growth = 1.0 + p.context_growth * np.maximum(depth, 0)
    rho = _LATENCY_TOKEN_RHO
    z_llm = rho * z_out + math.sqrt(1.0 - rho * rho) * z_lat  # long answers take longer
    is_eval = kind == _EVAL
    scored = is_eval | ((kind == _LLM) & (u_score < p.score_rate) & (p.workload != "agent"))
    # every Beta is drawn for every span, so the draws never depend on which spans are scored
    scores = {s.name: np.where(scored, rng.beta(s.a, s.b, n), np.nan) for s in p.scores}
    inputs = p.input_tokens_median * growth * np.exp(p.input_tokens_sigma * z_in)
    outputs = p.output_tokens_median * np.exp(p.output_tokens_sigma * z_out)
    cols = _Columns(
        n_requests=n_req,
        req=req,
        kind=kind,
        depth=depth,
        gap_s=np.where(is_eval, p.eval_lag_median_s * np.exp(0.5 * z_other), gap),
        latency_ms=_latency(p, kind, z_llm, z_other),
        status=np.full(n, _OK, np.int8),
        error_type=[""] * n,
        input_tokens=np.maximum(1, inputs.astype(np.int64)),
        output_tokens=np.maximum(1, outputs.astype(np.int64)),
        cost=np.full(n, np.nan),
        tool=np.where(kind == _TOOL, (u_type * max(1, len(p.tools))).astype(np.int64), -1),
        scores=scores,
        new_version=np.zeros(n, bool),
        ts=np.zeros(n),
    )
    return cols, _Uniforms(u_err, u_timeout, u_type)


def _latency(
    p: RouteProfile, kind: npt.NDArray[np.int8], z_llm: FloatArray, z_other: FloatArray
) -> FloatArray:
    """Span latency by kind, lognormal around the profile's medians, at least 1 ms."""
    llm = p.latency_median_ms * np.exp(p.latency_sigma * z_llm)
    tool = p.tool_latency_median_ms * np.exp(p.tool_latency_sigma * z_other)
    retrieval = p.retrieval_latency_median_ms * np.exp(0.5 * z_other)
    judge = 1500.0 * np.exp(0.4 * z_other)
    latency: FloatArray = np.select(
        [kind == _LLM, kind == _TOOL, kind == _RETRIEVAL], [llm, tool, retrieval], judge
    )
    return np.maximum(latency, 1.0)


def _in_window(incident: Incident | None, start: float, t_req: FloatArray) -> BoolArray:
    """Spans of the requests that start while the incident is on."""
    if incident is None:
        return np.zeros(t_req.size, bool)
    end = math.inf if incident.end is None else incident.end - start
    hit: BoolArray = (t_req >= incident.start - start) & (t_req < end)
    return hit


def _fail(
    cols: _Columns,
    p: RouteProfile,
    u: _Uniforms,
    hit: BoolArray,
    incident: Incident | None,
    seed: int,
) -> None:
    """Failures: rare in the background (a few LLM timeouts), frequent in an error burst.

    Evaluator spans never fail. A timed-out call takes the client's limit; any
    other failure takes its usual time, so an error burst moves no latency.
    """
    can_fail = cols.kind != _EVAL
    background = can_fail & (u.err < p.error_rate)
    timeout = background & (cols.kind == _LLM) & (u.timeout < p.timeout_share)
    cols.status[background] = _ERROR
    cols.status[timeout] = _TIMEOUT
    cols.latency_ms[timeout] = p.timeout_ms * (1.0 + 0.02 * u.timeout[timeout])
    for i in np.flatnonzero(background).tolist():
        status, kind, v = int(cols.status[i]), int(cols.kind[i]), float(u.error_type[i])
        cols.error_type[i] = _error_type(kind, status, v)
    if incident is None or incident.kind != "error_burst":
        return
    burst = can_fail & hit & ~background & (u.err < incident.magnitude)
    rng = np.random.default_rng((seed, _tag(incident.kind), _tag("error_type")))
    label = _BURST_ERRORS[int(rng.integers(len(_BURST_ERRORS)))]
    cols.status[burst] = _ERROR
    for i in np.flatnonzero(burst).tolist():
        cols.error_type[i] = label


def _error_type(kind: int, status: int, u: float) -> str:
    if status == _TIMEOUT:
        return "APITimeoutError"
    if kind == _LLM:
        return _LLM_ERRORS[min(int(u * len(_LLM_ERRORS)), len(_LLM_ERRORS) - 1)]
    return "RetrievalError" if kind == _RETRIEVAL else "ToolExecutionError"


def _price(
    cols: _Columns,
    p: RouteProfile,
    t_req: FloatArray,
    bg: Background,
    hit: BoolArray,
    incident: Incident | None,
) -> None:
    """Cost of the successful LLM calls: tokens at list price, times drift and price change.

    A failed call returns no usage: it carries neither tokens nor cost, so a
    burst of errors moves the error rate and nothing else.
    """
    price_in, price_out = p.price_per_mtok
    cost = (cols.input_tokens * price_in + cols.output_tokens * price_out) / 1e6
    if p.name == bg.drift_route:
        cost = cost * (1.0 + bg.drift_total * t_req / DURATION_S)
    if incident is not None and incident.kind == "cost_jump":
        cost = np.where(hit, cost * incident.magnitude, cost)
    billed = (cols.kind == _LLM) & (cols.status == _OK)
    cols.cost = np.where(billed, cost, np.nan)
    cols.input_tokens = np.where(billed, cols.input_tokens, -1)
    cols.output_tokens = np.where(billed, cols.output_tokens, -1)


def _degrade(cols: _Columns, hit: BoolArray, incident: Incident | None, seed: int) -> None:
    """A latency regression, or a new prompt version with worse groundedness."""
    if incident is None:
        return
    if incident.kind == "latency_regression":
        slower = hit & (cols.status != _TIMEOUT)  # the client's time limit does not move
        cols.latency_ms = np.where(slower, cols.latency_ms * incident.magnitude, cols.latency_ms)
    elif incident.kind == "prompt_quality_drop":
        rng = np.random.default_rng((seed, _tag(incident.kind), _tag("scores")))
        a = incident.magnitude * _SCORE_CONCENTRATION
        worse = rng.beta(a, _SCORE_CONCENTRATION - a, cols.req.size)
        old = cols.scores[_GROUNDEDNESS.name]
        cols.scores[_GROUNDEDNESS.name] = np.where(hit & ~np.isnan(old), worse, old)
        cols.new_version = hit


def _span_ends(req: IntArray, starts: FloatArray, gap: FloatArray, lat: FloatArray) -> FloatArray:
    """Each span ends its gap plus its latency after the previous span of its request ended."""
    dur = gap + lat / 1000.0
    total = np.cumsum(dur)
    first = np.flatnonzero(np.r_[True, req[1:] != req[:-1]]) if req.size else req
    before = np.repeat(total[first] - dur[first], np.diff(np.r_[first, req.size]))
    ends: FloatArray = starts[req] + total - before
    return ends


# --- columns to contract events ----------------------------------------------------------------


def _events(
    routes: Sequence[tuple[RouteProfile, _Columns]], start: float, ids: np.random.Generator
) -> list[Event]:
    """Every route's spans as event dicts, merged in ``ts`` order (stable on ties)."""
    merged: list[Event] = []
    ts: list[FloatArray] = []
    for p, cols in routes:
        merged += _route_events(p, cols, start, ids)
        ts.append(cols.ts)
    order = np.argsort(np.concatenate(ts), kind="stable").tolist() if ts else []
    return [merged[i] for i in order]


def _hex(ids: np.random.Generator, n: int, width: int) -> list[str]:
    text = ids.bytes(n * width // 2).hex()
    return [text[i : i + width] for i in range(0, n * width, width)]


def _route_events(
    p: RouteProfile, cols: _Columns, start: float, ids: np.random.Generator
) -> list[Event]:
    """One route's spans as contract event dicts, in the columns' order."""
    n = cols.req.size
    trace_ids = _hex(ids, cols.n_requests, 32)
    roots = _hex(ids, cols.n_requests, 16)
    event_ids, span_ids = _hex(ids, n, 32), _hex(ids, n, 16)
    versions = (p.prompt_version, _next_version(p.prompt_version))
    route, app, model, provider = p.name, p.app, p.model, p.provider
    scores = _score_dicts(cols.scores, n)
    columns = zip(
        cols.req.tolist(),
        np.round(cols.ts + start, 6).tolist(),
        cols.kind.tolist(),
        cols.new_version.tolist(),
        np.round(cols.latency_ms, 3).tolist(),
        cols.status.tolist(),
        cols.input_tokens.tolist(),
        cols.output_tokens.tolist(),
        np.round(cols.cost, 8).tolist(),
        cols.depth.tolist(),
        cols.tool.tolist(),
        strict=True,
    )
    events: list[Event] = []
    for i, (r, ts, kind, new, latency, status, t_in, t_out, cost, depth, tool) in enumerate(
        columns
    ):
        event: Event = {
            "event_id": event_ids[i],
            "trace_id": trace_ids[r],
            "span_id": span_ids[i],
            "parent_span_id": roots[r],
            "ts": ts,
            "kind": _KIND_NAMES[kind],
            "route": route,
            "app": app,
            "model": model,
            "provider": provider,
            "prompt_version": versions[new],
            "latency_ms": latency,
            "status": _STATUS_NAMES[status],
        }
        if status != _OK:
            event["error_type"] = cols.error_type[i]
        if t_in >= 0:
            event["input_tokens"] = t_in
            event["output_tokens"] = t_out
            event["cost_usd"] = cost
        if depth >= 0:
            event["loop_depth"] = depth
        if tool >= 0:
            event["tool_name"] = p.tools[tool]
        if scores[i] is not None:
            event["scores"] = scores[i]
        events.append(event)
    return events


def _score_dicts(scores: dict[str, FloatArray], n: int) -> list[dict[str, float] | None]:
    """Per span, its scores rounded to 4 places, or None when it carries none."""
    out: list[dict[str, float] | None] = [None] * n
    for name, values in scores.items():
        present = ~np.isnan(values)
        for i, v in zip(
            np.flatnonzero(present).tolist(), np.round(values[present], 4).tolist(), strict=True
        ):
            row = out[i]
            if row is None:
                out[i] = row = {}
            row[name] = v
    return out


def _next_version(version: str) -> str:
    """``v12`` -> ``v13``: the prompt version a bad edit ships as."""
    head = version.rstrip("0123456789")
    digits = version[len(head) :]
    return f"{head}{int(digits) + 1}" if digits else f"{version}.1"
