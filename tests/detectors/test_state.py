"""The stored form of a minute's statistics: exact, mergeable again, corruption refused."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tracewatch.detectors.columns import EventColumns
from tracewatch.detectors.stats import BucketStats, decode_state, encode_state
from tracewatch.schemas.event import TraceEvent


def stats_of(seed: int, n: int = 200) -> BucketStats:
    rng = np.random.default_rng(seed)
    events = [
        TraceEvent.model_validate(
            {
                "event_id": f"e{i}",
                "trace_id": "t",
                "ts": 1_795_341_600.0 + i * 0.1,
                "kind": "agent_step",
                "route": "r",
                "cost_usd": float(rng.lognormal(-6, 1)),
                "latency_ms": float(rng.lognormal(6, 0.5)),
                "input_tokens": int(rng.integers(0, 5000)),
                "loop_depth": int(rng.integers(0, 30)),
                "status": ["ok", "error", "timeout"][int(rng.integers(0, 3))],
                "scores": {"groundedness": float(rng.random())} if i % 3 else {},
            }
        )
        for i in range(n)
    ]
    stats = BucketStats()
    stats.add(EventColumns.from_events(events))
    return stats


def test_a_decoded_state_has_the_same_summary() -> None:
    original = stats_of(1)
    assert decode_state(encode_state(original)).summary() == original.summary()


def test_decoded_states_merge_like_the_originals() -> None:
    a, b = stats_of(2), stats_of(3)
    merged = decode_state(encode_state(a))
    merged.merge(decode_state(encode_state(b)))
    a.merge(b)
    assert merged.summary() == a.summary()


def test_an_empty_state_round_trips() -> None:
    empty = decode_state(encode_state(BucketStats()))
    assert empty.count == 0 and math.isinf(empty.max_ts)


@pytest.mark.parametrize("text", ["", "not base64!", "AAAA", encode_state(BucketStats())[:-8]])
def test_corrupt_states_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="state"):
        decode_state(text)


def test_retries_and_guardrails_are_counted_merged_and_kept_in_the_state() -> None:
    def event(i: int, **fields: object) -> TraceEvent:
        return TraceEvent.model_validate(
            {"event_id": f"e{i}", "trace_id": "t", "ts": 1_795_341_600.0 + i, "kind": "llm",
             "route": "r", **fields}
        )  # fmt: skip

    events = [
        event(0, retry_count=2),
        event(1, kind="guardrail", guardrail_name="pii", guardrail_action="redact"),
        event(2, kind="guardrail", guardrail_name="pii", guardrail_action="allow"),
        event(3, kind="guardrail", guardrail_name="jailbreak", guardrail_action="block"),
    ]
    a, b = BucketStats(), BucketStats()
    a.add(EventColumns.from_events(events[:2]))
    b.add(EventColumns.from_events(events[2:]))
    a.merge(b)
    assert (a.retried_count, a.retries_sum) == (1, 2)
    assert a.guardrails == {"pii": [2, 0, 1], "jailbreak": [1, 1, 0]}
    back = decode_state(encode_state(a))
    assert (back.retried_count, back.retries_sum, back.guardrails) == (1, 2, a.guardrails)
