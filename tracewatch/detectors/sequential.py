"""An always-valid two-sample comparison: the normal-mixture confidence sequence.

A canary is looked at again every minute, so a fixed-sample test (a t-test at
5 %) re-run each minute would declare a difference sooner or later on two
identical variants. The mixture sequential probability ratio test (mSPRT) of
Johari, Koomen, Pekelis and Walsh, "Peeking at A/B Tests: Why it matters, and
what to do about it" (KDD 2017), mixes the likelihood ratio of a difference
``theta`` over a normal prior ``N(theta0, tau^2)``; with the estimate's variance
``V`` (``var_a / n_a + var_b / n_b``) it is

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 (d - theta0)^2 / (2 V (V + tau^2)))

and by Ville's inequality ``P(Lambda ever >= 1/alpha | theta = theta0) <= alpha``,
however often it is evaluated. Inverting it gives a confidence sequence (Robbins
1970; Howard, Ramdas, McAuliffe and Sekhon, "Time-uniform, nonparametric,
nonasymptotic confidence sequences", Ann. Statist. 2021, the normal-mixture
boundary): ``d +- half_width(V, tau^2, alpha)`` covers the true difference at
every look at once with probability >= 1 - alpha. ``V`` is the plug-in
variance (the large-sample form Johari et al. use for means and proportions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Interval", "mixture_half_width"]


def mixture_half_width(variance: float, tau2: float, alpha: float) -> float:
    """Half-width of the normal-mixture confidence sequence at this look.

    ``variance``: of the estimated difference; ``tau2``: the mixing variance (the
    scale of differences the test is tuned for; the boundary is tightest when the
    true difference is about ``tau``); ``alpha``: the error allowed over all looks.
    """
    if variance <= 0:
        return 0.0
    if tau2 <= 0 or not 0 < alpha < 1:
        raise ValueError("tau2 must be positive and alpha in (0, 1)")
    total = variance + tau2
    log_term = math.log(1.0 / alpha) + 0.5 * math.log(total / variance)
    return math.sqrt(2.0 * variance * total / tau2 * log_term)


@dataclass(frozen=True, slots=True)
class Interval:
    """A difference (candidate worse by ``estimate``) and its always-valid bounds."""

    estimate: float
    half_width: float

    @property
    def lower(self) -> float:
        return self.estimate - self.half_width

    @property
    def upper(self) -> float:
        return self.estimate + self.half_width

    @classmethod
    def of(cls, estimate: float, variance: float, tau2: float, alpha: float) -> Interval:
        return cls(estimate, mixture_half_width(variance, tau2, alpha))
