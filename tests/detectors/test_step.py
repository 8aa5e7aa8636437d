"""StepDetector: abrupt steps judged by their evidence, gradual change left alone."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tracewatch.detectors.step import StepDetector

T0 = 1_795_341_600.0


def feed(
    detector: StepDetector,
    level: list[float],
    counts: list[int] | int = 180,
    sigma: float = 0.6,
    seed: int = 0,
    linear: bool = False,
) -> list[bool]:
    """Minute statistics scattering by ``sigma / sqrt(n)`` around ``level``; breaches."""
    rng = np.random.default_rng(seed)
    n = counts if isinstance(counts, list) else [counts] * len(level)
    out = []
    for i, (mean, count) in enumerate(zip(level, n, strict=True)):
        noise = sigma / math.sqrt(count) * float(rng.standard_normal())
        value = mean + noise if linear else mean * math.exp(noise)
        detector.update(T0 + 60.0 * i, value, count)
        out.append(detector.breached)
    return out


def first_breach(breaches: list[bool]) -> int | None:
    return next((i for i, b in enumerate(breaches) if b), None)


def test_a_30_percent_step_on_a_busy_key_is_seen_within_minutes() -> None:
    detector = StepDetector()
    level = [1000.0] * 100 + [1300.0] * 40
    at = first_breach(feed(detector, level))
    assert at is not None and 100 <= at <= 108
    assert detector.change_ts is not None


def test_the_change_point_estimate_is_near_the_step() -> None:
    detector = StepDetector()
    feed(detector, [1000.0] * 100 + [1500.0] * 3)
    assert detector.breached
    assert detector.change_ts == pytest.approx(T0 + 60.0 * 100, abs=120.0)
    assert detector.effect == pytest.approx(1.5, rel=0.1)
    assert detector.window_value is not None and detector.baseline_value is not None
    assert detector.threshold == pytest.approx(detector.baseline_value * 1.15)


def test_the_bar_falls_as_evidence_grows() -> None:
    level = [1000.0] * 100 + [1200.0] * 20
    busy = [first_breach(feed(StepDetector(), level, 1200, seed=s)) for s in range(5)]
    quiet = [first_breach(feed(StepDetector(), level, 20, seed=s)) for s in range(5)]
    assert all(at is not None for at in busy)
    assert all(at is None for at in quiet)


def test_a_step_below_the_practical_minimum_is_not_reported() -> None:
    # 10 % on 5 000 calls a minute is significant, and still not worth a page
    level = [1000.0] * 100 + [1100.0] * 30
    assert not any(feed(StepDetector(), level, 5000))


def test_slow_drift_and_a_daily_swing_never_breach() -> None:
    drift = [1000.0 * (1 + 0.3 * i / 240) for i in range(480)]
    day = [1000.0 * (1 + 0.5 * math.sin(2 * math.pi * i / 1440)) for i in range(1440)]
    for seed in range(3):
        assert not any(feed(StepDetector(), drift, 180, seed=seed))
        assert not any(feed(StepDetector(), day, 180, seed=seed))


def test_traffic_that_doubles_and_halves_does_not_breach() -> None:
    counts = [180] * 60 + [360] * 60 + [90] * 60 + [180] * 60
    for seed in range(3):
        assert not any(feed(StepDetector(), [1000.0] * 240, counts, seed=seed))


def test_one_absurd_minute_is_not_a_step() -> None:
    detector = StepDetector()
    feed(detector, [1000.0] * 60)
    detector.update(T0 + 60.0 * 60, 50_000.0, 180)  # a timeout as a minute's p95
    assert not detector.breached
    detector.update(T0 + 60.0 * 61, 1000.0, 180)
    assert not detector.breached


def test_a_score_drop_of_005_is_seen_and_a_rise_is_not() -> None:
    def score_detector() -> StepDetector:
        return StepDetector(direction="down", scale="linear", min_effect=0.03)

    drop = feed(score_detector(), [0.85] * 100 + [0.80] * 20, 90, 0.11, linear=True)
    at = first_breach(drop)
    assert at is not None and 100 <= at <= 110
    assert not any(feed(score_detector(), [0.80] * 100 + [0.9] * 60, 90, 0.11, linear=True))


def test_minutes_without_evidence_are_skipped() -> None:
    detector = StepDetector()
    detector.update(T0, 1000.0, 3)  # under min_count
    detector.update(T0 + 60, None, 100)
    detector.update(T0 + 120, -1.0, 100)  # not a log-scale value
    assert detector.last_ts == -math.inf
    detector.update(T0 + 180, 1000.0, 100)
    detector.update(T0 + 120, 1000.0, 100)  # not after the last one
    assert detector.last_ts == T0 + 180


@pytest.mark.parametrize(
    "kwargs",
    [
        {"direction": "both"},
        {"scale": "sqrt"},
        {"min_effect": 0.0},
        {"min_window_minutes": 9},
        {"min_baseline_points": 40},
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        StepDetector(**kwargs)  # type: ignore[arg-type]
