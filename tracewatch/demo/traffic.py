"""Deterministic, seeded demo traffic: realistic trace events as plain dicts.

Why this exists: detectors, aggregates and alert rules only mean something on
traffic with the shapes seen in production LLM apps -- heavy-tailed latency,
cost driven by tokens, rare errors with real-looking types, multi-step agent
runs, guardrail decisions and late evaluator scores -- and tests need exactly
the same traffic again from the same seed. Everything here is pure: a seed in,
contract-shaped dicts (contract.md, "Trace event") out; no I/O, no Kafka.

Shape of a trace, by workload:

- ``chat``: one ``llm`` event.
- ``rag``: optional input ``guardrail`` -> ``retrieval`` -> ``llm`` carrying
  evaluator ``scores`` on a sample of requests.
- ``tools``: optional ``guardrail`` -> ``llm`` -> 0..2 ``tool`` calls -> ``llm``.
- ``agent``: N steps, each an ``llm`` call, usually a ``tool`` call, then the
  ``agent_step`` span that covers them, all with ``loop_depth`` = step index;
  sometimes a late ``eval`` event scoring the whole run.

The request's root span belongs to the calling app and is not emitted: events
name it as ``parent_span_id`` (agent ``llm``/``tool`` events name their step).
"""

from __future__ import annotations

import hashlib
import json
import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate, islice
from operator import itemgetter
from types import MappingProxyType
from typing import Final, Literal, TypeVar, cast

import numpy as np

__all__ = [
    "DEFAULT_ROUTES",
    "INVALID_CLASSES",
    "MODEL_PRICES",
    "OVERSIZED_BYTES",
    "DemoTraffic",
    "Event",
    "RouteProfile",
    "ScoreSpec",
    "Workload",
    "invalid_events",
]

Event = dict[str, object]
_T = TypeVar("_T")
Workload = Literal["chat", "rag", "tools", "agent"]

#: USD per million tokens, (input, output): list prices of late 2025. The demo's
#: own table, so generated ``cost_usd`` is consistent with the tokens it reports.
MODEL_PRICES: Final[Mapping[str, tuple[float, float]]] = MappingProxyType(
    {
        "gpt-4o-mini": (0.15, 0.60),
        "gpt-4o": (2.50, 10.00),
        "gpt-4.1": (2.00, 8.00),
        "claude-sonnet-4": (3.00, 15.00),
        "claude-3-5-haiku": (0.80, 4.00),
        "gemini-2.0-flash": (0.10, 0.40),
    }
)

_WORKLOADS: Final = ("chat", "rag", "tools", "agent")
_DEFAULT_COHORTS: Final = (("free", 0.55), ("pro", 0.35), ("enterprise", 0.10))
_REGIONS: Final = (("us-east-1", 0.5), ("eu-west-1", 0.35), ("ap-southeast-1", 0.15))
#: (error_type, share of failures, retried by the client before giving up).
_LLM_ERRORS: Final = (
    ("RateLimitError", 0.45, True),
    ("InternalServerError", 0.25, True),
    ("APIConnectionError", 0.15, True),
    ("BadRequestError", 0.10, False),
    ("ContentFilterError", 0.05, False),
)
_TOOL_ERRORS: Final = ("ToolExecutionError", "HTTPStatusError", "ValidationError")
_ARG_WORDS: Final = (
    "refund policy",
    "order status",
    "invoice 2291",
    "shipping delay",
    "p95 latency",
    "vector index",
    "quarterly revenue",
    "retry budget",
    "kafka lag",
    "unit tests",
    "auth middleware",
    "rate limits",
    "pricing page",
    "error budget",
    "cache eviction",
    "schema migration",
    "feature flag",
    "login bug",
    "export csv",
    "timezone parsing",
)
_LATENCY_TOKEN_RHO: Final = 0.6  # corr. of log latency and log output tokens
_LATENCY_NOISE: Final = math.sqrt(1.0 - _LATENCY_TOKEN_RHO**2)  # keeps log latency N(0, 1)
_MAX_RETRIES: Final = 2
#: Traces built per release of sorted events in ``events``: starts small so a short
#: ``take`` builds little ahead, doubles so the re-sorted carry-over is amortised.
_FIRST_BATCH: Final = 32
_MAX_BATCH: Final = 1024


@dataclass(frozen=True, slots=True)
class ScoreSpec:
    """An evaluator score drawn from Beta(a, b), so it always lies in [0, 1].

    A failed run draws from the mirrored Beta(b, a): it scores as badly as a good
    run scores well, whichever direction is "better" for this score.
    """

    name: str
    a: float
    b: float


