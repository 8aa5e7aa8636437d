"""Pydantic models of the wire contract: trace events, alerts, breaker signals."""

from tracewatch.schemas.alert import Alert, AlertStatus
from tracewatch.schemas.breaker import BreakerSignal, BreakerState
from tracewatch.schemas.event import EVENT_KINDS, Kind, Status, TraceEvent
from tracewatch.schemas.validation import REASONS, validate_message

__all__ = [
    "EVENT_KINDS",
    "REASONS",
    "Alert",
    "AlertStatus",
    "BreakerSignal",
    "BreakerState",
    "Kind",
    "Status",
    "TraceEvent",
    "validate_message",
]
