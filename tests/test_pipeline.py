"""The pure pipeline: validation, duplicates and counters that always add up."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tracewatch.demo.traffic import DemoTraffic, invalid_events
from tracewatch.pipeline import Pipeline, RawMessage

T0 = 1_795_341_600.0


def messages(values: list[bytes]) -> list[RawMessage]:
    return [RawMessage(v, None, 0, i) for i, v in enumerate(values)]


def test_valid_invalid_and_duplicates_add_up() -> None:
    good = [json.dumps(e).encode() for e in DemoTraffic(seed=3).take(T0, 2000)]
    bad = [raw for _, raw in invalid_events(np.random.default_rng(1), 300)]
    dupes = good[:50]
    pipeline = Pipeline(allowed_lateness_s=0, max_message_bytes=256 * 1024)
    result = pipeline.process(messages(good + bad + dupes))
    c = pipeline.counters
    assert c.received == 2350 and c.valid == 2000
    assert c.rejected["duplicate_event_id"] == 50
    assert c.rejected_total == 350 == len(result.rejected)
    assert result.offsets.tolist() == list(range(2000))
    assert sum(b.stats.count for b in result.closed + pipeline.finish()) == 2000


def test_every_invalid_class_is_rejected_with_a_known_reason() -> None:
    bad = invalid_events(np.random.default_rng(5), 400)
    result = Pipeline().process(messages([raw for _, raw in bad]))
    assert len(result.rejected) == 400 and not result.events
    assert all(r.error.reason for r in result.rejected)


def test_missing_costs_are_priced_from_the_table_and_flagged() -> None:
    from tracewatch.pricing import PriceTable

    prices = PriceTable.load()
    base = {"trace_id": "t", "ts": T0, "kind": "llm", "route": "r", "model": "gpt-4o-mini"}
    values = [
        json.dumps({**base, "event_id": "priced", "input_tokens": 1000, "output_tokens": 200}),
        json.dumps({**base, "event_id": "provided", "input_tokens": 1000, "cost_usd": 0.5}),
        json.dumps({**base, "event_id": "no-tokens"}),
        json.dumps({**base, "event_id": "unknown", "model": "no-such-model", "input_tokens": 9}),
    ]
    result = Pipeline(prices=prices).process(messages([v.encode() for v in values]))
    by_id = {e.event_id: e for e in result.events}
    expected = prices.cost_of("gpt-4o-mini", 1000, 200)
    assert expected is not None and expected > 0
    assert by_id["priced"].cost_usd == expected
    assert by_id["provided"].cost_usd == 0.5
    assert by_id["no-tokens"].cost_usd is None and by_id["unknown"].cost_usd is None
    assert result.cost_computed.tolist() == [True, False, False, False]
    pipeline = Pipeline(prices=prices)
    pipeline.process(messages([v.encode() for v in values]))
    costs = {b.key[1]: b.stats.summary()["cost_sum"] for b in pipeline.finish()}
    assert costs["gpt-4o-mini"] == pytest.approx(expected + 0.5)


def test_content_attributes_are_dropped_unless_the_operator_opts_in() -> None:
    attributes = {"region": "eu", "prompt": "hello", "gen_ai.prompt.0.content": "hi",
                  "gen_ai.prompt.name": "greeting", "llm.input_messages": "[...]"}  # fmt: skip
    event = {"event_id": "e", "trace_id": "t", "ts": T0, "kind": "llm", "route": "r",
             "attributes": attributes}  # fmt: skip
    value = json.dumps(event).encode()
    (dropped,) = Pipeline().process(messages([value])).events
    assert dropped.attributes == {"region": "eu", "gen_ai.prompt.name": "greeting"}
    (kept,) = Pipeline(store_content=True).process(messages([value])).events
    assert kept.attributes == attributes


def test_events_dated_past_the_clock_skew_go_to_the_dlq_and_hold_nothing() -> None:
    """Issue 16: one event a year ahead must not open a minute, move the watermark
    or make the later events late."""
    good = [json.dumps(e).encode() for e in DemoTraffic(seed=4).take(T0, 600)]
    ahead = json.loads(good[0])
    ahead.update(event_id="from-the-future", ts=T0 + 365 * 86400)
    just_inside = dict(ahead, event_id="skewed-a-little", ts=T0 + 3500)
    values = [*good[:300], json.dumps(ahead).encode(), json.dumps(just_inside).encode()]
    pipeline = Pipeline(allowed_lateness_s=120, clock=lambda: T0, max_future_s=3600)
    result = pipeline.process(messages(values + good[300:]))
    (refused,) = result.rejected
    assert refused.error.reason == "future_timestamp" and refused.error.field == "ts"
    assert refused.message.offset == 300
    assert "365 days after" in str(refused.error) and "MAX_FUTURE_S" in str(refused.error)
    assert pipeline.counters.rejected == {"future_timestamp": 1}
    assert pipeline.counters.valid == 601 and result.late == 0
    assert pipeline.aggregator.watermark < T0 + 3600


def test_the_clock_is_read_when_the_batch_is_processed() -> None:
    event = next(iter(DemoTraffic(seed=5).take(T0, 1)))
    now = [T0 - 7200.0]
    pipeline = Pipeline(clock=lambda: now[0], max_future_s=3600)
    assert pipeline.process(messages([json.dumps(event).encode()])).rejected
    now[0] = T0
    event["event_id"] = "again-later"
    assert not pipeline.process(messages([json.dumps(event).encode()])).rejected
