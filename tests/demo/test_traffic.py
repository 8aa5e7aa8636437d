"""Demo traffic: determinism, contract conformance, realistic shapes, invalid inputs.

The contract checks use a small validator written here from contract.md, on
purpose independent of tracewatch's own: the generator must satisfy the
contract, not whatever the validator of the day accepts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import statistics
from collections import Counter, defaultdict
from datetime import datetime
from itertools import pairwise
from typing import Any

import numpy as np
import pytest

import tracewatch.demo
from tracewatch.demo import (
    DEFAULT_ROUTES,
    INVALID_CLASSES,
    DemoTraffic,
    Event,
    RouteProfile,
    invalid_events,
)

START = 1_795_860_000.0  # 2026-11-27, inside the contract's 1970..2100 range
ROUTES = {r.name: r for r in DEFAULT_ROUTES}
AGENT_ROUTES = [r.name for r in DEFAULT_ROUTES if r.workload == "agent"]
HEX16 = re.compile(r"[0-9a-f]{16}")
UUID4_HEX = re.compile(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}")
MiB = 1 << 20

# --- an independent reading of contract.md, "Trace event" -------------------------------------

REQUIRED = ("event_id", "trace_id", "ts", "kind", "route")
BOUNDED_IDS = {"event_id": 128, "trace_id": 128, "route": 256}
OPTIONAL_STRINGS: dict[str, int | None] = {
    "span_id": None,
    "parent_span_id": None,
    "error_type": None,
    "tool_name": None,
    "tool_args_hash": None,
    "guardrail_name": None,
    "app": 256,
    "model": 256,
    "provider": 256,
    "prompt_version": 256,
    "cohort": 256,
    "session_id": 256,
}
ENUMS = {
    "kind": ("llm", "tool", "retrieval", "agent_step", "guardrail", "eval"),
    "status": ("ok", "error", "timeout"),
    "guardrail_action": ("allow", "block", "redact"),
}
NONNEG_NUMBERS = ("latency_ms", "cost_usd")
NONNEG_INTS = ("input_tokens", "output_tokens", "retry_count", "loop_depth")


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _string_violation(name: str, value: object, low: int, high: int | None) -> set[str]:
    if not isinstance(value, str):
        return {f"type:{name}"}
    if len(value) < low or (high is not None and len(value) > high):
        return {f"length:{name}"}
    return set()


def _ts_violation(ts: object) -> set[str]:
    if isinstance(ts, str):
        try:
            parsed = datetime.fromisoformat(ts)
        except ValueError:
            return {"ts:format"}
        return set() if parsed.tzinfo is not None else {"ts:no_offset"}
    if not _is_number(ts):
        return {"type:ts"}
    assert isinstance(ts, int | float)
    return set() if math.isfinite(ts) else {"nonfinite:ts"}


def _number_violation(name: str, value: object, integer: bool) -> set[str]:
    if not (_is_int(value) if integer else _is_number(value)):
        return {f"type:{name}"}
    assert isinstance(value, int | float)
    if not math.isfinite(value):
        return {f"nonfinite:{name}"}
    return {f"negative:{name}"} if value < 0 else set()


def _scores_violation(scores: object) -> set[str]:
    if not isinstance(scores, dict):
        return {"type:scores"}
    found: set[str] = set()
    for value in scores.values():
        if not _is_number(value):
            found.add("type:scores")
        elif not math.isfinite(value):
            found.add("nonfinite:scores")
        elif not 0.0 <= value <= 1.0:
            found.add("range:scores")
    return found


def _attributes_violation(attributes: object) -> set[str]:
    if not isinstance(attributes, dict):
        return {"type:attributes"}
    ok = all(
        isinstance(v, str | bool) or (_is_number(v) and math.isfinite(v))
        for v in attributes.values()
    )
    return set() if ok else {"type:attributes"}


def contract_violations(obj: dict[str, Any]) -> set[str]:
    """Every rule of the trace event that ``obj`` breaks, as ``kind:field`` tags."""
    found = {f"missing:{name}" for name in REQUIRED if name not in obj}
    for name, high in BOUNDED_IDS.items():
        if name in obj:
            found |= _string_violation(name, obj[name], 1, high)
    for name, limit in OPTIONAL_STRINGS.items():
        if name in obj:
            found |= _string_violation(name, obj[name], 0, limit)
    if "ts" in obj:
        found |= _ts_violation(obj["ts"])
    found |= {f"enum:{k}" for k, allowed in ENUMS.items() if k in obj and obj[k] not in allowed}
    for name in NONNEG_NUMBERS + NONNEG_INTS:
        if name in obj:
            found |= _number_violation(name, obj[name], integer=name in NONNEG_INTS)
    if "scores" in obj:
        found |= _scores_violation(obj["scores"])
    if "attributes" in obj:
        found |= _attributes_violation(obj["attributes"])
    return found


# --- shared samples (module scope: generated once, about half a second) -----------------------


@pytest.fixture(scope="module")
def sample() -> list[Event]:
    """About 51 000 events: every trace started in 76 s at 200 traces/s, complete.

    Complete (``drain``) rather than cut at a time: a cut drops the slow tail of
    the traces near it -- timeouts above all -- and biases the error rate low.
    """
    return list(DemoTraffic(seed=7).events(START, 200.0, 76.0, drain=True))


@pytest.fixture(scope="module")
def llm_by_route(sample: list[Event]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = defaultdict(list)
    for event in sample:
        if event["kind"] == "llm":
            out[str(event["route"])].append(event)
    return out


def _traces(gen: DemoTraffic, route: str, n: int) -> list[list[Event]]:
    return [gen.trace(START + i, route=route) for i in range(n)]


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_gives_identical_events() -> None:
    assert DemoTraffic(seed=3).take(START, 3000) == DemoTraffic(seed=3).take(START, 3000)
    assert DemoTraffic(seed=3).trace(START) == DemoTraffic(seed=3).trace(START)


def test_different_seeds_differ() -> None:
    a, b = DemoTraffic(seed=1).take(START, 500), DemoTraffic(seed=2).take(START, 500)
    assert {e["event_id"] for e in a}.isdisjoint({e["event_id"] for e in b})
    assert [e["route"] for e in a] != [e["route"] for e in b]


# --- the stream -------------------------------------------------------------------------------


def test_events_are_ordered_and_inside_the_window() -> None:
    duration = 120.0
    events = list(DemoTraffic(seed=11).events(START, 40.0, duration))
    ts = [float(e["ts"]) for e in events]  # type: ignore[arg-type]
    assert len(events) > 10_000
    assert all(a <= b for a, b in pairwise(ts))
    assert ts[0] >= START and ts[-1] < START + duration
    traces = {e["trace_id"] for e in events}
    assert 40.0 * duration * 0.9 < len(traces) < 40.0 * duration * 1.1  # Poisson count


def test_drain_adds_only_the_tail_of_started_traces() -> None:
    cut = list(DemoTraffic(seed=5).events(START, 30.0, 60.0))
    drained = list(DemoTraffic(seed=5).events(START, 30.0, 60.0, drain=True))
    end = START + 60.0
    assert [e for e in drained if float(e["ts"]) < end] == cut  # type: ignore[arg-type]
    assert len(drained) > len(cut)
    ts = [float(e["ts"]) for e in drained]  # type: ignore[arg-type]
    assert all(a <= b for a, b in pairwise(ts))


def test_take_returns_exactly_n() -> None:
    gen = DemoTraffic(seed=2)
    assert gen.take(START, 0) == []
    assert len(gen.take(START, 1234, rate_per_s=5.0)) == 1234
    with pytest.raises(ValueError):
        gen.take(START, -1)
    with pytest.raises(ValueError):
        next(gen.events(START, 0.0, 10.0))


# --- the contract -----------------------------------------------------------------------------


def test_every_event_meets_the_contract(sample: list[Event]) -> None:
    head = sample[:20_000]  # every kind and route, at a third of the cost
    json.dumps(head, allow_nan=False)  # raises on NaN, infinities and non-JSON types
    for event in head:
        assert contract_violations(event) == set(), event
        assert isinstance(event["ts"], float)
        assert UUID4_HEX.fullmatch(event["event_id"])  # type: ignore[call-overload]
        assert HEX16.fullmatch(event["trace_id"])  # type: ignore[call-overload]
        assert HEX16.fullmatch(event["span_id"])  # type: ignore[call-overload]
    assert {e["kind"] for e in head} == set(ENUMS["kind"])
    assert {e["route"] for e in head} == set(ROUTES)


def test_event_ids_are_unique(sample: list[Event]) -> None:
    assert len(sample) >= 50_000
    assert len({e["event_id"] for e in sample}) == len(sample)


def test_events_within_a_trace_have_increasing_ts() -> None:
    gen = DemoTraffic(seed=9)
    for _ in range(2000):
        events = gen.trace(START)
        ts = [float(e["ts"]) for e in events]  # type: ignore[arg-type]
        assert all(a < b for a, b in pairwise(ts))
        assert ts[0] > START
        assert len({e["trace_id"] for e in events}) == 1
        assert len({e["span_id"] for e in events}) == len(events)


# --- agent runs -------------------------------------------------------------------------------


@pytest.mark.parametrize("route", AGENT_ROUTES)
def test_agent_runs_step_through_loop_depth(route: str) -> None:
    profile = ROUTES[route]
    lengths = []
    for events in _traces(DemoTraffic(seed=4), route, 300):
        steps = [e for e in events if e["kind"] == "agent_step"]
        depths = [e["loop_depth"] for e in steps]
        assert depths == list(range(len(steps)))
        step_span = {e["loop_depth"]: e["span_id"] for e in steps}
        for event in events:
            if event["kind"] in ("llm", "tool"):
                assert event["parent_span_id"] == step_span[event["loop_depth"]]
            if event["kind"] == "tool":
                assert event["tool_name"] in profile.tools
                assert HEX16.fullmatch(str(event["tool_args_hash"]))
        assert [e["loop_depth"] for e in events if "loop_depth" in e] == sorted(
            e["loop_depth"] for e in events if "loop_depth" in e
        )  # type: ignore[type-var]
        assert all(e["kind"] != "eval" for e in events[:-1])
        if steps[-1]["status"] == "ok":
            lengths.append(len(steps))
            assert profile.min_steps <= len(steps) <= profile.max_steps
    assert statistics.mean(lengths) == pytest.approx(profile.mean_steps, rel=0.15)


def test_runaway_agents_repeat_one_call_past_the_cap() -> None:
    stuck = dataclasses.replace(ROUTES["agent/researcher"], runaway_rate=1.0, error_rate=0.0)
    events = DemoTraffic(seed=1, routes=[stuck]).trace(START)
    depth = max(int(e["loop_depth"]) for e in events if "loop_depth" in e)  # type: ignore[call-overload]
    assert 26 <= depth + 1 <= 40
    assert len({e["tool_args_hash"] for e in events if e["kind"] == "tool"}) == 1


def test_agent_evals_score_the_run() -> None:
    evals = [
        e
        for events in _traces(DemoTraffic(seed=6), "agent/coder", 400)
        for e in events
        if e["kind"] == "eval"
    ]
    rate = ROUTES["agent/coder"].score_rate
    assert abs(len(evals) - 400 * rate) < 4 * math.sqrt(400 * rate * (1 - rate))
    for event in evals:
        scores = event["scores"]
        assert isinstance(scores, dict) and "task_completion" in scores


# --- realistic shapes -------------------------------------------------------------------------


def test_error_rate_per_route_matches_profile(llm_by_route: dict[str, list[Event]]) -> None:
    chi2 = 0.0
    for route, events in llm_by_route.items():
        n, p = len(events), ROUTES[route].error_rate
        failed = sum(e["status"] != "ok" for e in events)
        assert abs(failed - n * p) <= 4 * math.sqrt(n * p * (1 - p)) + 1, route
        chi2 += (failed - n * p) ** 2 / (n * p * (1 - p))
        for event in events:
            assert (event["status"] == "ok") == ("error_type" not in event)
    assert chi2 < 20.5  # chi-square, 5 degrees of freedom, p = 0.001


def test_error_types_and_timeouts_look_real(llm_by_route: dict[str, list[Event]]) -> None:
    failures = [e for events in llm_by_route.values() for e in events if e["status"] != "ok"]
    types = Counter(e["error_type"] for e in failures)
    assert types.most_common(1)[0][0] == "RateLimitError"
    for event in failures:
        if event["status"] == "timeout":
            assert event["latency_ms"] >= ROUTES[str(event["route"])].timeout_ms  # type: ignore[operator]
    retries = Counter(e["retry_count"] for events in llm_by_route.values() for e in events)
    assert retries[0] > 0.9 * sum(retries.values())


def test_median_latency_per_route_matches_profile(llm_by_route: dict[str, list[Event]]) -> None:
    for route, events in llm_by_route.items():
        ok = [
            float(e["latency_ms"])
            for e in events  # type: ignore[arg-type]
            if e["status"] == "ok" and e["retry_count"] == 0
        ]
        assert statistics.median(ok) == pytest.approx(ROUTES[route].latency_median_ms, rel=0.10)


def test_cost_follows_tokens_and_prices(llm_by_route: dict[str, list[Event]]) -> None:
    omitted = total = 0
    for route, events in llm_by_route.items():
        price_in, price_out = ROUTES[route].price_per_mtok
        for event in events:
            total += 1
            if "cost_usd" not in event:
                omitted += 1
                continue
            tokens_in, tokens_out = event["input_tokens"], event["output_tokens"]
            assert isinstance(tokens_in, int) and isinstance(tokens_out, int)
            expected = (tokens_in * price_in + tokens_out * price_out) / 1e6
            assert abs(event["cost_usd"] - expected) <= 1e-8  # type: ignore[operator]
    assert abs(omitted - 0.02 * total) <= 4 * math.sqrt(0.02 * 0.98 * total)


def test_scores_are_beta_shaped(sample: list[Event]) -> None:
    by_name: dict[str, list[float]] = defaultdict(list)
    for event in sample:
        for name, value in event.get("scores", {}).items():  # type: ignore[attr-defined]
            assert 0.0 <= value <= 1.0
            by_name[name].append(value)
    assert statistics.mean(by_name["groundedness"]) == pytest.approx(8 / 10, abs=0.02)
    assert statistics.mean(by_name["hallucination"]) == pytest.approx(1.5 / 13.5, abs=0.02)
    assert {"context_relevance", "task_completion"} <= set(by_name)


def test_guardrails_allow_block_and_redact(sample: list[Event]) -> None:
    guards = [e for e in sample if e["kind"] == "guardrail"]
    actions = Counter(e["guardrail_action"] for e in guards)
    assert set(actions) == {"allow", "block", "redact"}
    assert actions["allow"] > 0.9 * len(guards)
    assert {e["route"] for e in guards} == {"support/chat", "refund/primary"}
    blocked = {e["trace_id"] for e in guards if e["guardrail_action"] == "block"}
    assert not any(e["trace_id"] in blocked for e in sample if e["kind"] == "llm")


def test_routes_and_prompt_versions_vary(sample: list[Event]) -> None:
    assert {e["route"] for e in sample} == set(ROUTES)
    versions = Counter(e["prompt_version"] for e in sample if e["route"] == "support/chat")
    assert set(versions) == {"v12", "v13"} and versions["v12"] > versions["v13"]


def test_route_profile_rejects_impossible_settings() -> None:
    with pytest.raises(ValueError):
        RouteProfile("r", "a", "gpt-4o-mini", "openai", "chat", "v1", error_rate=1.5)
    with pytest.raises(ValueError):
        RouteProfile("r", "a", "no-such-model", "acme", "chat", "v1")
    RouteProfile("r", "a", "no-such-model", "acme", "chat", "v1", prices=(1.0, 2.0))
    with pytest.raises(ValueError):
        DemoTraffic(routes=[DEFAULT_ROUTES[0], DEFAULT_ROUTES[0]])


# --- invalid input ----------------------------------------------------------------------------

#: Every class the brief names, so dropping one from the generator fails here.
NAMED_CLASSES = {
    "not_json_random_bytes",
    "not_json_truncated",
    "not_object_list",
    "not_object_number",
    "missing_event_id",
    "missing_trace_id",
    "missing_ts",
    "missing_kind",
    "missing_route",
    "wrong_type_latency_ms",
    "wrong_type_route",
    "negative_latency_ms",
    "negative_cost_usd",
    "negative_input_tokens",
    "negative_retry_count",
    "negative_loop_depth",
    "nan_latency_ms",
    "infinity_cost_usd",
    "negative_infinity_ts",
    "score_above_one",
    "score_below_zero",
    "bad_enum_kind",
    "bad_enum_status",
    "ts_without_offset",
    "long_event_id",
    "empty_route",
    "oversized",
}
#: label -> the one contract rule the message breaks.
EXPECTED = {
    **{f"missing_{f}": f"missing:{f}" for f in REQUIRED},
    **{
        f"wrong_type_{f}": f"type:{f}"
        for f in (
            "latency_ms",
            "route",
            "event_id",
            "ts",
            "input_tokens",
            "retry_count",
            "scores",
            "attributes",
        )
    },
    **{
        f"negative_{f}": f"negative:{f}"
        for f in ("latency_ms", "cost_usd", "input_tokens", "retry_count", "loop_depth")
    },
    "nan_latency_ms": "nonfinite:latency_ms",
    "infinity_cost_usd": "nonfinite:cost_usd",
    "negative_infinity_ts": "nonfinite:ts",
    "nan_score": "nonfinite:scores",
    "score_above_one": "range:scores",
    "score_below_zero": "range:scores",
    "bad_enum_kind": "enum:kind",
    "bad_enum_status": "enum:status",
    "bad_enum_guardrail_action": "enum:guardrail_action",
    "ts_without_offset": "ts:no_offset",
    "ts_not_a_date": "ts:format",
    "empty_event_id": "length:event_id",
    "long_event_id": "length:event_id",
    "empty_route": "length:route",
    "long_route": "length:route",
    "long_model": "length:model",
}
CONSTANTS = {
    "nan_latency_ms": {"NaN"},
    "nan_score": {"NaN"},
    "infinity_cost_usd": {"Infinity"},
    "negative_infinity_ts": {"-Infinity"},
}


@pytest.fixture(scope="module")
def invalid() -> list[tuple[str, bytes]]:
    return invalid_events(np.random.default_rng(0), 2 * len(INVALID_CLASSES) + 3)


def test_invalid_events_cover_every_class(invalid: list[tuple[str, bytes]]) -> None:
    assert set(INVALID_CLASSES) >= NAMED_CLASSES
    assert Counter(label for label, _ in invalid).keys() == set(INVALID_CLASSES)
    assert set(INVALID_CLASSES) == set(EXPECTED) | {
        "not_json_random_bytes",
        "not_json_truncated",
        "not_object_list",
        "not_object_number",
        "oversized",
    }


def _parse(raw: bytes) -> tuple[object, set[str]]:
    constants: set[str] = set()

    def hook(token: str) -> float:
        constants.add(token)
        return float(token)

    return json.loads(raw, parse_constant=hook), constants


def test_each_invalid_event_breaks_exactly_its_rule(invalid: list[tuple[str, bytes]]) -> None:
    for label, raw in invalid:
        assert isinstance(raw, bytes)
        if label.startswith("not_json"):
            with pytest.raises(ValueError):
                json.loads(raw)
            continue
        obj, constants = _parse(raw)
        assert constants == CONSTANTS.get(label, set()), label
        if label.startswith("not_object"):
            assert not isinstance(obj, dict)
            continue
        assert isinstance(obj, dict)
        if label == "oversized":
            assert len(raw) > 256 * 1024 and contract_violations(obj) == set()
            continue
        assert len(raw) < MiB
        assert contract_violations(obj) == {EXPECTED[label]}, label


def test_invalid_events_are_seeded_and_vary_when_drawn_one_at_a_time() -> None:
    a = invalid_events(np.random.default_rng(1), 40)
    assert a == invalid_events(np.random.default_rng(1), 40)
    rng = np.random.default_rng(2)
    assert len({invalid_events(rng, 1)[0][0] for _ in range(40)}) > 10


def test_public_api_is_pinned() -> None:
    assert sorted(tracewatch.demo.__all__) == sorted(
        [
            "DEFAULT_ROUTES",
            "INVALID_CLASSES",
            "MODEL_PRICES",
            "DemoTraffic",
            "Event",
            "RouteProfile",
            "ScoreSpec",
            "Workload",
            "invalid_events",
        ]
    )
