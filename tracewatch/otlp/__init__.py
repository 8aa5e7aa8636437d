"""OpenTelemetry intake: OTLP/HTTP trace exports turned into contract events.

``tracewatch.otlp.mapping`` is pure (an ExportTraceServiceRequest in, event
dicts out) and is what this package exports; ``tracewatch.otlp.receiver`` is
the aiohttp server (``tracewatch otlp``) that produces them to the events
topic, imported on its own so the mapping never pulls in Kafka or aiohttp.
"""

from tracewatch.otlp.mapping import (
    CONTENT_ATTRIBUTES,
    DEFAULT_ROUTE_ATTRIBUTES,
    MappingResult,
    OtlpDecodeError,
    map_request,
    parse_json_request,
    parse_protobuf_request,
)

__all__ = [
    "CONTENT_ATTRIBUTES",
    "DEFAULT_ROUTE_ATTRIBUTES",
    "MappingResult",
    "OtlpDecodeError",
    "map_request",
    "parse_json_request",
    "parse_protobuf_request",
]
