"""DriftDetector (ADWIN on log(value / baseline)) and LevelShiftDetector, on synthetic minutes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tracewatch.detectors.drift import DriftDetector, LevelShiftDetector, _adwin
from tracewatch.detectors.registry import clone

T0 = 1_795_341_600.0
DAY = 24 * 60
SEEDS = [0, 1, 2]
SCALES = [2e-4, 2e-1, 400.0, 3000.0]


def lognormal(seed: int, n: int, scale: float, sigma: float = 0.3) -> np.ndarray:
    return scale * np.exp(sigma * np.random.default_rng(seed).standard_normal(n))


def detections(det: DriftDetector, values: np.ndarray, baseline: float) -> list[int]:
    """Indices of the minutes on which the detector fired."""
    fired = []
    for i, value in enumerate(values.tolist()):
        det.update(T0 + 60.0 * i, value, baseline)
        if det.drift_detected:
            fired.append(i)
    return fired


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seed", SEEDS)
def test_fires_after_a_3x_level_shift(seed: int, scale: float) -> None:
    change = 240
    values = lognormal(seed, change + 60, scale)
    values[change:] *= 3.0
    det = DriftDetector()
    fired = detections(det, values, baseline=scale)
    assert fired, "a 3x shift went unnoticed"
    assert fired[0] >= change  # nothing before the shift
    assert fired[0] - change + 1 <= 30  # measured: 13-20 minutes at sigma 0.3
    assert det.last_drift_ts == T0 + 60.0 * fired[-1]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seed", SEEDS)
def test_quiet_on_a_day_of_stationary_noise(seed: int, scale: float) -> None:
    det = DriftDetector()
    assert detections(det, lognormal(seed, DAY, scale), baseline=scale) == []
    assert det.last_drift_ts is None
    assert det.level is not None and 0.9 < det.level < 1.1


def test_scale_free_same_detections_at_every_scale() -> None:
    unit = lognormal(7, 400, 1.0)
    unit[200:] *= 2.0
    runs = {scale: detections(DriftDetector(), unit * scale, baseline=scale) for scale in SCALES}
    assert runs[2e-4]  # fires at all
    assert all(fired == runs[2e-4] for fired in runs.values())


def test_raw_values_would_not_be_scale_free() -> None:
    # Why the log-ratio: the same 3x shift fed raw to the same ADWIN is invisible at $0.0002.
    values = lognormal(8, 400, 2e-4)
    values[200:] *= 3.0
    det = DriftDetector()
    adwin = _adwin(det.delta, det.clock, det.min_window_length, det.min_points)
    raw_hits = 0
    for v in values.tolist():
        adwin.update(v)
        raw_hits += adwin.drift_detected
    assert raw_hits == 0
    assert detections(det, values, baseline=2e-4)


def test_drift_flag_lasts_one_update_and_bad_inputs_are_skipped() -> None:
    values = lognormal(9, 300, 1.0)
    values[150:] *= 3.0
    det = DriftDetector()
    fired = detections(det, values[:200], baseline=1.0)
    assert fired
    bad = [(0.0, 1.0), (1.0, 0.0), (-1.0, 1.0), (None, 1.0), (math.nan, 1.0), (1.0, None)]
    for bad_value, bad_baseline in bad:
        det.update(T0 + 1e6, bad_value, bad_baseline)
        assert not det.drift_detected
    width = det._adwin.width
    det.update(T0 + 60.0, 1.0, 1.0)  # older than the last accepted minute
    assert det._adwin.width == width
    assert det.n_detections == len(fired)


def test_a_few_absurd_minutes_are_clipped() -> None:
    values = lognormal(10, 300, 1.0)
    values[150:153] = 1e9  # three absurd minutes (a unit bug upstream, say)
    assert detections(DriftDetector(), values, baseline=1.0) == []
    assert detections(DriftDetector(clip=100.0), values, baseline=1.0)  # unclipped: fires


@pytest.mark.parametrize("kwargs", [{"delta": 0.0}, {"min_points": 0}, {"clock": 0}, {"clip": 0.0}])
def test_rejects_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DriftDetector(**kwargs)  # type: ignore[arg-type]


def test_level_after_a_detection_is_the_new_level_not_a_mix_or_one_minute() -> None:
    # river's ADWIN flags a change with most of the old level still in its window,
    # then empties the window: the level must come from the minutes after the change
    values = lognormal(1, 300, 1.0)
    values[200:] *= 3.0
    det = DriftDetector()
    fired = detections(det, values[:260], baseline=1.0)
    assert fired and fired[0] >= 200
    levels = []
    for i in range(fired[0], fired[0] + 3):
        det.update(T0 + 60.0 * (1000 + i), float(values[i]), 1.0)
        levels.append(det.level)
    assert all(level is not None and 2.2 < level < 4.0 for level in levels)


# --------------------------------------------------------------------------- LevelShiftDetector


def shifts(det: LevelShiftDetector, values: np.ndarray) -> list[int]:
    """Indices of the minutes on which the detector was breached."""
    breached = []
    for i, value in enumerate(values.tolist()):
        det.update(T0 + 60.0 * i, value, 40)
        if det.breached:
            breached.append(i)
    return breached


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seed", SEEDS)
def test_level_shift_fires_on_a_step_and_stops_within_its_window(seed: int, scale: float) -> None:
    values = lognormal(seed, 300, scale)
    values[150:] *= 2.5
    det = LevelShiftDetector()
    breached = shifts(det, values)
    assert breached and 150 < breached[0] <= 180
    assert breached[-1] - breached[0] < det.within_minutes + 35  # a detection at most + window
    assert det.last_drift_ts is not None and det.reference is not None
    assert det.value == pytest.approx(det.level * det.reference)  # type: ignore[operator]


@pytest.mark.parametrize("seed", SEEDS)
def test_level_shift_ignores_a_slow_drift_of_30_percent_over_4_hours(seed: int) -> None:
    values = lognormal(seed, 240, 0.01) * np.linspace(1.0, 1.3, 240)
    assert shifts(LevelShiftDetector(), values) == []


@pytest.mark.parametrize(("direction", "fires"), [("up", False), ("down", True), ("both", True)])
def test_level_shift_direction(direction: str, fires: bool) -> None:
    values = lognormal(4, 240, 400.0)
    values[120:] /= 2.5
    breached = shifts(LevelShiftDetector(direction=direction), values)  # type: ignore[arg-type]
    assert bool(breached) is fires
    if fires:
        det = LevelShiftDetector(direction=direction)  # type: ignore[arg-type]
        shifts(det, values[: breached[0] + 1])
        assert det.level is not None and det.level <= 1 / 1.3


def test_level_shift_warms_up_and_skips_thin_or_bad_minutes() -> None:
    det = LevelShiftDetector(min_reference_points=20, exclude_minutes=5)
    for i in range(25):
        det.update(T0 + 60.0 * i, 1.0, 40)
    assert det.last_ts == -math.inf and det.reference is None  # nothing judged yet
    det.update(T0 + 60.0 * 25, 1.0, 40)
    assert det.last_ts == T0 + 60.0 * 25 and det.reference == 1.0
    for ts, value, weight in [(26, 1.0, 4), (27, 0.0, 40), (28, math.inf, 40), (25, 2.0, 40)]:
        det.update(T0 + 60.0 * ts, value, weight)
        assert det.last_ts == T0 + 60.0 * 25


def test_level_shift_clones_from_its_parameters() -> None:
    det = LevelShiftDetector(min_shift=1.5, delta=0.01, history_minutes=90, direction="up")
    shifts(det, lognormal(5, 100, 1.0))
    fresh = clone(det)
    assert fresh.history_minutes == 90 and fresh.direction == "up" and fresh.reference is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_shift": 1.0},
        {"history_minutes": 0},
        {"within_minutes": 0},
        {"min_reference_points": 61},
        {"direction": "sideways"},
        {"delta": 1.0},
    ],
)
def test_level_shift_rejects_bad_parameters(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LevelShiftDetector(**kwargs)  # type: ignore[arg-type]
