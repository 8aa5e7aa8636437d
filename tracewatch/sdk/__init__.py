"""What apps import: the trace producer and the alert subscriber (breaker client comes later)."""

from tracewatch.errors import DeliveryError, InvalidEvent
from tracewatch.sdk.alerts import AlertSubscriber
from tracewatch.sdk.producer import TraceProducer

__all__ = ["AlertSubscriber", "DeliveryError", "InvalidEvent", "TraceProducer"]
