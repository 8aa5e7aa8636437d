"""Abrupt steps judged by their evidence: a recent window against a local trend.

Why not the median-vs-median ratio of ``BaselineDetector`` alone: a ratio floor
of 1.5x is the same bar for a route with 30 calls a minute and one with 1 200,
so a busy route's +40 % p95 latency -- thousands of calls of evidence -- never
fired. Here the bar is a significance test whose standard error falls with the
evidence (calls per minute, minutes in the window), and a *practical* floor
(``min_effect``: 15 % on p95s, 0.03 on a score mean) keeps statistically clear
but unimportant moves quiet.

Why a local *trend* and not a trailing median: a daily swing of +-50 % moves a
p95 by up to ~1.5 % a minute, so a median lagging 30 minutes behind is off by
~30 % at the steepest point of the day. A line through the recent minutes,
extrapolated over the few minutes of the window, follows a smooth swing or a
slow drift (its error is second order: a few per cent); an abrupt step is a
jump away from the line. That is the abrupt-vs-gradual split. To stay quiet on
what a line cannot follow (the overshoot of a line bent by an earlier step
entering the baseline), the window must *also* be ``min_effect`` away from the
plain baseline median, in the same direction.

The test, per closed minute (``update``):

- ``x = log(value)`` (``scale="log"``: p95 cost, latency, token means -- a
  relative change is the same number at every price) or ``x = value``
  (``scale="linear"``: score means, where 0.05 is the unit people think in).
- **Baseline**: up to ``baseline_minutes`` accepted minutes before the newest
  ``window_minutes``. Robust line through them by the *median-of-halves*
  method (Wald 1940, Bartlett 1949: the slope between the medians of the two
  halves; O(n log n), and a few outlying minutes move neither median), the
  intercept the median residual. The line is kept only where its slope is
  more than 2 standard errors (a flat level is the better guess otherwise, and
  extrapolating a line costs precision). Per-minute dispersion from the
  residuals: ``s_c`` estimates the scatter of ``r_i sqrt(n_i)`` as the largest
  of ``1.4826 MAD``, the same over the deviations in ``direction`` only (a p95
  of few calls scatters further up than down) and the 80th percentile of the
  absolute deviations / 1.2816 (all three agree for normal noise; the last is
  larger when the tails are heavy, as minute p95s are). A minute of ``n``
  observations then scatters by ``s_c / sqrt(n)`` (sampling noise of a p95 or
  a mean falls as ``1/sqrt(n)``); heavy-tailed routes get a wide bar without
  configuration.
- **Scan**: for every window of the last ``k`` minutes, ``k`` from
  ``min_window_minutes`` to ``window_minutes`` (a windowed generalised
  likelihood-ratio scan over the change point, Willsky & Jones 1976, Lai 1995),
  the count-weighted mean residual ``d_k`` against the line, its standard error
  ``sqrt(s_c^2 / sum n_eff + var(line at the window))`` and ``z_k = d_k / se``.
  The minute pulling hardest in ``direction`` is left out, so one absurd minute
  (a timeout as the p95 of a 15-call minute) cannot make a window. Counts are
  capped at the baseline's median count (``n_eff``) so a traffic surge does not
  claim more precision than the baseline's minutes showed.
- **Breach**: some ``k`` has ``z_k >= min_z`` (``+ low_count_z`` while the
  window's minutes have fewer than ``low_count`` observations: there a p95 is
  nearly a maximum and far from normal), ``d_k >= min_effect``, and the window
  mean is ``min_effect`` beyond both the baseline median and the median of the
  5 minutes just before it: an abrupt step clears all three, a smooth swing or
  drift at most the first, the overshoot of a line bent by an earlier step in
  the baseline not the second. The breaching window with the largest ``z`` is
  reported: its first minute is the estimated change point (``change_ts``).

Defaults, measured with ``bench/sensitivity.py`` (seeds 0-3 while tuning, the
README has the held-out ones): ``window_minutes=8`` (5 missed a x1.3 p95
latency step at 3 requests/s in 3 of 4 streams: z 3.7-6.7 at 10 minutes; 8
caught all four); ``min_z=4`` (seeds 0-9: the largest z held two minutes on
960 clean route-hours at >= 3 requests/s was 3.8; the weakest x1.3 latency
step at 3 requests/s reached 3.7 within 10 minutes, the next 4.4);
``low_count_z=2.5`` (at 0.5 requests/s clean streams reached z 5.2; +1.5 still
raised one alarm in 576 route-hours). The 80th-percentile scale: with MADs
alone, 2 false alarms in 1 440 clean route-hours (z 6.4 and 4.5, heavy-tailed
minute p95s), with it none, for one x1.3 latency step at 3/s missed of 10.

Skipped minutes (no value, ``weight < min_count``, a ``ts`` not after the last
accepted one) leave the state alone, as in ``BaselineDetector``. Bounded:
``baseline_minutes + window_minutes`` (value, count) pairs. Pure and
deterministic.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

__all__ = ["Scale", "StepDetector"]

Scale = Literal["log", "linear"]
StepDirection = Literal["up", "down"]

_MAD_TO_SIGMA = 1.4826
#: The 80th percentile of |normal| is 1.2816 sigma.
_P80_TO_SIGMA = 1.2816
#: A line fitted from medians is less efficient than least squares (about 1/0.64
#: for the median of normal samples): its prediction variance is scaled by this.
_MEDIAN_INEFFICIENCY = 1.57
#: A baseline slope counts as a trend from this many standard errors on.
_TREND_T = 2.0
#: Minutes right before a scanned window whose median the window must also clear.
_JUST_BEFORE = 5


class StepDetector:
    """An abrupt step of ONE minute statistic of ONE key, judged by its evidence.

    ``update(ts, value, weight)`` once per closed minute, in event-time order
    (``weight``: the observations the statistic rests on); then read
    ``breached``, ``effect``, ``z``, ``window_value``, ``baseline_value`` and
    ``change_ts``. See the module docstring for the test.
    """

    def __init__(
        self,
        direction: StepDirection = "up",
        scale: Scale = "log",
        min_effect: float = 0.15,
        min_z: float = 4.0,
        window_minutes: int = 8,
        min_window_minutes: int = 2,
        baseline_minutes: int = 30,
        min_baseline_points: int = 20,
        min_count: int = 5,
        low_count: int = 60,
        low_count_z: float = 2.5,
    ) -> None:
        if direction not in ("up", "down"):
            raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
        if scale not in ("log", "linear"):
            raise ValueError(f"scale must be 'log' or 'linear', got {scale!r}")
        if not min_effect > 0 or min_z < 0:
            raise ValueError("min_effect must be > 0 and min_z >= 0")
        if not 1 <= min_window_minutes <= window_minutes:
            raise ValueError("min_window_minutes must be in [1, window_minutes]")
        if not 4 <= min_baseline_points <= baseline_minutes:
            raise ValueError("min_baseline_points must be in [4, baseline_minutes]")
        self.direction: StepDirection = direction
        self.scale: Scale = scale
        self.min_effect = min_effect
        self.min_z = min_z
        self.window_minutes = window_minutes
        self.min_window_minutes = min_window_minutes
        self.baseline_minutes = baseline_minutes
        self.min_baseline_points = min_baseline_points
        self.min_count = min_count
        self.low_count = low_count
        self.low_count_z = low_count_z
        self._points: deque[tuple[float, float, int]] = deque(
            maxlen=baseline_minutes + window_minutes
        )  # (ts, x, n), oldest first
        self._last_ts = -math.inf
        self._reset_outputs()

    def _reset_outputs(self) -> None:
        self._breached = False
        self._effect: float | None = None
        self._z: float | None = None
        self._window_x: float | None = None
        self._expected_x: float | None = None
        self._change_ts: float | None = None

    # -- read-only results -------------------------------------------------------------

    @property
    def last_ts(self) -> float:
        """Event time of the last accepted minute (-inf before the first)."""
        return self._last_ts

    @property
    def breached(self) -> bool:
        """Whether a recent window stepped away from the local trend (see the module doc)."""
        return self._breached

    @property
    def z(self) -> float | None:
        """The reported window's z (signed: positive means in ``direction``)."""
        return self._z

    @property
    def effect(self) -> float | None:
        """Window vs expected: a ratio (``scale="log"``) or a difference (``"linear"``)."""
        if self._window_x is None or self._expected_x is None:
            return None
        diff = self._window_x - self._expected_x
        return math.exp(diff) if self.scale == "log" else diff

    @property
    def window_value(self) -> float | None:
        """The reported window's level in the statistic's unit (geometric mean for ``log``)."""
        return self._unit(self._window_x)

    @property
    def baseline_value(self) -> float | None:
        """What the local trend expected over the reported window."""
        return self._unit(self._expected_x)

    @property
    def change_ts(self) -> float | None:
        """Start of the reported window's first minute: the estimated change point."""
        return self._change_ts

    @property
    def threshold(self) -> float | None:
        """``baseline_value`` moved by ``min_effect`` in ``direction``."""
        expected = self._expected_x
        if expected is None:
            return None
        sign = 1.0 if self.direction == "up" else -1.0
        return self._unit(expected + sign * self._effect_x())

    # -- updates -----------------------------------------------------------------------

    def update(self, ts: float, value: float | None, weight: int = 1) -> None:
        """Fold in one closed minute's statistic and its observation count."""
        if value is None or weight < self.min_count or ts <= self._last_ts:
            return
        if not math.isfinite(value) or (self.scale == "log" and value <= 0):
            return
        self._last_ts = ts
        x = math.log(value) if self.scale == "log" else float(value)
        self._points.append((float(ts), x, int(weight)))
        self._evaluate()

    def _evaluate(self) -> None:
        self._reset_outputs()
        points = list(self._points)
        base = points[: -self.window_minutes]
        if len(base) < self.min_baseline_points:
            return
        fit = _Fit.of([(x, n) for _, x, n in base], 1.0 if self.direction == "up" else -1.0)
        sign = fit.sign
        counts = min(fit.n_ref, _median([float(n) for _, _, n in points[-self.window_minutes :]]))
        min_z = self.min_z + (self.low_count_z if counts < self.low_count else 0.0)
        best: tuple[float, int, float, float] | None = None  # (z, k, window x, expected x)
        for k in range(self.min_window_minutes, self.window_minutes + 1):
            window = points[-k:]
            z, wx, ex = fit.judge([(x, n) for _, x, n in window], len(points) - k)
            if best is None or sign * z > sign * best[0]:
                best = (z, k, wx, ex)
            just_before = _median([x for _, x, _ in points[-k - _JUST_BEFORE : -k]])
            level = min(sign * fit.level, sign * just_before)
            if self._deviates(sign, z, wx, ex, level, min_z):
                self._breached = True
        if best is not None:
            z, k, wx, ex = best
            self._z, self._window_x, self._expected_x = sign * z, wx, ex
            self._change_ts = points[-k][0] - 60.0

    def _deviates(
        self, sign: float, z: float, wx: float, ex: float, level: float, min_z: float
    ) -> bool:
        """``level``: the nearer (times ``sign``) of the baseline and just-before medians."""
        floor = self._effect_x()
        return sign * z >= min_z and sign * (wx - ex) >= floor and sign * wx - level >= floor

    def _effect_x(self) -> float:
        return math.log1p(self.min_effect) if self.scale == "log" else self.min_effect

    def _unit(self, x: float | None) -> float | None:
        if x is None:
            return None
        return math.exp(x) if self.scale == "log" else x


