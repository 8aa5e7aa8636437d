"""The alert engine and the breaker board, built once from the detection settings.

The worker and replay both call ``load_judges`` so that they read the rules file
the same way and judge with the same limits; the file is read once, here.
"""

from __future__ import annotations

from dataclasses import dataclass

from tracewatch.config import DetectSettings
from tracewatch.detectors.breakers import DEFAULT_LIMITS, BreakerBoard
from tracewatch.detectors.engine import AlertEngine
from tracewatch.schemas.rules import RulesFile, load_rules

__all__ = ["Judges", "load_judges"]


@dataclass
class Judges:
    engine: AlertEngine
    board: BreakerBoard
    rules: RulesFile | None


def load_judges(detect: DetectSettings, max_traces: int = 200_000) -> Judges:
    """Read the rules file (``ConfigError`` at its line if broken) and build both judges.

    ``max_traces``: the board's capacity (``TRACEWATCH_WORKER_BREAKER_MAX_TRACES``).
    """
    rules = None if detect.rules_file is None else load_rules(detect.rules_file)
    engine = AlertEngine.from_settings(detect, rules)
    limits = rules.breaker_limits if rules is not None else DEFAULT_LIMITS
    board = BreakerBoard(limits, max_traces=max_traces)
    return Judges(engine, board, rules)