@dataclass(frozen=True, slots=True)
class RouteProfile:
    """How one route behaves; the generator's only knowledge of a route.

    Frozen, so a scenario derives a degraded variant with ``dataclasses.replace``
    (a new model, a slower median, more errors) without touching the default.
    Latency and tokens are per LLM call, lognormal with the given median and log
    sigma; ``error_rate`` is the chance that one LLM call fails (error or
    timeout); ``weight`` is the route's share of traces. An agent run takes
    ``min_steps`` plus a geometric number of extra steps (mean ``mean_steps``
    before the cap at ``max_steps``); ``runaway_rate`` is the share of runs stuck
    repeating one tool call for ``runaway_steps`` steps, past any sane cap (off by
    default: it is an incident to inject, not background traffic). ``score_rate``
    is the share of requests (or agent runs, via a late ``eval`` event) scored.
    """

    name: str
    app: str
    model: str
    provider: str
    workload: Workload
    prompt_version: str
    weight: float = 1.0
    latency_median_ms: float = 800.0
    latency_sigma: float = 0.5
    input_tokens_median: float = 800.0
    input_tokens_sigma: float = 0.5
    output_tokens_median: float = 200.0
    output_tokens_sigma: float = 0.6
    error_rate: float = 0.01
    timeout_share: float = 0.25
    timeout_ms: float = 30_000.0
    retry_rate: float = 0.02
    cost_omit_rate: float = 0.02
    canary_prompt_version: str | None = None
    canary_share: float = 0.0
    cohorts: tuple[tuple[str, float], ...] = _DEFAULT_COHORTS
    scores: tuple[ScoreSpec, ...] = ()
    score_rate: float = 0.0
    tools: tuple[str, ...] = ()
    tool_call_prob: float = 0.0
    tool_latency_median_ms: float = 200.0
    tool_latency_sigma: float = 0.7
    tool_error_rate: float = 0.01
    retrieval_latency_median_ms: float = 80.0
    guardrail_name: str | None = None
    guardrail_block_rate: float = 0.0
    guardrail_redact_rate: float = 0.0
    min_steps: int = 2
    mean_steps: float = 6.0
    max_steps: int = 12
    context_growth: float = 0.3
    runaway_rate: float = 0.0
    runaway_steps: tuple[int, int] = (26, 40)
    eval_lag_median_s: float = 8.0
    prices: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        """Reject impossible profiles here rather than emit impossible events later."""
        if self.workload not in _WORKLOADS:
            raise ValueError(f"workload must be one of {_WORKLOADS}, not {self.workload!r}")
        if not 1 <= len(self.name) <= 256:
            raise ValueError("route name must be 1..256 characters")
        if self.prices is None and self.model not in MODEL_PRICES:
            raise ValueError(f"no price for model {self.model!r}: add it or pass prices=")
        rates = (
            "error_rate",
            "timeout_share",
            "retry_rate",
            "cost_omit_rate",
            "canary_share",
            "score_rate",
            "tool_call_prob",
            "tool_error_rate",
            "runaway_rate",
        )
        for rate in rates:
            if not 0.0 <= getattr(self, rate) <= 1.0:
                raise ValueError(f"{rate} must be in [0, 1]")
        if self.guardrail_block_rate + self.guardrail_redact_rate > 1.0:
            raise ValueError("guardrail block + redact rates exceed 1")
        if self.weight <= 0 or self.latency_median_ms <= 0 or self.timeout_ms <= 0:
            raise ValueError("weight, latency_median_ms and timeout_ms must be > 0")
        if not 1 <= self.min_steps <= self.mean_steps <= self.max_steps:
            raise ValueError("need 1 <= min_steps <= mean_steps <= max_steps")
        if self.workload in ("tools", "agent") and not self.tools:
            raise ValueError(f"a {self.workload} route needs tools")
        if not 1 <= self.runaway_steps[0] <= self.runaway_steps[1]:
            raise ValueError("runaway_steps must be (low, high) with 1 <= low <= high")

    @property
    def price_per_mtok(self) -> tuple[float, float]:
        """(input, output) USD per million tokens: the override or the table's."""
        return self.prices if self.prices is not None else MODEL_PRICES[self.model]


_RAG_SCORES: Final = (
    ScoreSpec("groundedness", 8.0, 2.0),
    ScoreSpec("context_relevance", 6.0, 2.0),
    ScoreSpec("hallucination", 1.5, 12.0),
)

