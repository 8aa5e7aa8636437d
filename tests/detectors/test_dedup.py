"""The bounded window of recent event ids."""

from __future__ import annotations

from tracewatch.detectors.dedup import RecentIds


def test_repeats_within_and_across_batches() -> None:
    ids = RecentIds(capacity=100)
    assert ids.repeats(["a", "b", "a", "c"]) == [2]
    assert ids.repeats(["c", "d", "b"]) == [0, 2]
    assert len(ids) == 4


def test_the_window_forgets_the_oldest_ids() -> None:
    ids = RecentIds(capacity=3)
    assert ids.repeats(["a", "b", "c", "d"]) == []
    assert len(ids) == 3
    assert ids.repeats(["a"]) == []  # "a" was the oldest: forgotten
    assert ids.seen("d") and not ids.seen("b")


def test_a_zero_window_remembers_nothing() -> None:
    ids = RecentIds(capacity=0)
    assert ids.repeats(["a", "a"]) == [] and len(ids) == 0


def test_forget_drops_exactly_the_ids_of_the_given_partitions() -> None:
    ids = RecentIds(capacity=100)
    assert ids.repeats(["a", "b", "c", "d"], [0, 1, 2, 1]) == []
    assert ids.forget({1}) == 2 and len(ids) == 2
    assert ids.repeats(["a", "b", "c", "d"], [0, 1, 2, 1]) == [0, 2]  # b, d: new again
    assert ids.forget(set()) == 0


def test_each_partition_has_its_own_window() -> None:
    """Issue 16: one busy partition must not push another partition's ids out."""
    ids = RecentIds(capacity=3)
    assert ids.repeats(["a"], [0]) == []
    assert ids.repeats([f"busy-{i}" for i in range(100)], [1] * 100) == []
    assert ids.repeats(["a"], [0]) == [0] and len(ids) == 4
    assert ids.repeats(["a"], [1]) == []  # asked of another partition: not its window


def test_ids_older_than_the_window_of_event_time_are_forgotten() -> None:
    ids = RecentIds(capacity=1000, window_s=300)
    assert ids.repeats(["old", "mid"], [0, 0], [1000.0, 1200.0]) == []
    assert ids.repeats(["new"], [0], [1301.0]) == []  # "old" is now 301 s behind
    assert ids.repeats(["old", "mid", "x"], [0, 0, 1], [1302.0, 1302.0, 0.0]) == [1]
    assert len(ids) == 4  # mid, new, old again (at 1302), and x in partition 1
