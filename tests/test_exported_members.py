"""The public API is pinned: changing it is a decision, not an accident."""

from __future__ import annotations

import tracewatch
import tracewatch.sdk


def test_tracewatch_exports() -> None:
    assert sorted(tracewatch.__all__) == sorted([
        "Alert", "BreakerSignal", "ConfigError", "DeliveryError", "InvalidEvent",
        "ServiceUnavailable", "SinkBackpressure", "SinkError", "TraceEvent", "TracewatchError",
        "__version__", "validate_message",
    ])  # fmt: skip
    for name in tracewatch.__all__:
        assert hasattr(tracewatch, name), name


def test_sdk_exports() -> None:
    assert sorted(tracewatch.sdk.__all__) == [
        "AlertSubscriber", "BreakerClient", "BreakerOpen", "DeliveryError", "InvalidEvent",
        "TraceProducer", "VariantDecision",
    ]  # fmt: skip
    for name in tracewatch.sdk.__all__:
        assert hasattr(tracewatch.sdk, name), name