DEFAULT_ROUTES: Final[tuple[RouteProfile, ...]] = (
    RouteProfile(
        name="support/chat",
        app="helpdesk",
        model="gpt-4o-mini",
        provider="openai",
        workload="rag",
        prompt_version="v12",
        canary_prompt_version="v13",
        canary_share=0.1,
        weight=0.26,
        latency_median_ms=1200.0,
        latency_sigma=0.5,
        input_tokens_median=2400.0,
        input_tokens_sigma=0.35,
        output_tokens_median=220.0,
        output_tokens_sigma=0.6,
        error_rate=0.01,
        scores=_RAG_SCORES,
        score_rate=0.5,
        guardrail_name="pii-filter",
        guardrail_block_rate=0.005,
        guardrail_redact_rate=0.04,
    ),
    RouteProfile(
        name="refund/primary",
        app="payments-assistant",
        model="claude-sonnet-4",
        provider="anthropic",
        workload="tools",
        prompt_version="v31",
        weight=0.15,
        latency_median_ms=2400.0,
        latency_sigma=0.6,
        input_tokens_median=1800.0,
        output_tokens_median=350.0,
        error_rate=0.02,
        timeout_ms=60_000.0,
        tools=("lookup_order", "check_refund_policy", "issue_refund"),
        tool_call_prob=0.8,
        tool_latency_median_ms=250.0,
        guardrail_name="refund-policy",
        guardrail_block_rate=0.02,
    ),
    RouteProfile(
        name="search/summarize",
        app="search",
        model="gemini-2.0-flash",
        provider="google",
        workload="chat",
        prompt_version="v4",
        weight=0.50,
        latency_median_ms=450.0,
        latency_sigma=0.4,
        input_tokens_median=1200.0,
        output_tokens_median=120.0,
        output_tokens_sigma=0.5,
        error_rate=0.005,
        timeout_ms=15_000.0,
    ),
    RouteProfile(
        name="agent/researcher",
        app="research-agent",
        model="gpt-4o",
        provider="openai",
        workload="agent",
        prompt_version="v9",
        weight=0.05,
        latency_median_ms=1800.0,
        latency_sigma=0.6,
        input_tokens_median=3000.0,
        input_tokens_sigma=0.4,
        output_tokens_median=300.0,
        output_tokens_sigma=0.7,
        error_rate=0.015,
        timeout_ms=60_000.0,
        tools=("web_search", "fetch_url", "read_pdf", "summarize_notes"),
        tool_call_prob=0.9,
        tool_latency_median_ms=900.0,
        tool_latency_sigma=0.8,
        min_steps=2,
        mean_steps=6.0,
        max_steps=12,
        scores=(ScoreSpec("task_completion", 6.0, 2.0), ScoreSpec("answer_relevance", 7.0, 2.0)),
        score_rate=0.3,
    ),
    RouteProfile(
        name="agent/coder",
        app="dev-agent",
        model="claude-sonnet-4",
        provider="anthropic",
        workload="agent",
        prompt_version="v22",
        canary_prompt_version="v23",
        canary_share=0.05,
        weight=0.04,
        latency_median_ms=3000.0,
        latency_sigma=0.7,
        input_tokens_median=6000.0,
        input_tokens_sigma=0.4,
        output_tokens_median=700.0,
        output_tokens_sigma=0.8,
        error_rate=0.03,
        timeout_ms=90_000.0,
        tools=("read_file", "search_code", "edit_file", "run_tests", "shell"),
        tool_call_prob=0.95,
        tool_latency_median_ms=400.0,
        tool_latency_sigma=1.0,
        min_steps=3,
        mean_steps=8.0,
        max_steps=16,
        context_growth=0.4,
        scores=(ScoreSpec("task_completion", 5.0, 3.0), ScoreSpec("tests_pass_rate", 4.0, 2.0)),
        score_rate=0.4,
    ),
)


@lru_cache(maxsize=256)
def _cumulative(weights: tuple[float, ...]) -> tuple[float, ...]:
    """Normalised cumulative weights, for picking with one uniform and a bisect."""
    total = math.fsum(weights)
    return tuple(w / total for w in accumulate(weights))


def _pick(cum: Sequence[float], u: float) -> int:
    """Index picked by uniform ``u`` from cumulative weights (clamped against rounding)."""
    return min(bisect_right(cum, u), len(cum) - 1)


@lru_cache(maxsize=16_384)
def _args_hash(tool: str, word: str, page: int) -> str:
    """Short hash of a deterministic fake argument dict, as an app would send it.

    The canonical JSON (sorted keys) is spelled out: json.dumps costs ten times more
    and the words are plain ASCII.
    """
    args = f'{{"page": {page}, "query": "{word}", "tool": "{tool}"}}'
    return hashlib.sha256(args.encode()).hexdigest()[:16]


