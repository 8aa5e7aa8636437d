"""Level-change detection with river's ADWIN on a scale-free signal.

Why the log-ratio ``log(value / baseline)`` and not the value itself: ADWIN's
cut test bounds the difference of two sub-window means with a term that
assumes values of order one (its range term is not scaled by the data). Fed raw
dollars, a route whose calls cost $0.0002 would never cross it (every
difference is tiny) and one at $0.20 or 3 000 ms would cross it on noise. The
log-ratio is the same number for the same *relative* change at every scale:
a 3x step is ``log 3 ~ 1.1`` whether the route costs $0.0002 or $0.2, and
lognormal noise of the minute statistics becomes additive and symmetric. One
``delta`` then fits every route, and ``clone`` can stamp the same detector
onto every key.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal, Protocol, cast

from river.drift import ADWIN

from tracewatch.detectors.baseline import _median

__all__ = ["DriftDetector", "LevelShiftDetector"]


class _Adwin(Protocol):
    """The part of river's (untyped) ADWIN used here."""

    @property
    def drift_detected(self) -> bool: ...
    @property
    def width(self) -> float: ...
    @property
    def total(self) -> float: ...
    def update(self, x: float) -> None: ...


def _adwin(delta: float, clock: int, min_window_length: int, grace_period: int) -> _Adwin:
    detector = ADWIN(  # type: ignore[no-untyped-call]  # river ships no annotations
        delta=delta,
        clock=clock,
        min_window_length=min_window_length,
        grace_period=grace_period,
    )
    return cast(_Adwin, detector)


class DriftDetector:
    """ADWIN over ``log(value / baseline)`` for ONE metric of ONE key.

    ``update(ts, value, baseline)`` once per closed minute in event-time order
    (``baseline`` is a reference level for the same metric, e.g. a
    ``BaselineDetector.baseline_value`` or a long-run route median). Then read
    ``drift_detected`` (true only for the update on which ADWIN fired),
    ``last_drift_ts`` and ``level``. Updates with a non-positive or non-finite
    value or baseline, or a ``ts`` not after the last accepted one, are skipped.

    ``level`` is the mean log-ratio *since the latest change* (exp'd back to a
    ratio): before any detection, of ADWIN's whole window; from a detection on,
    of the ``min_window_length`` minutes up to and including the detecting one
    (the smallest sub-window ADWIN can cut, so they lie after the change) and
    every minute since. Not ADWIN's own window: river's ADWIN reports a change
    with most of the old level still in it (a 3x step 13 minutes in: 182
    minutes kept, level 1.07) and empties it on the next update, so read there
    the level is the old one at the detection and one noisy minute after it.

    Parameters (stored under their own names, so the detector clones):

    - ``delta``: ADWIN's confidence; smaller means fewer false alarms, slower
      detection.
    - ``min_points``: ADWIN's grace period: no test before this many values
      (and again after each detection, as river's ADWIN restarts its window).
    - ``clock``: test every ``clock`` values. river's default of 32 is meant
      for per-event streams; at one value per minute that is up to 32 minutes
      of delay, and ADWIN costs about a microsecond per update, so 1.
    - ``min_window_length``: ADWIN's smallest sub-window: a level change must
      last at least this many minutes to be seen.
    - ``clip``: the log-ratio is clipped to ``[-clip, clip]`` (3 ~ a factor 20),
      so a few absurd minutes cannot move a mean-based test on their own.

    Measured with the defaults on lognormal minutes (sigma 0.3, 300 seeds): a
    3x shift is detected 13-20 minutes after it starts (median 16), and no day
    of stationary noise fired. It is the slow, sure signal; ``BaselineDetector``
    is the fast one.
    """

    def __init__(
        self,
        delta: float = 0.002,
        min_points: int = 30,
        clock: int = 1,
        min_window_length: int = 5,
        clip: float = 3.0,
    ) -> None:
        if not 0 < delta < 1:
            raise ValueError("delta must be in (0, 1)")
        if min_points < 1 or clock < 1 or min_window_length < 1:
            raise ValueError("min_points, clock and min_window_length must be >= 1")
        if clip <= 0:
            raise ValueError("clip must be positive")
        self.delta = delta
        self.min_points = min_points
        self.clock = clock
        self.min_window_length = min_window_length
        self.clip = clip
        self._adwin = _adwin(delta, clock, min_window_length, min_points)
        self._last_ts = -math.inf
        self._drift_detected = False
        self._last_drift_ts: float | None = None
        self._n_detections = 0
        self._recent: deque[float] = deque(maxlen=min_window_length)
        self._since_total = 0.0
        self._since_n = 0  # 0 until the first detection

    @property
    def drift_detected(self) -> bool:
        """True for the accepted update on which ADWIN detected a change."""
        return self._drift_detected

    @property
    def last_drift_ts(self) -> float | None:
        """Event time of the latest detection (None before the first)."""
        return self._last_drift_ts

    @property
    def n_detections(self) -> int:
        """Detections so far."""
        return self._n_detections

    @property
    def level(self) -> float | None:
        """The level since the latest change as a ratio to baseline (exp of the mean log-ratio)."""
        if self._since_n:
            return math.exp(self._since_total / self._since_n)
        width = self._adwin.width
        return math.exp(self._adwin.total / width) if width else None

    def update(self, ts: float, value: float | None, baseline: float | None) -> None:
        """Feed ``log(value / baseline)`` for one closed minute."""
        self._drift_detected = False
        if value is None or baseline is None or ts <= self._last_ts:
            return
        if not (value > 0 and baseline > 0 and math.isfinite(value) and math.isfinite(baseline)):
            return
        self._last_ts = ts
        signal = min(max(math.log(value / baseline), -self.clip), self.clip)
        self._recent.append(signal)
        self._adwin.update(signal)
        if self._adwin.drift_detected:
            self._drift_detected = True
            self._last_drift_ts = ts
            self._n_detections += 1
            self._since_total, self._since_n = sum(self._recent), len(self._recent)
        elif self._since_n:
            self._since_total += signal
            self._since_n += 1


