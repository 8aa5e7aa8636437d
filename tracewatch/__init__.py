"""tracewatch: a streaming monitor for generative-AI applications.

Apps send trace events to Kafka (``tracewatch.sdk.TraceProducer``); the worker
(``tracewatch run``) validates them, keeps per-minute statistics per route, model
and prompt version, and writes events and statistics to ClickHouse.
"""

from tracewatch.errors import (
    ConfigError,
    DeliveryError,
    InvalidEvent,
    ServiceUnavailable,
    SinkBackpressure,
    SinkError,
    TracewatchError,
)
from tracewatch.schemas import Alert, BreakerSignal, TraceEvent, validate_message

__version__ = "0.1.0"

__all__ = [
    "Alert",
    "BreakerSignal",
    "ConfigError",
    "DeliveryError",
    "InvalidEvent",
    "ServiceUnavailable",
    "SinkBackpressure",
    "SinkError",
    "TraceEvent",
    "TracewatchError",
    "__version__",
    "validate_message",
]