def _stream(block: Callable[[], list[_T]]) -> Iterator[_T]:
    """Endless iterator over successive blocks; its ``__next__`` is a cheap builtin call."""
    while True:
        yield from block()


class _Draws:
    """Buffered scalar draws and ids from one ``np.random.Generator``.

    Why: a numpy call costs about a microsecond whatever its size and a trace needs
    a dozen scalars, so each stream draws a block and hands out Python values one
    by one. Consumption order is fixed, so the output stays a pure function of
    the seed and the sequence of calls.
    """

    _BLOCK: Final = 8192

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._beta: dict[tuple[float, float], list[float]] = {}
        #: One draw from U[0, 1).
        self.uniform: Callable[[], float] = _stream(self._uniform_block).__next__
        #: One standard normal draw.
        self.normal: Callable[[], float] = _stream(self._normal_block).__next__
        #: 16 hex chars: a trace or span id.
        self.hex16: Callable[[], str] = _stream(self._span_block).__next__
        #: 32 hex chars shaped as a version-4 UUID, drawn from the seeded rng.
        self.uuid_hex: Callable[[], str] = _stream(self._uuid_block).__next__

    def _uniform_block(self) -> list[float]:
        return list(self._rng.random(self._BLOCK).tolist())

    def _normal_block(self) -> list[float]:
        return list(self._rng.standard_normal(self._BLOCK).tolist())

    def _span_block(self) -> list[str]:
        h = self._rng.bytes(8 * self._BLOCK).hex()
        return [h[i : i + 16] for i in range(0, len(h), 16)]

    def _uuid_block(self) -> list[str]:
        raw = self._rng.integers(0, 256, size=(self._BLOCK, 16), dtype=np.uint8)
        raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
        raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
        h = raw.tobytes().hex()
        return [h[i : i + 32] for i in range(0, len(h), 32)]

    def beta(self, a: float, b: float) -> float:
        """One Beta(a, b) draw, buffered per parameter pair (there are few)."""
        buf = self._beta.get((a, b))
        if not buf:
            buf = list(self._rng.beta(a, b, 1024).tolist())[::-1]
            self._beta[(a, b)] = buf
        return buf.pop()

    def lognormal(self, median: float, sigma: float) -> float:
        """Lognormal with the given median and log standard deviation."""
        return median * math.exp(sigma * self.normal())

    def exponential(self, mean: float) -> float:
        """Exponential with the given mean (Poisson inter-arrival times, lags)."""
        return -mean * math.log(1.0 - self.uniform())

    def geometric(self, mean: float) -> int:
        """Failures before the first success, with the given mean (>= 0)."""
        if mean <= 0:
            return 0
        return int(math.log(1.0 - self.uniform()) / math.log(mean / (1.0 + mean)))


