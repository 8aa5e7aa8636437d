"""The statistics of one rollout cell (a metric on a cohort, candidate against incumbent).

Sums in, verdict material out: the metric slots and their margins, the
comparison of two arms' (count, sum, sum of squares) with the always-valid
interval of ``sequential.py``, which cell a rollback names, and the evidence
line a person reads. No state; ``rollout.py`` keeps the sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tracewatch.detectors.sequential import Interval
from tracewatch.schemas.breaker import Verdict

__all__ = [
    "BASE_METRICS",
    "DEFAULT_MARGINS",
    "MAX_SCORES",
    "SLOTS",
    "CellResult",
    "compare",
    "deciding",
    "evidence",
    "group_sums",
    "round6",
    "threshold",
]

FloatArray = npt.NDArray[np.float64]

#: metric slots before the scores: (name, relative?, default margin)
BASE_METRICS: tuple[tuple[str, bool, float], ...] = (
    ("error_rate", False, 0.02),
    ("latency_ms", True, 0.10),
    ("cost_usd", True, 0.10),
    ("input_tokens", True, 0.20),
    ("output_tokens", True, 0.20),
    ("loop_depth", True, 0.20),
)
MAX_SCORES = 8
SLOTS = len(BASE_METRICS) + MAX_SCORES
#: margins by metric name (``score`` for every score without its own)
DEFAULT_MARGINS: dict[str, float] = {name: m for name, _, m in BASE_METRICS} | {"score": 0.03}
#: a score's variance is floored at this (a constant score would claim certainty)
_VAR_FLOOR = 1e-4


@dataclass(frozen=True, slots=True)
class CellResult:
    """One (metric, cohort) comparison: candidate worse by ``interval`` (in margin units)."""

    metric: str
    cohort: str | None
    interval: Interval
    margin: float
    candidate: float
    incumbent: float
    n_candidate: int
    n_incumbent: int

    @property
    def regressed(self) -> bool:
        return self.interval.lower > 0 and self.interval.estimate > self.margin

    @property
    def within_margin(self) -> bool:
        return self.interval.upper < self.margin

    @property
    def severity(self) -> float:
        return self.interval.estimate / self.margin


def compare(
    metric: str,
    relative: bool,
    higher_is_worse: bool,
    cand: FloatArray,
    inc: FloatArray,
    cohort: str | None,
    margin: float,
    alpha: float,
) -> CellResult | None:
    """One cell: the candidate's sums against the incumbent's, in the metric's direction.

    ``relative`` metrics compare the log of the ratio of means (delta-method
    variance) against ``log(1 + margin)``; the others the difference of means.
    """
    (n_c, m_c, v_c), (n_i, m_i, v_i) = _moments(cand), _moments(inc)
    if metric == "error_rate":  # binomial variance, kept off 0 (Agresti-style smoothing)
        v_c, v_i = _binomial_var(m_c, n_c), _binomial_var(m_i, n_i)
    elif not relative:
        v_c, v_i = max(v_c, _VAR_FLOOR), max(v_i, _VAR_FLOOR)
    if relative:
        if m_c <= 0 or m_i <= 0:
            return None
        diff = math.log(m_c / m_i)
        variance = v_c / (n_c * m_c * m_c) + v_i / (n_i * m_i * m_i)
        margin = math.log1p(margin)
    else:
        diff = m_c - m_i
        variance = v_c / n_c + v_i / n_i
    sign = 1.0 if higher_is_worse else -1.0
    interval = Interval.of(sign * diff, variance, margin * margin, alpha)
    return CellResult(metric, cohort, interval, margin, m_c, m_i, int(n_c), int(n_i))


def deciding(
    overall: list[CellResult], cohorts: list[CellResult], min_samples: int
) -> CellResult | None:
    """The cell a rollback names; None when no cell regressed.

    A cohort cell regresses only with ``min_samples`` per arm (``cohorts`` also holds
    smaller ones, for attribution). The worst overall regression is named by its
    cohort when it is confined to one: that cohort's estimate is beyond the margin
    and every other cohort's within it. A regression on a cohort alone (the overall
    diluted below significance) names that cohort.
    """
    hit = [c for c in overall if c.regressed]
    if hit:
        worst = max(hit, key=lambda c: c.severity)
        cells = [c for c in cohorts if c.metric == worst.metric]
        beyond = [c for c in cells if c.interval.estimate > c.margin]
        return beyond[0] if len(beyond) == 1 and len(cells) > 1 else worst
    regressed = [c for c in cohorts if c.regressed and c.n_candidate >= min_samples]
    return max(regressed, key=lambda c: c.severity) if regressed else None


def group_sums(ids: npt.NDArray[np.intp], groups: int, values: FloatArray) -> FloatArray:
    """(groups, SLOTS, 3): per group and slot the count, sum and sum of squares."""
    out = np.zeros((groups, values.shape[1], 3))
    present = ~np.isnan(values)
    clean = np.where(present, values, 0.0)
    for slot in range(values.shape[1]):
        if not present[:, slot].any():
            continue
        out[:, slot, 0] = np.bincount(ids, present[:, slot], groups)
        out[:, slot, 1] = np.bincount(ids, clean[:, slot], groups)
        out[:, slot, 2] = np.bincount(ids, clean[:, slot] ** 2, groups)
    return out


def _moments(sums: FloatArray) -> tuple[float, float, float]:
    """Count, mean and (unbiased) variance from count, sum and sum of squares."""
    n, total, squares = float(sums[0]), float(sums[1]), float(sums[2])
    mean = total / n
    variance = max(0.0, (squares - n * mean * mean) / (n - 1))
    return n, mean, variance


def _binomial_var(rate: float, n: float) -> float:
    p = (rate * n + 0.5) / (n + 1.0)
    return p * (1.0 - p)


def evidence(cell: CellResult, incumbent: str, verdict: Verdict) -> str:
    where = f" on cohort {cell.cohort}" if cell.cohort else ""
    name = cell.metric.removeprefix("score:")
    line = (
        f"{name}{where}: {_fmt(cell.candidate)} vs {_fmt(cell.incumbent)} for {incumbent}, "
        f"n={_count(cell.n_candidate)} vs {_count(cell.n_incumbent)}"
    )
    if verdict == "hold":
        line += f" (not yet shown within {_fmt_margin(cell)})"
    return line


def round6(value: float) -> float:
    return float(f"{value:.6g}")


def threshold(cell: CellResult) -> float:
    """The incumbent's value moved by the margin in the metric's worse direction."""
    worse_up = (cell.candidate >= cell.incumbent) == (cell.interval.estimate > 0)
    if cell.metric == "error_rate" or cell.metric.startswith("score:"):
        return cell.incumbent + (cell.margin if worse_up else -cell.margin)
    factor = math.exp(cell.margin)
    return cell.incumbent * factor if worse_up else cell.incumbent / factor


def _fmt(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    digits = max(2, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{digits}f}"


def _fmt_margin(cell: CellResult) -> str:
    if cell.metric == "error_rate" or cell.metric.startswith("score:"):
        return f"{cell.margin:g}"
    return f"{math.expm1(cell.margin):.0%}"


def _count(n: int) -> str:
    return f"{n:,}".replace(",", " ")
