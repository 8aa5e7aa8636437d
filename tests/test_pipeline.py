"""The pure pipeline: validation, duplicates and counters that always add up."""

from __future__ import annotations

import json

import numpy as np

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