class _Trace:
    """Builds one trace's events on a moving clock; one instance per trace.

    Keeps the clock (span end times strictly increase), the fields every event of
    the trace shares, and the events emitted so far.
    """

    def __init__(
        self, d: _Draws, p: RouteProfile, start_ts: float, cohort_cum: Sequence[float]
    ) -> None:
        self.d = d
        self.p = p
        self.prices = p.price_per_mtok
        self.t = start_ts
        self.events: list[Event] = []
        self.root = d.hex16()
        canary = p.canary_prompt_version is not None and d.uniform() < p.canary_share
        cohort = p.cohorts[_pick(cohort_cum, d.uniform())][0]
        self.attributes = {
            "region": _REGIONS[_pick(_REGION_CUM, d.uniform())][0],
            "stream": p.workload != "agent",
        }
        # every event starts as a copy of this, which also fixes the key order
        self.template: Event = {
            "event_id": "",
            "trace_id": d.hex16(),
            "span_id": "",
            "parent_span_id": "",
            "ts": 0.0,
            "kind": "",
            "route": p.name,
            "app": p.app,
            "model": p.model,
            "provider": p.provider,
            "prompt_version": p.canary_prompt_version if canary else p.prompt_version,
            "cohort": cohort,
            "session_id": f"sess_{int(d.uniform() * 50_000):05d}",
            "latency_ms": 0.0,
            "status": "ok",
        }

    def gap(self) -> float:
        """Start of the next span: the app's own overhead after the previous one."""
        return self.t + 0.0005 - 0.002 * math.log(1.0 - self.d.uniform())

    def emit(
        self,
        kind: str,
        start: float,
        latency_ms: float,
        parent: str,
        fields: Mapping[str, object],
        span: str | None = None,
    ) -> Event:
        """Append an event for a span [start, start + latency] and move the clock."""
        if latency_ms < 1.0:
            latency_ms = 1.0
        self.t = t = start + latency_ms / 1000.0
        event = self.template.copy()
        event["event_id"] = self.d.uuid_hex()
        event["span_id"] = span or self.d.hex16()
        event["parent_span_id"] = parent
        event["ts"] = round(t, 6)  # microseconds; spans last >= 1 ms, so ts stays increasing
        event["kind"] = kind
        event["latency_ms"] = round(latency_ms, 3)
        event.update(fields)
        self.events.append(event)
        return event

    def guardrail(self) -> bool:
        """Input guardrail, if the route has one; returns False when it blocked."""
        p, d = self.p, self.d
        if p.guardrail_name is None:
            return True
        u = d.uniform()
        action = (
            "block"
            if u < p.guardrail_block_rate
            else "redact"
            if u < p.guardrail_block_rate + p.guardrail_redact_rate
            else "allow"
        )
        fields = {"guardrail_name": p.guardrail_name, "guardrail_action": action}
        self.emit("guardrail", self.gap(), d.lognormal(25.0, 0.5), self.root, fields)
        return action != "block"

    def retrieval(self) -> None:
        """Vector search feeding the prompt of a RAG route."""
        p, d = self.p, self.d
        fields: dict[str, object] = {"attributes": {"index": "kb-articles", "top_k": 8}}
        if d.uniform() < p.tool_error_rate:
            fields.update(status="error", error_type="RetrievalError")
        self.emit(
            "retrieval",
            self.gap(),
            d.lognormal(p.retrieval_latency_median_ms, 0.5),
            self.root,
            fields,
        )

    def llm(self, parent: str, depth: int | None = None, scored: bool = False) -> bool:
        """One LLM call; returns False when it failed (error or timeout).

        Log latency is correlated with log output tokens (long answers take
        longer) yet stays N(log median, sigma), so the profile's median holds.
        Agent calls carry a context that grows with ``depth``.
        """
        p, d = self.p, self.d
        normal, exp = d.normal, math.exp
        growth = 1.0 if depth is None else 1.0 + p.context_growth * depth
        z_out = normal()
        z_lat = _LATENCY_TOKEN_RHO * z_out + _LATENCY_NOISE * normal()
        latency = p.latency_median_ms * exp(p.latency_sigma * z_lat)
        context = p.input_tokens_median * growth
        input_tokens = int(context * exp(p.input_tokens_sigma * normal())) or 1
        output_tokens = int(p.output_tokens_median * exp(p.output_tokens_sigma * z_out)) or 1
        retries = 0
        if d.uniform() < p.error_rate:
            fields, latency, retries = self._failure()
            output_tokens = 0
        else:
            fields = {}
            if d.uniform() < p.retry_rate:
                retries = 2 if d.uniform() < 0.2 else 1
        for _ in range(retries):
            latency += d.lognormal(500.0, 0.5)  # client backoff before each retry
        fields["input_tokens"] = input_tokens
        fields["output_tokens"] = output_tokens
        fields["retry_count"] = retries
        if d.uniform() >= p.cost_omit_rate:
            price_in, price_out = self.prices
            cost = (input_tokens * price_in + output_tokens * price_out) / 1e6
            fields["cost_usd"] = round(cost, 8)
        if depth is not None:
            fields["loop_depth"] = depth
        ok = "status" not in fields
        if scored and ok:
            fields["scores"] = {s.name: round(d.beta(s.a, s.b), 4) for s in p.scores}
        fields["attributes"] = dict(self.attributes)  # events never share mutable values
        self.emit("llm", self.gap(), latency, parent, fields)
        return ok

    def _failure(self) -> tuple[dict[str, object], float, int]:
        """A failed call's status fields, latency and retries spent before giving up."""
        p, d = self.p, self.d
        if d.uniform() < p.timeout_share:
            latency = p.timeout_ms * (1.0 + 0.02 * d.uniform())
            return {"status": "timeout", "error_type": "APITimeoutError"}, latency, 0
        error_type, retriable = _ERROR_TYPES[_pick(_ERROR_CUM, d.uniform())]
        latency = 0.25 * p.latency_median_ms * math.exp(0.5 * d.normal())
        fields: dict[str, object] = {"status": "error", "error_type": error_type}
        return fields, latency, _MAX_RETRIES if retriable else 0

    def tool(self, parent: str, depth: int | None = None, repeat: str | None = None) -> None:
        """One tool call; ``repeat`` replays a fixed call, as a stuck agent does."""
        p, d = self.p, self.d
        if repeat is not None:
            name, word, page = p.tools[0], repeat, 1
        else:
            name = p.tools[int(d.uniform() * len(p.tools))]
            word, page = _ARG_WORDS[int(d.uniform() * len(_ARG_WORDS))], int(d.uniform() * 50)
        fields: dict[str, object] = {
            "tool_name": name,
            "tool_args_hash": _args_hash(name, word, page),
        }
        if d.uniform() < p.tool_error_rate:
            fields.update(status="error", error_type=_TOOL_ERRORS[int(d.uniform() * 3)])
        if depth is not None:
            fields["loop_depth"] = depth
        self.emit(
            "tool",
            self.gap(),
            d.lognormal(p.tool_latency_median_ms, p.tool_latency_sigma),
            parent,
            fields,
        )

    def evaluation(self, failed: bool) -> None:
        """A late evaluator score for the whole run, arriving seconds after it ended."""
        p, d = self.p, self.d
        scores = {
            s.name: round(d.beta(s.b, s.a) if failed else d.beta(s.a, s.b), 4) for s in p.scores
        }
        start = self.t + d.lognormal(p.eval_lag_median_s, 0.5)
        fields = {"scores": scores, "attributes": {"evaluator": "llm-judge"}}
        self.emit("eval", start, d.lognormal(1500.0, 0.4), self.root, fields)


