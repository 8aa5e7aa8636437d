"""One conformance test over every registered detector (river's ``test_estimators`` habit).

A detector added to ``DETECTORS`` is checked here for cloning, bounded state and
determinism; it only needs a line in ``CASES`` saying how to feed it.
"""

from __future__ import annotations

import functools
import inspect
import pickle
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from tracewatch.detectors.registry import DETECTORS, clone, params

T0 = 1_795_341_600.0
Args = tuple[float, Any, Any]


def _value_and_weight(rng: np.random.Generator, i: int) -> Args:
    value = None if i % 97 == 0 else float(3e-3 * np.exp(0.5 * rng.standard_normal()))
    return T0 + 60.0 * i, value, int(rng.integers(0, 300))


def _errors_and_count(rng: np.random.Generator, i: int) -> Args:
    count = int(rng.integers(0, 300))
    return T0 + 60.0 * i, int(rng.binomial(count, 0.02 if i % 500 < 450 else 0.2)), count


def _value_and_baseline(rng: np.random.Generator, i: int) -> Args:
    level = 3.0 if i % 600 > 400 else 1.0
    return T0 + 60.0 * i, float(level * 400 * np.exp(0.3 * rng.standard_normal())), 400.0


def _steps_and_weight(rng: np.random.Generator, i: int) -> Args:
    level = 1.6 if i % 300 > 240 else 1.0
    value = None if i % 97 == 0 else float(level * 400 * np.exp(0.05 * rng.standard_normal()))
    return T0 + 60.0 * i, value, int(rng.integers(0, 300))


#: name -> (non-default constructor arguments, one update's arguments for minute i)
CASES: dict[str, tuple[dict[str, Any], Callable[[np.random.Generator, int], Args]]] = {
    "baseline": ({"window_minutes": 3, "direction": "both", "min_z": 3.0}, _value_and_weight),
    "error_rate": ({"baseline_minutes": 30, "alpha": 1e-3}, _errors_and_count),
    "drift": ({"delta": 0.01, "min_points": 20}, _value_and_baseline),
    "step": ({"min_effect": 0.2, "window_minutes": 6}, _steps_and_weight),
}


def inputs(name: str, n: int, seed: int = 0) -> Iterator[Args]:
    rng = np.random.default_rng(seed)
    feeder = CASES[name][1]
    return (feeder(rng, i) for i in range(n))


@functools.cache
def _properties(cls: type) -> tuple[str, ...]:
    props = inspect.getmembers(cls, lambda m: isinstance(m, property))
    return tuple(name for name, _ in props if not name.startswith("_"))


def outputs(detector: object) -> tuple[object, ...]:
    """Every public read-only property, in name order."""
    return tuple(getattr(detector, name) for name in _properties(type(detector)))


def run(detector: Any, name: str, n: int, seed: int = 0) -> list[tuple[object, ...]]:
    trace = []
    for args in inputs(name, n, seed):
        detector.update(*args)
        trace.append(outputs(detector))
    return trace


@pytest.fixture(params=sorted(DETECTORS))
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_every_registered_detector_has_a_case() -> None:
    assert set(CASES) == set(DETECTORS)


def test_clone_has_equal_parameters_and_fresh_state(name: str) -> None:
    kwargs = CASES[name][0]
    original = DETECTORS[name](**kwargs)
    run(original, name, 700)
    copy = clone(original)
    assert type(copy) is type(original) and copy is not original
    assert params(copy) == params(original)
    assert all(params(copy)[k] == v for k, v in kwargs.items())
    assert outputs(copy) == outputs(DETECTORS[name](**kwargs))  # nothing learned carried over
    for attr, value in vars(original).items():
        if not isinstance(value, int | float | str | bool | tuple | type(None)):
            assert getattr(copy, attr) is not value, f"{attr} is shared"
    before = outputs(original)
    run(copy, name, 700, seed=1)
    assert outputs(original) == before  # feeding the clone leaves the original alone


def test_state_stays_bounded(name: str) -> None:
    detector = DETECTORS[name](**CASES[name][0])
    stream = list(inputs(name, 10_000))
    for args in stream[:1_000]:
        detector.update(*args)
    size_1k = len(pickle.dumps(detector))
    for args in stream[1_000:]:
        detector.update(*args)
    for attr, value in vars(detector).items():
        if isinstance(value, deque):
            assert value.maxlen is not None and len(value) <= value.maxlen, attr
        elif isinstance(value, list | dict | set):
            assert len(value) <= 1_000, attr
    # whatever is inside (ADWIN's buckets are logarithmic in the window), no growth to speak of
    assert len(pickle.dumps(detector)) <= 1.5 * size_1k


def test_identical_input_gives_identical_output(name: str) -> None:
    kwargs = CASES[name][0]
    first = run(DETECTORS[name](**kwargs), name, 2_000, seed=3)
    second = run(DETECTORS[name](**kwargs), name, 2_000, seed=3)
    assert first == second
    assert any(True in trace for trace in first)  # the stream does make it fire
