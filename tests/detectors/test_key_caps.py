"""Key caps: overflow folds into explicit keys, is counted, and gives places back when idle."""

from __future__ import annotations

import json

import numpy as np

from tracewatch.detectors.key_caps import OTHER, KeyCaps
from tracewatch.pipeline import Pipeline, RawMessage

T0 = 1_795_341_600.0


def at(t: float, n: int) -> np.ndarray:
    return np.full(n, T0 + t)


def test_request_ids_as_prompt_versions_fold_into_the_routes_overflow_key() -> None:
    caps = KeyCaps(max_routes=10, max_keys_per_route=4, max_keys=100)
    keys = [("chat", "m", f"req-{i}") for i in range(10)] + [("chat", "m", "req-0")]
    out = caps.fold(keys, at(0, len(keys)))
    # half the route's places go first come, first served; past half, a one-off is folded
    assert out[:2] == keys[:2] and out[-1] == keys[-1]
    assert set(out[2:10]) == {("chat", OTHER, OTHER)}
    assert caps.folded == {"key": 8} and caps.keys == 2
    # a real new version comes again: it takes a place (and twice in one batch: at once)
    assert caps.fold([("chat", "m", "req-5")], at(1, 1)) == [("chat", "m", "req-5")]
    assert caps.fold([("chat", "m", "v9")] * 2, at(2, 2)) == [("chat", "m", "v9")] * 2
    assert caps.fold([("chat", "m", "v10")] * 2, at(3, 2)) == [("chat", OTHER, OTHER)] * 2


def test_invented_routes_fold_into_one_key_and_known_routes_stay_whole() -> None:
    caps = KeyCaps(max_routes=4, max_keys_per_route=10, max_keys=100)
    caps.fold([("known", "m", "v1"), ("other", "m", "v1")], at(0, 2))
    scan = [(f"scan/{i}", "m", "v") for i in range(50)]
    out = caps.fold([*scan, ("known", "m", "v1")], at(1, 51))
    assert set(out[:50]) == {(OTHER, OTHER, OTHER)} and out[50] == ("known", "m", "v1")
    assert caps.folded == {"route": 50} and caps.routes == 2
    assert caps.fold([scan[7]], at(2, 1)) == [scan[7]]  # seen again: a place


def test_the_total_is_capped_and_idle_keys_give_their_places_back() -> None:
    caps = KeyCaps(max_routes=100, max_keys_per_route=100, max_keys=5, idle_s=600)
    first = [(f"r{i}", "m", "v") for i in range(5)]
    caps.fold(first, at(0, 5))
    assert caps.fold(first, at(0, 5)) == first and caps.keys == 5  # each seen twice
    assert caps.fold([("r0", "m", "v2")], at(1, 1)) == [("r0", OTHER, OTHER)]
    caps.fold([("r1", "m", "v")], at(500, 1))  # r1 stays active
    out = caps.fold([("new", "m", "v")], at(700, 1))  # the other four were idle > 600 s
    assert out == [("new", "m", "v")] and caps.keys == 2 and caps.routes == 2


def test_memory_stays_flat_under_a_million_distinct_keys() -> None:
    caps = KeyCaps(max_routes=50, max_keys_per_route=20, max_keys=500)
    for batch in range(200):
        keys = [(f"route/{(batch * 5000 + i) % 3000}", "m", f"id-{batch}-{i}") for i in range(5000)]
        caps.fold(keys, at(batch, len(keys)))
    assert caps.routes <= 50 and caps.keys <= 500
    assert sum(caps.folded.values()) == 1_000_000 - caps.keys


def test_the_pipeline_counts_every_event_of_a_folded_key() -> None:
    events = [
        {"event_id": f"e{i}", "trace_id": "t", "ts": T0 + i / 100, "kind": "llm",
         "route": "chat", "model": "m", "prompt_version": f"req-{i}", "latency_ms": 10.0}
        for i in range(1000)
    ]  # fmt: skip
    pipeline = Pipeline(caps=KeyCaps(max_keys_per_route=20))
    pipeline.process([RawMessage(json.dumps(e).encode(), None, 0, i) for i, e in enumerate(events)])
    closed = pipeline.finish()
    assert len(closed) == 11 and sum(b.stats.count for b in closed) == 1000
    other = [b for b in closed if b.key == ("chat", OTHER, OTHER)]
    assert other[0].stats.count == 990 and pipeline.caps.folded == {"key": 990}