def _single(tr: _Trace) -> None:
    """A one-call route: the bulk of cheap, high-volume traffic."""
    tr.llm(tr.root)


def _rag(tr: _Trace) -> None:
    """Guardrail, retrieval, then the answer, scored on a sample of requests."""
    if tr.guardrail():
        tr.retrieval()
        tr.llm(tr.root, scored=bool(tr.p.scores) and tr.d.uniform() < tr.p.score_rate)


def _tools(tr: _Trace) -> None:
    """Guardrail, a call that picks tools, the tool calls, and the final answer."""
    if not tr.guardrail() or not tr.llm(tr.root):
        return
    if tr.d.uniform() < tr.p.tool_call_prob:
        for _ in range(2 if tr.d.uniform() < 0.3 else 1):
            tr.tool(tr.root)
        tr.llm(tr.root)


def _agent(tr: _Trace) -> None:
    """An agent run: steps at loop_depth 0..N-1, each covering its LLM and tool calls."""
    p, d = tr.p, tr.d
    stuck = d.uniform() < p.runaway_rate
    if stuck:
        low, high = p.runaway_steps
        n_steps, repeat = low + int(d.uniform() * (high - low + 1)), _ARG_WORDS[0]
    else:
        extra = min(d.geometric(p.mean_steps - p.min_steps), p.max_steps - p.min_steps)
        n_steps, repeat = p.min_steps + extra, None
    failed = stuck
    for depth in range(n_steps):
        step, start = d.hex16(), tr.gap()
        tr.t = start
        ok = tr.llm(step, depth)
        if ok and depth < n_steps - 1 and (stuck or d.uniform() < p.tool_call_prob):
            tr.tool(step, depth, repeat)
        end = tr.t + 0.001 + d.exponential(0.004)
        fields: dict[str, object] = {"loop_depth": depth}
        if not ok:
            last = tr.events[-1]
            fields.update(status=last["status"], error_type=last["error_type"])
        tr.emit("agent_step", start, (end - start) * 1000.0, tr.root, fields, span=step)
        if not ok:
            failed = True
            break
    if p.scores and d.uniform() < p.score_rate:
        tr.evaluation(failed)


_BUILDERS: Final = {"chat": _single, "rag": _rag, "tools": _tools, "agent": _agent}
_ERROR_TYPES: Final = tuple((name, retriable) for name, _, retriable in _LLM_ERRORS)
_ERROR_CUM: Final = _cumulative(tuple(share for _, share, _ in _LLM_ERRORS))
_REGION_CUM: Final = _cumulative(tuple(w for _, w in _REGIONS))


#: An event's ts: always a float here, and floats are what ``list.sort`` sorts fastest.
_ts: Final = cast(Callable[[Event], float], itemgetter("ts"))


