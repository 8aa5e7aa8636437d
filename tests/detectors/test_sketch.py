"""QuantileSketch: the relative-error bound, exact merging, serialisation, validation."""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest

from tracewatch.detectors.sketch import QuantileSketch

QS = [0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0]
SIZES = [1, 2, 10, 1000, 100_000]
SEEDS = [0, 1, 2]

Draw = Callable[[np.random.Generator, int], np.ndarray]

DISTRIBUTIONS: dict[str, Draw] = {
    "lognormal_1.5": lambda rng, n: rng.lognormal(0.0, 1.5, n),
    "lognormal_2.5": lambda rng, n: rng.lognormal(-2.0, 2.5, n),
    # classic Pareto (x_m = 1 cent), heavy tail as in per-call spend
    "pareto": lambda rng, n: (rng.pareto(1.2, n) + 1.0) * 0.01,
    "exponential": lambda rng, n: rng.exponential(250.0, n),
    "many_zeros": lambda rng, n: np.where(rng.random(n) < 0.7, 0.0, rng.lognormal(-3, 1, n)),
    "loop_depths": lambda rng, n: rng.integers(0, 41, n).astype(np.float64),
    "constant": lambda rng, n: np.full(n, 0.0375),
}


def assert_within_bound(
    sketch: QuantileSketch, values: np.ndarray, qs: list[float], alpha: float
) -> None:
    """|estimate - numpy lower quantile| <= alpha * truth (plus float rounding slack)."""
    truth = np.quantile(values, qs, method="lower")
    estimates = sketch.quantiles(qs)
    for q, expected, got in zip(qs, truth, estimates, strict=True):
        assert got is not None
        assert abs(got - expected) <= alpha * expected * (1 + 1e-9), (q, got, expected)


def fill(values: np.ndarray, **kwargs: float) -> QuantileSketch:
    sketch = QuantileSketch(**kwargs)  # type: ignore[arg-type]
    sketch.add(values)
    return sketch


# -- accuracy ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_quantiles_within_relative_bound(name: str, size: int, seed: int) -> None:
    values = DISTRIBUTIONS[name](np.random.default_rng(seed), size)
    sketch = fill(values)
    assert not sketch.collapsed
    assert_within_bound(sketch, values, QS, 0.01)
    for q in (0.0, 0.5, 1.0):  # the scalar entry point agrees with the vector one
        assert sketch.quantile(q) == sketch.quantiles([q])[0]


@pytest.mark.parametrize("alpha", [0.001, 0.05, 0.2])
def test_bound_scales_with_relative_accuracy(alpha: float) -> None:
    values = np.random.default_rng(7).lognormal(0.0, 2.0, 20_000)
    sketch = fill(values, relative_accuracy=alpha, max_bins=20_000)  # 0.1 % needs ~8 300
    assert not sketch.collapsed
    qs = [float(q) for q in np.linspace(0.0, 1.0, 101)]
    assert_within_bound(sketch, values, qs, alpha)


def test_bucket_values_follow_ddsketch_logarithmic_mapping() -> None:
    alpha = 0.02
    gamma = (1 + alpha) / (1 - alpha)
    rng = np.random.default_rng(3)
    for x in rng.lognormal(0.0, 3.0, 200):
        sketch = fill(np.array([1e-6, x, 1e9]), relative_accuracy=alpha)
        key = math.ceil(math.log(x) / math.log(gamma))
        assert sketch.quantile(0.5) == pytest.approx(2 * gamma**key / (gamma + 1), rel=1e-12)


def test_answers_are_clamped_to_exact_min_and_max() -> None:
    rng = np.random.default_rng(8)
    for x in rng.lognormal(0.0, 2.0, 50):
        single = fill(np.array([x, x, x]))
        assert single.quantiles([0.0, 0.5, 1.0]) == [x, x, x]
    values = rng.lognormal(0.0, 2.0, 1000)
    sketch = fill(values)
    low, high = sketch.quantiles([0.0, 1.0])
    assert low is not None and high is not None
    assert values.min() <= low and high <= values.max()