class _Fit:
    """A robust line through the baseline minutes and their per-minute dispersion."""

    def __init__(self, slope: float, intercept: float, level: float, s_c: float, n_ref: float,
                 t_mean: float, sxx: float, n_points: int, sign: float) -> None:  # fmt: skip
        self.sign = sign
        self.slope, self.intercept, self.level = slope, intercept, level
        self.s_c, self.n_ref = s_c, n_ref
        self.t_mean, self.sxx, self.n_points = t_mean, sxx, n_points

    @classmethod
    def of(cls, base: list[tuple[float, int]], sign: float) -> _Fit:
        xs = [x for x, _ in base]
        m = len(xs)
        half = m // 2
        t1, t2 = (half - 1) / 2.0, half + (m - half - 1) / 2.0
        slope = (_median(xs[half:]) - _median(xs[:half])) / (t2 - t1)
        intercept = _median([x - slope * i for i, x in enumerate(xs)])
        residuals = [(x - intercept - slope * i) * math.sqrt(n) for i, (x, n) in enumerate(base)]
        centre = _median(residuals)
        spread = sorted(abs(r - centre) for r in residuals)
        # the side that matters: a p95 of few calls scatters further up than down
        side = [abs(r - centre) for r in residuals if sign * (r - centre) > 0]
        # and heavier-tailed than normal: the 80th percentile of the deviations is
        # 1.2816 sigma for normal noise, more than 1.4826 MAD for heavy tails
        tail = spread[(4 * len(spread)) // 5] / _P80_TO_SIGMA
        mad = _MAD_TO_SIGMA * max(_median(spread), _median(side) if side else 0.0)
        s_c = max(mad, tail)
        n_ref = _median([float(n) for _, n in base])
        level = _median(xs)
        # Keep the trend only where the baseline shows one (|slope| > 2 standard errors,
        # the variance of a median of h minutes being ~1.57 s^2 / h): extrapolating a
        # line costs precision, and a flat level is the better guess without a slope.
        per_minute = s_c * s_c / n_ref
        se_slope = math.sqrt(per_minute * _MEDIAN_INEFFICIENCY * (1 / half + 1 / (m - half)))
        if abs(slope) * (t2 - t1) <= _TREND_T * se_slope:
            return cls(0.0, level, level, s_c, n_ref, 0.0, math.inf, m, sign)
        t_mean = (m - 1) / 2.0
        sxx = sum((i - t_mean) ** 2 for i in range(m))
        return cls(slope, intercept, level, s_c, n_ref, t_mean, sxx, m, sign)

    def judge(self, window: list[tuple[float, int]], t0: int) -> tuple[float, float, float]:
        """(z, window mean x, expected x) for the window's minutes, the first at index ``t0``.

        The minute that pulls hardest in ``sign``'s direction is left out (for two
        minutes: the weaker one counts), so one absurd minute -- a timeout that is
        the p95 of a 15-call minute -- cannot make a window on its own.
        """
        rows = [
            (min(float(n), self.n_ref), x - self.intercept - self.slope * (t0 + i), t0 + i, x)
            for i, (x, n) in enumerate(window)
        ]
        if len(rows) > 1:
            rows.remove(max(rows, key=lambda row: self.sign * row[1] * row[0]))
        total = sum(w for w, _, _, _ in rows)
        diff = sum(w * r for w, r, _, _ in rows) / total
        t_centre = sum(w * t for w, _, t, _ in rows) / total
        wx = sum(w * x for w, _, _, x in rows) / total
        noise = self.s_c * self.s_c
        line_var = (
            (noise / self.n_ref)
            * _MEDIAN_INEFFICIENCY
            * (1.0 / self.n_points + (t_centre - self.t_mean) ** 2 / self.sxx)
        )
        se = math.sqrt(noise / total + line_var)
        ex = wx - diff
        if se > 0:
            return diff / se, wx, ex
        return (math.copysign(math.inf, diff) if diff else 0.0), wx, ex


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2.0