class DemoTraffic:
    """Seeded generator of realistic trace events over a set of routes.

    Same seed, same routes and the same sequence of calls give identical events
    (ids included), so a test or a demo can be replayed exactly. Calls share one
    random stream: a second call continues it rather than repeating the first.
    """

    def __init__(self, seed: int = 0, routes: Sequence[RouteProfile] = DEFAULT_ROUTES) -> None:
        if not routes:
            raise ValueError("need at least one route")
        names = [r.name for r in routes]
        if len(set(names)) != len(names):
            raise ValueError("route names must be unique")
        self.seed = seed
        self.routes: tuple[RouteProfile, ...] = tuple(routes)
        self._by_name = {r.name: r for r in self.routes}
        self._cum = _cumulative(tuple(r.weight for r in self.routes))
        self._cohort_cum = {
            r.name: _cumulative(tuple(w for _, w in r.cohorts)) for r in self.routes
        }
        self._draws = _Draws(np.random.default_rng(seed))

    def trace(self, start_ts: float, route: str | None = None) -> list[Event]:
        """One request's (or agent run's) events, in increasing ts, starting after start_ts.

        ``route`` forces a route by name; by default it is drawn by traffic weight.
        """
        if route is None:
            profile = self.routes[_pick(self._cum, self._draws.uniform())]
        elif route in self._by_name:
            profile = self._by_name[route]
        else:
            raise ValueError(f"unknown route {route!r}; known: {sorted(self._by_name)}")
        tr = _Trace(self._draws, profile, start_ts, self._cohort_cum[profile.name])
        _BUILDERS[profile.workload](tr)
        return tr.events

    def events(
        self, start_ts: float, rate_per_s: float, duration_s: float, *, drain: bool = False
    ) -> Iterator[Event]:
        """Events of traces started as a Poisson process, in nondecreasing ts order.

        Traces start at ``rate_per_s`` over [start_ts, start_ts + duration_s) and
        overlap, so events are buffered and released in sorted batches once no
        later-starting trace can precede them. (A stable sort of the buffer -- a
        sorted run plus a new batch -- costs a fraction of a per-event heap.)
        Only events with ts inside the window are yielded -- what a consumer sees
        during it, traces near the end cut short -- unless ``drain`` is set, which
        also yields the rest of the started traces. A duration of ``math.inf``
        gives an endless stream.
        """
        if not rate_per_s > 0 or not math.isfinite(rate_per_s):
            raise ValueError("rate_per_s must be a positive finite number")
        if not duration_s >= 0:
            raise ValueError("duration_s must be >= 0")
        end = start_ts + duration_s
        pending: list[Event] = []  # sorted by ts, stable for ties
        t = start_ts
        mean_gap = 1.0 / rate_per_s
        batch = _FIRST_BATCH
        while t < end:
            batch = min(2 * batch, _MAX_BATCH)
            for _ in range(batch):
                t += self._draws.exponential(mean_gap)
                if t >= end:
                    break
                pending.extend(self.trace(t))
            pending.sort(key=_ts)  # timsort: the carried-over run merges in linear time
            if t < end:  # every span of a later trace ends after t: events up to t are final
                cut = bisect_right(pending, t, key=_ts)
            elif drain:
                cut = len(pending)
            else:
                cut = bisect_left(pending, end, key=_ts)
            yield from pending[:cut]
            del pending[:cut]

    def take(self, start_ts: float, n_events: int, rate_per_s: float = 200.0) -> list[Event]:
        """Exactly ``n_events`` events of an endless stream: a convenience for tests and benches."""
        if n_events < 0:
            raise ValueError("n_events must be >= 0")
        return list(islice(self.events(start_ts, rate_per_s, math.inf), n_events))


# --- invalid input ---------------------------------------------------------------------------

#: Over tracewatch's default per-event limit (256 KiB) but under Kafka's default
#: message size (1 MiB), so it reaches the worker and is rejected there.
OVERSIZED_BYTES: Final = 300 * 1024
_NAN: Final = float("nan")
_INF: Final = float("inf")