def test_add_one_grows_the_store_one_bucket_at_a_time() -> None:
    gamma = 1.01 / 0.99
    steps = gamma ** np.arange(0.5, 300.5)  # one value per consecutive bucket
    for values in (steps, steps[::-1], np.concatenate([steps[150:], steps[:150][::-1]])):
        single = QuantileSketch()
        for v in values.tolist():
            single.add_one(v)
        assert single == fill(values)
        assert_within_bound(single, values, QS, 0.01)


def test_values_below_min_value_answer_zero() -> None:
    values = np.array([0.0, 1e-12, 5e-10, 2.0, 3.0])
    sketch = fill(values)
    assert sketch.quantiles([0.0, 0.25, 0.5]) == [0.0, 0.0, 0.0]
    assert sketch.quantile(0.75) == pytest.approx(2.0, rel=0.01)


# -- merging ----------------------------------------------------------------------------


def split(values: np.ndarray, parts: int, rng: np.random.Generator) -> list[np.ndarray]:
    cuts = np.sort(rng.choice(np.arange(1, values.size), parts - 1, replace=False))
    return np.split(values, cuts)


@pytest.mark.parametrize("max_bins", [4096, 64])
@pytest.mark.parametrize("name", ["lognormal_2.5", "many_zeros", "pareto"])
def test_merge_equals_single_sketch_in_any_order(name: str, max_bins: int) -> None:
    rng = np.random.default_rng(11)
    values = DISTRIBUTIONS[name](rng, 30_000)
    whole = fill(values, max_bins=max_bins)
    parts = [fill(part, max_bins=max_bins) for part in split(values, 8, rng)]

    forward = QuantileSketch(max_bins=max_bins)
    for part in parts:
        forward.merge(part)
    backward = parts[-1].copy()
    for part in reversed(parts[:-1]):
        backward.merge(part)
    pairs = [parts[i].copy() for i in rng.permutation(len(parts))]
    while len(pairs) > 1:  # tree merge in shuffled order
        pairs[0].merge(pairs.pop())
        pairs.append(pairs.pop(0))
    tree = pairs[0]

    for merged in (forward, backward, tree):
        assert merged == whole
        assert merged.quantiles(QS) == whole.quantiles(QS)
        assert (merged.count, merged.sum, merged.min, merged.max) == (
            whole.count,
            whole.sum,
            whole.min,
            whole.max,
        )


def test_merge_with_empty_and_with_itself() -> None:
    values = np.random.default_rng(5).exponential(3.0, 500)
    sketch = fill(values)
    before = sketch.copy()
    sketch.merge(QuantileSketch())
    assert sketch == before
    empty = QuantileSketch()
    empty.merge(sketch)
    assert empty == sketch
    sketch.merge(sketch)
    assert sketch == fill(np.concatenate([values, values]))


def test_merging_a_collapsed_sketch_keeps_it_collapsed() -> None:
    values = 10.0 ** np.random.default_rng(6).uniform(-6, 6, 1000)
    collapsed = fill(values, max_bins=32)
    assert collapsed.collapsed
    target = QuantileSketch(max_bins=32)
    target.merge(collapsed)
    assert target.collapsed
    assert target == collapsed


def test_merge_rejects_incompatible_sketches() -> None:
    base = fill(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="relative_accuracy"):
        base.merge(fill(np.array([1.0]), relative_accuracy=0.02))
    with pytest.raises(ValueError, match="min_value"):
        base.merge(fill(np.array([1.0]), min_value=1e-6))
    assert base == fill(np.array([1.0, 2.0]))


# -- batch versus single values ---------------------------------------------------------


def test_batch_add_equals_repeated_add_one() -> None:
    rng = np.random.default_rng(9)
    values = np.concatenate(
        [
            rng.lognormal(0.0, 2.5, 1500),
            rng.integers(0, 41, 300).astype(np.float64),
            [0.0, -0.0, 5e-324, 1e-300, 1e-9, 1e300],
        ]
    )
    rng.shuffle(values)
    batch = fill(values)
    single = QuantileSketch()
    for v in values.tolist():
        single.add_one(v)
    assert single == batch
    assert single.quantiles(QS) == batch.quantiles(QS)


