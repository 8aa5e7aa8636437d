"""What apps import: the trace producer, the alert subscriber and the breaker client."""

from tracewatch.errors import DeliveryError, InvalidEvent
from tracewatch.sdk.alerts import AlertSubscriber
from tracewatch.sdk.breakers import BreakerClient, BreakerOpen
from tracewatch.sdk.producer import TraceProducer
from tracewatch.sdk.variants import VariantDecision

__all__ = [
    "AlertSubscriber",
    "BreakerClient",
    "BreakerOpen",
    "DeliveryError",
    "InvalidEvent",
    "TraceProducer",
    "VariantDecision",
]