#: label -> (field, replacement value); ``_DELETE`` removes the field instead.
_DELETE: Final = object()
_MUTATIONS: Final[Mapping[str, tuple[str, object]]] = MappingProxyType(
    {
        "missing_event_id": ("event_id", _DELETE),
        "missing_trace_id": ("trace_id", _DELETE),
        "missing_ts": ("ts", _DELETE),
        "missing_kind": ("kind", _DELETE),
        "missing_route": ("route", _DELETE),
        "wrong_type_latency_ms": ("latency_ms", "412.5"),
        "wrong_type_route": ("route", ["support", "chat"]),
        "wrong_type_event_id": ("event_id", 12345),
        "wrong_type_ts": ("ts", True),
        "wrong_type_input_tokens": ("input_tokens", 12.5),
        "wrong_type_retry_count": ("retry_count", "0"),
        "wrong_type_scores": ("scores", [0.9, 0.1]),
        "wrong_type_attributes": ("attributes", {"region": {"name": "eu-west-1"}}),
        "negative_latency_ms": ("latency_ms", -12.0),
        "negative_cost_usd": ("cost_usd", -0.0004),
        "negative_input_tokens": ("input_tokens", -5),
        "negative_retry_count": ("retry_count", -1),
        "negative_loop_depth": ("loop_depth", -3),
        "nan_latency_ms": ("latency_ms", _NAN),
        "infinity_cost_usd": ("cost_usd", _INF),
        "negative_infinity_ts": ("ts", -_INF),
        "nan_score": ("scores", {"groundedness": _NAN}),
        "score_above_one": ("scores", {"groundedness": 1.5}),
        "score_below_zero": ("scores", {"hallucination": -0.1}),
        "bad_enum_kind": ("kind", "banana"),
        "bad_enum_status": ("status", "meh"),
        "bad_enum_guardrail_action": ("guardrail_action", "maybe"),
        "ts_without_offset": ("ts", "2026-11-22T10:00:00"),
        "ts_not_a_date": ("ts", "yesterday at noon"),
        "empty_event_id": ("event_id", ""),
        "empty_route": ("route", ""),
        "long_event_id": ("event_id", "e" * 129),
        "long_route": ("route", "r" * 257),
        "long_model": ("model", "m" * 257),
    }
)

#: Every invalid-input class ``invalid_events`` produces, in the order it cycles through.
INVALID_CLASSES: Final[tuple[str, ...]] = (
    "not_json_random_bytes",
    "not_json_truncated",
    "not_object_list",
    "not_object_number",
    *_MUTATIONS,
    "oversized",
)


def _valid_template(rng: np.random.Generator) -> Event:
    """A valid LLM event with every field a mutation touches, so each breaks one rule."""
    return {
        "event_id": rng.bytes(16).hex(),
        "trace_id": rng.bytes(8).hex(),
        "span_id": rng.bytes(8).hex(),
        "ts": round(1_795_860_000.0 + float(rng.uniform(0, 86_400)), 6),
        "kind": "llm",
        "route": "support/chat",
        "app": "helpdesk",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "prompt_version": "v12",
        "latency_ms": round(float(rng.lognormal(math.log(1200.0), 0.5)), 3),
        "input_tokens": int(rng.integers(100, 4000)),
        "output_tokens": int(rng.integers(1, 800)),
        "cost_usd": 0.00042,
        "status": "ok",
        "retry_count": 0,
        "loop_depth": 0,
        "scores": {"groundedness": 0.91, "hallucination": 0.04},
        "guardrail_action": "allow",
        "attributes": {"region": "eu-west-1"},
    }


def _not_json(rng: np.random.Generator) -> bytes:
    """Random bytes that do not parse as JSON (redrawn in the unlikely case they do)."""
    while True:
        raw = rng.bytes(int(rng.integers(8, 256)))
        try:
            json.loads(raw)
        except ValueError:
            return raw


def _invalid(label: str, rng: np.random.Generator) -> bytes:
    """One raw message value of class ``label``."""
    event = _valid_template(rng)
    if label == "not_json_random_bytes":
        return _not_json(rng)
    text = json.dumps(event).encode()
    if label == "not_json_truncated":
        return text[: int(rng.integers(1, len(text) - 1))]
    if label == "not_object_list":
        return json.dumps([event]).encode()
    if label == "not_object_number":
        return json.dumps(float(rng.uniform(0, 1e6))).encode()
    if label == "oversized":
        event["padding"] = "x" * OVERSIZED_BYTES  # unknown fields are allowed; the size is not
        return json.dumps(event).encode()
    name, value = _MUTATIONS[label]
    if value is _DELETE:
        del event[name]
    else:
        event[name] = value
    return json.dumps(event).encode()  # allow_nan: NaN/Infinity appear as bare tokens


def invalid_events(rng: np.random.Generator, n: int) -> list[tuple[str, bytes]]:
    """``n`` (class label, raw Kafka value) pairs, each invalid per the contract.

    Cycles through ``INVALID_CLASSES`` in order from a start drawn from ``rng``, so
    any ``n >= len(INVALID_CLASSES)`` covers every class and repeated calls with
    ``n == 1`` still vary. Each message breaks exactly the rule its label names,
    so a validator's DLQ reason can be checked against it.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    k = len(INVALID_CLASSES)
    first = int(rng.integers(k))
    labels = [INVALID_CLASSES[(first + i) % k] for i in range(n)]
    return [(label, _invalid(label, rng)) for label in labels]
