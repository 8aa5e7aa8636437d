"""The detector classes by name, and cloning one detector per key.

Why clone from constructor arguments instead of ``copy.deepcopy``: a
detector that has already seen one key's minutes carries that key's state;
rebuilding from ``params`` gives a fresh instance with exactly the same
configuration, and makes "same configuration" checkable (river's
``Estimator.clone`` works the same way). Every detector therefore stores each
constructor argument under its own name.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, TypeVar

from tracewatch.detectors.baseline import BaselineDetector, RateDetector
from tracewatch.detectors.drift import DriftDetector
from tracewatch.detectors.step import StepDetector

__all__ = ["DETECTORS", "clone", "params"]

#: Every detector class, by the name rules and configuration refer to it with.
DETECTORS: dict[str, type] = {
    "baseline": BaselineDetector,
    "error_rate": RateDetector,
    "drift": DriftDetector,
    "step": StepDetector,
}

_D = TypeVar("_D")


def params(detector: object) -> dict[str, Any]:
    """The constructor arguments of ``detector``, read back from its attributes."""
    signature = inspect.signature(type(detector).__init__)
    names = [
        name
        for name, p in signature.parameters.items()
        if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    missing = [name for name in names if not hasattr(detector, name)]
    if missing:
        raise TypeError(f"{type(detector).__name__} does not store {missing}: cannot clone")
    return {name: getattr(detector, name) for name in names}


def clone(detector: _D) -> _D:
    """A fresh instance of ``detector``'s class with the same (deep-copied) parameters."""
    return type(detector)(**copy.deepcopy(params(detector)))
