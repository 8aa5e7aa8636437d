"""What apps import: the trace producer (breaker client and alert subscriber come later)."""

from tracewatch.errors import DeliveryError, InvalidEvent
from tracewatch.sdk.producer import TraceProducer

__all__ = ["DeliveryError", "InvalidEvent", "TraceProducer"]
