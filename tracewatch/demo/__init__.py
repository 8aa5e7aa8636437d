"""Demo traffic: seeded, realistic trace events (and invalid ones) for demos and tests."""

from tracewatch.demo.traffic import (
    DEFAULT_ROUTES,
    INVALID_CLASSES,
    MODEL_PRICES,
    DemoTraffic,
    Event,
    RouteProfile,
    ScoreSpec,
    Workload,
    invalid_events,
)

__all__ = [
    "DEFAULT_ROUTES",
    "INVALID_CLASSES",
    "MODEL_PRICES",
    "DemoTraffic",
    "Event",
    "RouteProfile",
    "ScoreSpec",
    "Workload",
    "invalid_events",
]