def test_batch_add_is_independent_of_batch_boundaries() -> None:
    rng = np.random.default_rng(12)
    values = rng.lognormal(0.0, 2.0, 50_000)
    pieces = QuantileSketch()
    for part in split(values, 13, rng):
        pieces.add(part)
    assert pieces == fill(values)


# -- exact aggregates and the empty sketch ----------------------------------------------


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_count_sum_min_max_are_exact(name: str) -> None:
    values = DISTRIBUTIONS[name](np.random.default_rng(4), 10_000)
    sketch = QuantileSketch()
    half = values.size // 2
    sketch.add(values[:half])
    sketch.merge(fill(values[half:]))
    assert sketch.count == len(sketch) == values.size
    assert sketch.sum == math.fsum(values.tolist())  # correctly rounded exact sum
    assert sketch.min == values.min()
    assert sketch.max == values.max()


def test_sum_is_exact_where_float_summation_is_not() -> None:
    values = [1e16, 1.0, -0.0, 1.0] * 3
    sketch = QuantileSketch()
    sketch.add(values)
    assert sketch.sum == math.fsum(values)
    assert sketch.sum != sum(values)
    # subnormals and the smallest normals (their own exponent classes in the IEEE bits)
    tiny = [5e-324, 1e-310, 2.2250738585072014e-308, 3e-308]
    for v in tiny:
        sketch.add_one(v)
    assert fill(np.array(tiny)).sum == math.fsum(tiny)
    assert sketch.sum == math.fsum(values + tiny)


def test_empty_sketch() -> None:
    sketch = QuantileSketch()
    sketch.add([])
    assert sketch.quantile(0.5) is None
    assert sketch.quantiles([0.0, 1.0]) == [None, None]
    assert (sketch.count, len(sketch), sketch.sum) == (0, 0, 0.0)
    assert (sketch.min, sketch.max) == (None, None)
    assert sketch == QuantileSketch()


def test_copy_is_independent() -> None:
    sketch = fill(np.array([1.0, 2.0, 3.0]))
    clone = sketch.copy()
    assert clone == sketch
    clone.add_one(100.0)
    assert clone != sketch
    assert sketch.max == 3.0
    assert sketch != "not a sketch"


# -- invalid input ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1.0, -1e-300, math.nan, math.inf, -math.inf])
def test_rejects_negative_nan_and_inf(bad: float) -> None:
    sketch = fill(np.array([1.0, 2.0]))
    before = sketch.copy()
    with pytest.raises(ValueError, match="finite and non-negative"):
        sketch.add([3.0, bad, 4.0])
    with pytest.raises(ValueError, match="finite and non-negative"):
        sketch.add_one(bad)
    assert sketch == before  # a rejected batch leaves no trace


@pytest.mark.parametrize("q", [-0.01, 1.01, math.nan, math.inf])
def test_rejects_quantile_outside_unit_interval(q: float) -> None:
    sketch = fill(np.array([1.0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sketch.quantile(q)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sketch.quantiles([0.5, q])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        QuantileSketch().quantile(q)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"relative_accuracy": 0.0},
        {"relative_accuracy": 1.0},
        {"min_value": 0.0},
        {"min_value": math.inf},
        {"max_bins": 0},
    ],
)
def test_rejects_invalid_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        QuantileSketch(**kwargs)  # type: ignore[arg-type]


def test_parameters_are_stored_under_their_own_names() -> None:
    sketch = QuantileSketch(relative_accuracy=0.02, min_value=1e-6, max_bins=100)
    clone = QuantileSketch(sketch.relative_accuracy, sketch.min_value, sketch.max_bins)
    assert (clone.relative_accuracy, clone.min_value, clone.max_bins) == (0.02, 1e-6, 100)