ShiftDirection = Literal["up", "down", "both"]
_SHIFT_DIRECTIONS = ("up", "down", "both")


class LevelShiftDetector:
    """A sustained level shift of ONE minute statistic of ONE key: ADWIN against its own past.

    ``update(ts, value, weight)`` once per closed minute in event-time order,
    like ``BaselineDetector``; then read ``breached``, ``level``, ``reference``
    and ``value``.

    - **Reference**: the median of the up to ``history_minutes`` accepted values
      before the newest ``exclude_minutes`` (so a change does not contaminate its
      own reference at once); none until ``min_reference_points`` of them.
    - **Signal**: ``DriftDetector`` (ADWIN) on ``log(value / reference)``, each
      minute against the reference of the minutes before it. A slow drift keeps
      this ratio near ``1 + rate * lag`` (+30 % over 4 h lags a 60-minute median
      by about 35 minutes: 1.04), far from any ``min_shift`` worth an alert.
    - **Breach**: ADWIN detected a change within the last ``within_minutes`` of
      event time AND ``level`` (the ratio since that change, see
      ``DriftDetector.level``) moved by at least ``min_shift`` (up) or
      ``1 / min_shift`` (down), in ``direction``. A step fires once ADWIN sees
      it and stops when the detection is ``within_minutes`` old or the level is
      back (the reference takes in the new level after about half its history;
      a later detection of the way back starts a level near 1).
    - **Skipped minutes**: ``value`` missing, non-positive or not finite,
      ``weight < min_count``, or ``ts`` not after the last accepted one.

    ``delta``, ``min_points`` and ``clip`` are ``DriftDetector``'s. Bounded:
    ``exclude_minutes + history_minutes`` values and one ADWIN.
    """

    def __init__(
        self,
        min_shift: float = 1.3,
        delta: float = 0.01,
        history_minutes: int = 60,
        within_minutes: int = 30,
        direction: ShiftDirection = "both",
        exclude_minutes: int = 5,
        min_reference_points: int = 20,
        min_count: int = 5,
        min_points: int = 30,
        clip: float = 3.0,
    ) -> None:
        if not min_shift > 1.0:
            raise ValueError("min_shift must be > 1 (it applies as 1/min_shift downwards)")
        if history_minutes < 1 or within_minutes < 1 or exclude_minutes < 0:
            raise ValueError("history_minutes and within_minutes must be >= 1, exclude >= 0")
        if not 1 <= min_reference_points <= history_minutes:
            raise ValueError("min_reference_points must be in [1, history_minutes]")
        if direction not in _SHIFT_DIRECTIONS:
            raise ValueError(f"direction must be one of {_SHIFT_DIRECTIONS}, got {direction!r}")
        self.min_shift = min_shift
        self.delta = delta
        self.history_minutes = history_minutes
        self.within_minutes = within_minutes
        self.direction: ShiftDirection = direction
        self.exclude_minutes = exclude_minutes
        self.min_reference_points = min_reference_points
        self.min_count = min_count
        self.min_points = min_points
        self.clip = clip
        self._drift = DriftDetector(delta=delta, min_points=min_points, clip=clip)
        self._values: deque[float] = deque(maxlen=exclude_minutes + history_minutes)
        self._last_ts = -math.inf
        self._last_accepted = -math.inf
        self._reference: float | None = None
        self._breached = False

    @property
    def last_ts(self) -> float:
        """Event time of the last judged minute (-inf before the first)."""
        return self._last_ts

    @property
    def breached(self) -> bool:
        """Whether a recent change left the level at least ``min_shift`` away."""
        return self._breached

    @property
    def reference(self) -> float | None:
        """The reference level the last judged minute was compared with."""
        return self._reference

    @property
    def level(self) -> float | None:
        """The level since the latest change, as a ratio to the reference."""
        return self._drift.level

    @property
    def value(self) -> float | None:
        """``level`` in the statistic's own unit (``level * reference``)."""
        level = self.level
        return None if level is None or self._reference is None else level * self._reference

    @property
    def last_drift_ts(self) -> float | None:
        """Event time of ADWIN's latest detection (None before the first)."""
        return self._drift.last_drift_ts

    def update(self, ts: float, value: float | None, weight: int = 1) -> None:
        """Fold in one closed minute's statistic and its event count."""
        if value is None or weight < self.min_count or ts <= self._last_accepted:
            return
        if not (math.isfinite(value) and value > 0):
            return
        self._last_accepted = ts
        reference = self._reference_of_past()
        self._values.append(float(value))
        if reference is None:
            return  # warming up: the minute joins the history, nothing is judged
        self._last_ts, self._reference = ts, reference
        self._drift.update(ts, value, reference)
        self._breached = self._recent_change(ts) and self._shifted()

    def _reference_of_past(self) -> float | None:
        past = list(self._values)[: len(self._values) - self.exclude_minutes]
        if len(past) < self.min_reference_points:
            return None
        return _median(past)

    def _recent_change(self, ts: float) -> bool:
        last = self._drift.last_drift_ts
        return last is not None and ts - last < 60.0 * self.within_minutes

    def _shifted(self) -> bool:
        level = self.level
        if level is None:
            return False
        up = level >= self.min_shift and self.direction != "down"
        down = level <= 1.0 / self.min_shift and self.direction != "up"
        return up or down
