"""One root for every error tracewatch raises on purpose.

    TracewatchError
    ├── ConfigError          settings or CLI input that cannot work; message says how to fix it
    │   └── QueryRefused     a query the read-only reader will not run, or stopped at a limit
    ├── InvalidEvent         a trace event that breaks the contract (carries a short reason code)
    ├── SinkError            an external store refused or could not take a batch
    │   └── SinkBackpressure a sink asks the caller to retry after ``retry_after`` seconds
    ├── ServiceUnavailable   Kafka / ClickHouse / Alertmanager could not be reached
    └── DeliveryError        the SDK producer could not deliver events (carries the failures)

Callers catch the root to tell "tracewatch said no" apart from bugs.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DeliveryError",
    "InvalidEvent",
    "QueryRefused",
    "ServiceUnavailable",
    "SinkBackpressure",
    "SinkError",
    "TracewatchError",
]


class TracewatchError(Exception):
    """Root of every deliberate tracewatch error."""


class ConfigError(TracewatchError):
    """Settings or arguments that cannot work; the message says what to change."""


class QueryRefused(ConfigError):
    """A query that is not one SELECT over the tracewatch tables, or that hit a limit
    (time, result rows, memory); the message says which and what to change."""


class InvalidEvent(TracewatchError):
    """A trace event that breaks the contract.

    ``reason`` is a short machine-readable code (``negative_number``, ``missing_field`` …),
    ``field`` the offending field if there is one, and the message is for humans.
    """

    def __init__(self, reason: str, detail: str, field: str | None = None) -> None:
        super().__init__(
            f"{reason}: {detail}" if field is None else f"{reason} ({field}): {detail}"
        )
        self.reason = reason
        self.field = field
        self.detail = detail


class SinkError(TracewatchError):
    """An external store could not take a batch."""


class SinkBackpressure(SinkError):
    """The sink is alive but asks the caller to slow down."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailable(TracewatchError):
    """A service tracewatch depends on could not be reached."""


class DeliveryError(TracewatchError):
    """The SDK could not deliver some events; ``failures`` lists (event_id, error) pairs."""

    def __init__(self, message: str, failures: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.failures = failures
