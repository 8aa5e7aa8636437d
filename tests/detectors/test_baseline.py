"""BaselineDetector and RateDetector on synthetic per-minute series.

Series are generated with numpy (fixed seeds) at the scales tracewatch sees:
costs of ~$0.0002 and ~$0.2 per call, latencies of ~400 ms and ~3 000 ms. Every
test asserts something the detector could get wrong.
"""

from __future__ import annotations

import numpy as np
import pytest

from tracewatch.detectors.baseline import BaselineDetector, RateDetector

T0 = 1_795_341_600.0  # a minute boundary
DAY = 24 * 60
SEEDS = [0, 1, 2]
SCALES = [2e-4, 2e-1, 400.0, 3000.0]


def feed(det: BaselineDetector, values: np.ndarray, weights: np.ndarray | int = 100) -> np.ndarray:
    """One update per minute; the ``breached`` flag after each."""
    w = np.broadcast_to(np.asarray(weights), values.shape)
    out = np.zeros(len(values), dtype=bool)
    for i, (value, weight) in enumerate(zip(values.tolist(), w.tolist(), strict=True)):
        det.update(T0 + 60.0 * i, value, weight)
        out[i] = det.breached
    return out


def feed_rate(det: RateDetector, errors: np.ndarray, count: int) -> np.ndarray:
    out = np.zeros(len(errors), dtype=bool)
    for i, e in enumerate(errors.tolist()):
        det.update(T0 + 60.0 * i, e, count)
        out[i] = det.breached
    return out


def lognormal(seed: int, n: int, scale: float, sigma: float = 0.3) -> np.ndarray:
    """Per-minute statistic: ``scale`` times lognormal noise."""
    return scale * np.exp(sigma * np.random.default_rng(seed).standard_normal(n))


def first_breach_delay(breached: np.ndarray, change: int) -> int | None:
    """Minutes fed from the change (inclusive) until the first breach."""
    hits = np.flatnonzero(breached[change:])
    return int(hits[0]) + 1 if hits.size else None


# --- BaselineDetector: detection ----------------------------------------------------------


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seed", SEEDS)
def test_step_up_3x_detected_within_window_plus_one(seed: int, scale: float) -> None:
    change = 90
    values = lognormal(seed, change + 30, scale, sigma=0.2)
    values[change:] *= 3.0
    det = BaselineDetector()
    breached = feed(det, values)
    assert not breached[:change].any()
    delay = first_breach_delay(breached, change)
    assert delay is not None and delay <= det.window_minutes + 1
    assert det.ratio is not None and det.ratio > 2.0


@pytest.mark.parametrize("seed", SEEDS)
def test_score_mean_drop_detected_with_direction_down(seed: int) -> None:
    rng = np.random.default_rng(seed)
    change = 90
    scores = np.r_[0.85 + 0.02 * rng.standard_normal(change), 0.6 + 0.02 * rng.standard_normal(20)]
    # Scores live in [0, 1]: 0.85 -> 0.6 is a factor 1.42, so a bounded metric gets 1.25.
    down = feed(BaselineDetector(direction="down", min_ratio=1.25), scores)
    assert not down[:change].any()
    delay = first_breach_delay(down, change)
    assert delay is not None and delay <= 6
    assert not feed(BaselineDetector(direction="up", min_ratio=1.25), scores).any()
    assert feed(BaselineDetector(direction="both", min_ratio=1.25), scores)[change:].any()


def test_direction_up_ignores_drops_and_both_sees_both() -> None:
    values = lognormal(3, 120, 400.0, sigma=0.1)
    values[90:] /= 3.0
    assert not feed(BaselineDetector(direction="up"), values).any()
    assert feed(BaselineDetector(direction="both"), values)[90:].any()


# --- BaselineDetector: no false alarms ----------------------------------------------------


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seed", SEEDS)
def test_lognormal_noise_over_a_day_never_breaches(seed: int, scale: float) -> None:
    assert not feed(BaselineDetector(), lognormal(seed, DAY, scale)).any()


@pytest.mark.parametrize("scale", [2e-4, 3000.0])
@pytest.mark.parametrize("seed", SEEDS)
def test_diurnal_swing_of_40_percent_never_breaches(seed: int, scale: float) -> None:
    t = np.arange(DAY)
    diurnal = 1.0 + 0.4 * np.sin(2 * np.pi * t / DAY)
    traffic = (200 * diurnal).astype(int)  # traffic swings too
    values = lognormal(seed, DAY, scale) * diurnal
    assert not feed(BaselineDetector(direction="both"), values, traffic).any()


@pytest.mark.parametrize("scale", [2e-1, 400.0])
@pytest.mark.parametrize("seed", SEEDS)
def test_slow_drift_of_30_percent_a_day_never_breaches(seed: int, scale: float) -> None:
    values = lognormal(seed, DAY, scale) * (1.0 + 0.3 * np.arange(DAY) / DAY)
    assert not feed(BaselineDetector(), values).any()


# --- BaselineDetector: guards --------------------------------------------------------------


