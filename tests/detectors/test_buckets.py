"""Event-time buckets: grouping, watermark closing, late events, exact merges."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tracewatch.detectors.buckets import BucketAggregator, ClosedBucket, RowSources
from tracewatch.detectors.columns import EventColumns, KeyTuple
from tracewatch.schemas.event import TraceEvent

T0 = 1_795_341_600.0  # a minute boundary
A: KeyTuple = ("support/chat", "gpt-4o-mini", "v1")
B: KeyTuple = ("refund/primary", "claude", "v7")


def ev(ts: float, key: KeyTuple = A, **fields: object) -> TraceEvent:
    return TraceEvent.model_validate(
        {"event_id": f"e{ts}{key}", "trace_id": "t", "ts": ts, "kind": "llm",
         "route": key[0], "model": key[1], "prompt_version": key[2], **fields}
    )  # fmt: skip


def src(partition: int, offset: int = 0, replayed: bool = False) -> RowSources:
    """Sources for a one-row batch."""
    return RowSources(np.array([partition]), np.array([offset]), np.array([replayed]))


def feed(agg: BucketAggregator, events: list[TraceEvent]) -> int:
    keys = [(e.route, e.model or "", e.prompt_version or "") for e in events]
    return agg.add(keys, EventColumns.from_events(events))


def by_slot(closed: list[ClosedBucket]) -> dict[tuple[KeyTuple, float, bool], ClosedBucket]:
    return {(b.key, b.start, b.late): b for b in closed}


def test_bucket_closes_only_when_watermark_passes_its_end() -> None:
    agg = BucketAggregator(width_s=60, allowed_lateness_s=30)
    feed(agg, [ev(T0 + 5), ev(T0 + 59.9)])
    assert agg.close_ready() == []
    feed(agg, [ev(T0 + 89.9)])  # watermark T0+59.9 < end T0+60
    assert agg.close_ready() == []
    feed(agg, [ev(T0 + 90)])  # watermark reaches the end
    closed = agg.close_ready()
    assert [(b.key, b.start, b.late, b.stats.count) for b in closed] == [(A, T0, False, 2)]
    assert agg.open_buckets == 1


def test_keys_and_minutes_are_separate_buckets() -> None:
    agg = BucketAggregator(width_s=60, allowed_lateness_s=0)
    feed(agg, [ev(T0 + 1), ev(T0 + 2, B), ev(T0 + 61), ev(T0 + 62, B), ev(T0 + 200)])
    slots = by_slot(agg.close_ready())
    assert {k: b.stats.count for k, b in slots.items()} == {
        (A, T0, False): 1, (B, T0, False): 1, (A, T0 + 60, False): 1, (B, T0 + 60, False): 1,
    }  # fmt: skip


def test_late_events_are_counted_and_kept_in_a_late_partial() -> None:
    agg = BucketAggregator(width_s=60, allowed_lateness_s=10)
    feed(agg, [ev(T0 + 1, cost_usd=1.0)])
    feed(agg, [ev(T0 + 75)])
    assert [b.start for b in agg.close_ready()] == [T0]
    late = feed(agg, [ev(T0 + 30, cost_usd=2.0), ev(T0 + 31, cost_usd=3.0), ev(T0 + 76)])
    assert late == 2 and agg.late_events == 2
    closed = by_slot(agg.close_ready())
    late_bucket = closed[(A, T0, True)]
    assert late_bucket.stats.count == 2 and late_bucket.stats.cost_sum == 5.0
    assert (A, T0 + 60, False) not in closed  # still open: watermark is T0+66


def test_events_in_one_batch_are_not_late_relative_to_each_other() -> None:
    agg = BucketAggregator(width_s=60, allowed_lateness_s=0)
    assert feed(agg, [ev(T0 + 500), ev(T0 + 1)]) == 0
    assert [b.start for b in agg.close_ready()] == [T0]


def test_close_all_flushes_everything_and_later_events_are_late() -> None:
    agg = BucketAggregator(width_s=60, allowed_lateness_s=1000)
    feed(agg, [ev(T0 + 1), ev(T0 + 70, B)])
    assert len(agg.close_all()) == 2 and agg.open_buckets == 0
    assert feed(agg, [ev(T0 + 2)]) == 1


def test_statistics_match_numpy_on_one_bucket() -> None:
    rng = np.random.default_rng(7)
    n = 5000
    cost = rng.lognormal(-7, 1.2, n)
    latency = rng.lognormal(6.5, 0.6, n)
    depth = rng.integers(0, 30, n)
    status = rng.choice(["ok", "error", "timeout"], n, p=[0.9, 0.07, 0.03])
    events = [
        ev(T0 + i * 0.01, cost_usd=float(cost[i]), latency_ms=float(latency[i]),
           loop_depth=int(depth[i]), status=str(status[i]), input_tokens=i, output_tokens=2 * i,
           scores={"groundedness": 0.5} if i % 2 else {})
        for i in range(n)
    ]  # fmt: skip
    agg = BucketAggregator(width_s=60, allowed_lateness_s=0)
    for chunk in range(0, n, 777):  # several batches: partials must merge exactly
        feed(agg, events[chunk : chunk + 777])
    [bucket] = agg.close_all()
    s = bucket.stats.summary()
    assert s["count"] == n
    assert s["error_count"] == int((status == "error").sum())
    assert s["timeout_count"] == int((status == "timeout").sum())
    assert s["input_tokens_sum"] == n * (n - 1) // 2
    assert s["output_tokens_mean"] == pytest.approx(n - 1)
    assert s["cost_sum"] == pytest.approx(cost.sum(), rel=1e-12)
    assert s["loop_depth_max"] == int(depth.max())
    assert s["score_means"] == {"groundedness": 0.5} and s["score_counts"] == {
        "groundedness": n // 2
    }
    for name, values in (("cost", cost), ("latency", latency)):
        for q, label in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
            exact = np.quantile(values, q, method="lower")
            assert math.isclose(s[f"{name}_{label}"], exact, rel_tol=0.01)


def test_missing_optional_numbers_do_not_count_as_zero() -> None:
    agg = BucketAggregator(width_s=60, allowed_lateness_s=0)
    feed(agg, [ev(T0 + 1, latency_ms=100.0), ev(T0 + 2)])
    [bucket] = agg.close_all()
    s = bucket.stats.summary()
    assert (
        s["count"] == 2
        and s["latency_count"] == 1
        and s["latency_p50"] == pytest.approx(100, rel=0.01)
    )
    assert s["cost_p50"] is None and s["input_tokens_mean"] is None and s["loop_depth_max"] is None


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        BucketAggregator(width_s=0)
    with pytest.raises(ValueError):
        BucketAggregator(allowed_lateness_s=-1)
    agg = BucketAggregator()
    with pytest.raises(ValueError):
        agg.add([A], EventColumns.from_events([]))


def test_watermark_is_the_slowest_active_partition() -> None:
    agg = BucketAggregator(width_s=60, allowed_lateness_s=0)
    assert agg.add([A], EventColumns.from_events([ev(T0 + 500)]), src(1)) == 0
    assert agg.add([B], EventColumns.from_events([ev(T0 + 5, B)]), src(2)) == 0  # behind, not late
    assert agg.watermark == T0 + 5
    assert agg.close_ready() == []
    agg.mark_idle(2)  # partition 2 is caught up: the fast one decides
    assert agg.watermark == T0 + 500
    assert {b.key for b in agg.close_ready()} == {B}
    agg.add([B], EventColumns.from_events([ev(T0 + 520, B)]), src(2))  # active again
    assert agg.watermark == T0 + 500
    agg.forget_partition(1)
    assert agg.watermark == T0 + 520


def test_an_assigned_partition_holds_the_watermark_until_it_delivers_or_idles() -> None:
    agg = BucketAggregator(width_s=60, allowed_lateness_s=0)
    agg.assign_partition(1)
    agg.assign_partition(2)
    agg.add([A], EventColumns.from_events([ev(T0 + 500)]), src(1))
    assert agg.watermark == -math.inf and agg.close_ready() == []
    assert (
        agg.add([B], EventColumns.from_events([ev(T0 + 5, B)]), src(2)) == 0
    )  # its backlog is not late
    agg.mark_idle(2)
    assert agg.watermark == T0 + 500


def test_holdback_is_the_first_offset_feeding_an_open_bucket() -> None:
    agg = BucketAggregator(width_s=60, allowed_lateness_s=0)
    agg.add([A], EventColumns.from_events([ev(T0 + 1)]), src(0, 10))
    agg.add([B], EventColumns.from_events([ev(T0 + 2, B)]), src(1, 7))
    agg.add([A], EventColumns.from_events([ev(T0 + 3)]), src(0, 11))
    assert agg.holdback() == {0: 10, 1: 7}
    agg.add([A], EventColumns.from_events([ev(T0 + 61)]), src(0, 12))
    agg.add([B], EventColumns.from_events([ev(T0 + 62, B)]), src(1, 8))
    assert {b.start for b in agg.close_ready()} == {T0}
    assert agg.holdback() == {0: 12, 1: 8}  # the closed minute no longer holds anything back


def test_replayed_rows_rebuild_open_buckets_but_are_not_counted_twice() -> None:
    agg = BucketAggregator(width_s=60, allowed_lateness_s=0)
    agg.restore_closed_until(T0 + 60)  # minute T0 was written before the restart
    assert agg.add([A], EventColumns.from_events([ev(T0 + 5)]), src(0, 1, replayed=True)) == 0
    assert agg.add([A], EventColumns.from_events([ev(T0 + 70)]), src(0, 2, replayed=True)) == 0
    assert agg.add([A], EventColumns.from_events([ev(T0 + 6)]), src(0, 3)) == 1  # new: late
    assert agg.replayed_dropped == 1
    closed = by_slot(agg.close_all())
    assert closed[(A, T0 + 60, False)].stats.count == 1 and closed[(A, T0, True)].stats.count == 1


def test_partials_of_several_partitions_merge_to_the_same_statistics() -> None:
    rng = np.random.default_rng(7)
    events = [ev(T0 + i * 0.5, cost_usd=float(rng.lognormal(-4, 1)), latency_ms=float(i),
                 loop_depth=i % 7, scores={"groundedness": float(rng.uniform())})
              for i in range(100)]  # fmt: skip
    cols, keys = EventColumns.from_events(events), [A] * len(events)
    one, many = BucketAggregator(60, 0), BucketAggregator(60, 0)
    one.add(keys, cols)
    parts = rng.integers(0, 3, len(events))
    many.add(keys, cols, RowSources(parts, np.arange(len(events)), np.zeros(len(events), bool)))
    (a,), (b,) = one.close_all(), many.close_all()
    expected = a.stats.summary()
    got = b.stats.summary()
    assert got == {k: pytest.approx(v, rel=1e-12) if isinstance(v, float | dict) else v
                   for k, v in expected.items()}  # fmt: skip


def test_drop_partition_takes_its_share_of_the_open_buckets_only() -> None:
    agg = BucketAggregator(width_s=60, allowed_lateness_s=0)
    agg.add([A], EventColumns.from_events([ev(T0 + 1)]), src(0, 10))
    agg.add([A], EventColumns.from_events([ev(T0 + 2)]), src(1, 20))
    agg.add([B], EventColumns.from_events([ev(T0 + 3, B)]), src(1, 21))
    agg.drop_partition(1)
    assert agg.holdback() == {0: 10} and agg.open_buckets == 1
    (only,) = agg.close_all()
    assert (only.key, only.stats.count) == (A, 1)