# -- serialisation ----------------------------------------------------------------------


ROUND_TRIP_CASES: dict[str, np.ndarray] = {
    "empty": np.array([]),
    "single": np.array([42.0]),
    "zeros": np.zeros(5),
    "lognormal": np.random.default_rng(1).lognormal(0.0, 2.0, 50_000),
    "wide": 10.0 ** np.random.default_rng(2).uniform(-9, 15, 20_000),
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIP_CASES))
def test_bytes_round_trip(name: str) -> None:
    sketch = fill(ROUND_TRIP_CASES[name], max_bins=512)
    data = sketch.to_bytes()
    restored = QuantileSketch.from_bytes(data)
    assert restored == sketch
    assert restored.quantiles(QS) == sketch.quantiles(QS)
    assert (restored.sum, restored.collapsed) == (sketch.sum, sketch.collapsed)
    assert restored.to_bytes() == data
    restored.add_one(1.0)  # the decoded store is writable
    assert restored.count == sketch.count + 1


def test_encoding_is_compact() -> None:
    sketch = fill(np.random.default_rng(1).lognormal(0.0, 2.0, 100_000))
    buckets = int(np.count_nonzero(sketch._counts))
    assert len(sketch.to_bytes()) < 4 * buckets  # well under 8 bytes per bucket


def test_from_bytes_rejects_every_corruption() -> None:
    data = fill(np.random.default_rng(3).lognormal(0.0, 1.0, 200)).to_bytes()
    corrupt = [b"", bytes([99]) + data[1:], data[:-1], data[:20], data + b"\0"]
    corrupt += [data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1 :] for i in range(len(data))]
    for blob in corrupt:
        with pytest.raises(ValueError):
            QuantileSketch.from_bytes(blob)


def test_from_bytes_rejects_inconsistent_state_with_valid_checksum() -> None:
    data = fill(np.array([1.0, 2.0, 3.0])).to_bytes()
    body = bytearray(data[:-4])
    count_at = struct.calcsize("<BBddq")
    (count,) = struct.unpack_from("<q", body, count_at)
    struct.pack_into("<q", body, count_at, count + 1)
    forged = bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
    with pytest.raises(ValueError, match="inconsistent"):
        QuantileSketch.from_bytes(forged)


# -- bounded memory ---------------------------------------------------------------------


def test_max_bins_bounds_memory_and_keeps_upper_quantiles_accurate() -> None:
    alpha, max_bins = 0.01, 256
    rng = np.random.default_rng(21)
    values = 10.0 ** rng.uniform(-9, 12, 100_000)
    later = 10.0 ** rng.uniform(13, 14, 1000)  # merged in last: raises the floor again
    sketch = QuantileSketch(relative_accuracy=alpha, max_bins=max_bins)
    for part in split(values, 50, rng):  # many batches: the store grows, then collapses
        sketch.add(part)
        assert len(sketch._counts) <= max_bins
    sketch.merge(fill(later, max_bins=max_bins))
    assert len(sketch._counts) <= max_bins
    assert sketch.collapsed

    # The collapse threshold, recomputed independently of the implementation.
    everything = np.concatenate([values, later])
    gamma = (1 + alpha) / (1 - alpha)
    lowest_kept = math.ceil(math.log(everything.max()) / math.log(gamma)) - max_bins + 1
    threshold = gamma**lowest_kept  # values at or below it may have been collapsed
    qs = [float(q) for q in np.linspace(0.0, 1.0, 201)]
    truth = np.quantile(everything, qs, method="lower")
    above = [q for q, t in zip(qs, truth, strict=True) if t > threshold * (1 + 1e-9)]
    assert 0 < len(above) < len(qs)  # the data straddle the collapsed range
    assert_within_bound(sketch, everything, above, alpha)
    # Below the threshold answers are overestimated, but never past the kept bucket.
    lowest = sketch.quantile(0.0)
    assert lowest is not None
    assert everything.min() <= lowest <= threshold
    assert sketch.count == everything.size