def test_minutes_below_min_count_are_ignored() -> None:
    base = lognormal(4, 80, 2e-4, sigma=0.1)
    spike = np.full(10, 10 * 2e-4)
    values = np.r_[base, spike]
    det = BaselineDetector(min_count=5)
    quiet = feed(det, values, np.r_[np.full(80, 100), np.full(10, 4)])
    assert not quiet.any()
    assert det.window_value is not None and det.window_value < 4e-4  # spike never entered
    # control: the same spike on minutes with exactly min_count events does fire
    busy = feed(BaselineDetector(min_count=5), values, np.r_[np.full(80, 100), np.full(10, 5)])
    assert busy[80:].any()


def test_none_values_and_stale_timestamps_leave_state_untouched() -> None:
    det = BaselineDetector()
    feed(det, lognormal(5, 60, 1.0, sigma=0.1))
    before = (det.window_value, det.baseline_value, det.ratio, det.breached)
    det.update(T0 + 60.0 * 60, None, 100)
    det.update(T0, 100.0, 100)  # older than the last minute: a replayed partial
    det.update(T0 + 60.0 * 59, 100.0, 100)  # same minute again
    assert (det.window_value, det.baseline_value, det.ratio, det.breached) == before


def test_no_breach_until_min_baseline_points() -> None:
    # 17 flat minutes then a 10x level: the window is 10x from the 3rd minute on,
    # but the baseline (points before the window) reaches 20 values only at point 25.
    values = np.r_[np.ones(17), np.full(10, 10.0)]
    breached = feed(BaselineDetector(min_baseline_points=20), values)
    assert np.flatnonzero(breached)[0] == 24
    assert not feed(BaselineDetector(min_baseline_points=20), values[:24]).any()


def test_flat_baseline_uses_scale_floor() -> None:
    # MAD is 0 on a flat baseline; the floor (5 % of the median) stops wiggles firing.
    wiggle = feed(BaselineDetector(min_ratio=1.0), np.r_[np.ones(60), np.full(5, 1.1)])
    assert not wiggle.any()  # z = 0.1 / 0.05 = 2 < 4
    jump = feed(BaselineDetector(min_ratio=1.0), np.r_[np.ones(60), np.full(5, 1.3)])
    assert jump[-1]  # z = 6


def test_requires_both_ratio_and_z() -> None:
    rng = np.random.default_rng(6)
    noisy = np.r_[np.exp(1.0 * rng.standard_normal(60)), np.full(5, 2.0)]
    det = BaselineDetector()
    feed(det, noisy)
    assert det.ratio is not None and det.ratio > 1.5 and det.z is not None and det.z < 4
    assert not det.breached
    tight = np.r_[1.0 + 0.001 * rng.standard_normal(60), np.full(5, 1.2)]
    det = BaselineDetector(scale_floor_ratio=0.0)
    feed(det, tight)
    assert det.z is not None and det.z > 4 and det.ratio is not None and det.ratio < 1.5
    assert not det.breached


def test_window_is_count_weighted_median() -> None:
    det = BaselineDetector(window_minutes=3)
    feed(det, np.array([1.0, 9.0, 5.0]), np.array([10, 10, 1000]))
    assert det.window_value == 5.0
    det.update(T0 + 180.0, 7.0, 990)  # window: 9 (10), 5 (1000), 7 (990)
    assert det.window_value == 6.0  # exactly half the weight on each side


@pytest.mark.parametrize(
    "kwargs",
    [
        {"direction": "sideways"},
        {"min_ratio": 0.5},
        {"window_minutes": 0},
        {"min_baseline_points": 61},
    ],
)
def test_rejects_bad_parameters(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        BaselineDetector(**kwargs)  # type: ignore[arg-type]


# --- RateDetector ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_error_burst_1_to_8_percent_detected_within_minutes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    change = 90
    errors = np.r_[rng.binomial(200, 0.01, change), rng.binomial(200, 0.08, 20)]
    det = RateDetector()
    breached = feed_rate(det, errors, 200)
    assert not breached[:change].any()
    delay = first_breach_delay(breached, change)
    assert delay is not None and delay <= 3
    assert det.p_value is not None and det.p_value < 1e-4


@pytest.mark.parametrize("seed", SEEDS)
def test_steady_1_percent_over_a_day_never_breaches(seed: int) -> None:
    errors = np.random.default_rng(seed).binomial(50, 0.01, DAY)
    det = RateDetector()
    assert not feed_rate(det, errors, 50).any()
    assert det.baseline_value is not None and 0.0 < det.baseline_value < 0.03


def test_significant_but_small_increase_needs_min_delta() -> None:
    rng = np.random.default_rng(7)
    errors = np.r_[rng.binomial(100_000, 0.01, 60), rng.binomial(100_000, 0.015, 10)]
    det = RateDetector()
    assert not feed_rate(det, errors, 100_000).any()
    assert det.p_value is not None and det.p_value < 1e-12  # significant, yet only +0.5 pt
    assert not feed_rate(RateDetector(min_delta=0.0), errors, 100_000)[:60].any()
    assert feed_rate(RateDetector(min_delta=0.0), errors, 100_000)[60:].any()


def test_rate_needs_significance_at_low_traffic() -> None:
    # 0/50 per minute then 1 error in 6 events: +17 points, but nowhere near significant
    det = RateDetector(min_window_events=1)
    feed_rate(det, np.zeros(60, dtype=int), 50)
    det.update(T0 + 1e6, 1, 6)
    assert det.window_value is not None and det.window_value > 0.0
    assert not det.breached


def test_rate_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        RateDetector().update(T0, 5, 3)
