"""OTLP spans to contract trace events, following the OpenTelemetry GenAI conventions.

Apps that already trace their LLM calls with OpenTelemetry (``gen_ai.*``
attributes) can send those spans here instead of adopting the SDK. Each span
with a GenAI meaning becomes one event (contract "Trace event"); other spans
(HTTP servers, databases …) are accepted and ignored, since no event kind fits
them.

What goes where (``map_request``):

=====================================  =============================================
span                                   event
=====================================  =============================================
trace id, span id, parent span id      ``trace_id``, ``span_id``, ``parent_span_id`` (hex)
trace id + span id                     ``event_id`` (``<trace>-<span>``: a re-sent span is
                                       a duplicate and counted once)
end time; end - start                  ``ts``; ``latency_ms``
status ERROR                           ``status`` error (timeout when the error type says
                                       so), ``error_type`` from ``error.type``, else the
                                       ``exception`` event's ``exception.type``
``gen_ai.operation.name``              ``kind``: chat, generate_content, text_completion,
                                       embeddings → llm; execute_tool → tool;
                                       invoke_agent, create_agent, invoke_workflow, plan →
                                       agent_step; retrieval, search, rerank … → retrieval;
                                       another name → llm with a model, else agent_step
no operation name                      tool with ``gen_ai.tool.name``, eval with
                                       ``gen_ai.evaluation.*``, llm with a model; otherwise
                                       the span is not a GenAI span and is ignored
``gen_ai.response.model``, else        ``model`` (the response's model is the one that ran:
``gen_ai.request.model``               a dated version shows a silent upgrade)
``gen_ai.provider.name``, else         ``provider``
``gen_ai.system``
``gen_ai.usage.input_tokens`` /        ``input_tokens`` / ``output_tokens`` (also the older
``output_tokens``                      ``prompt_tokens`` / ``completion_tokens``)
``gen_ai.tool.name``                   ``tool_name``
``gen_ai.tool.call.arguments``         ``tool_args_hash`` (SHA-256 of the canonical JSON, 16
                                       hex digits); the arguments are never stored
``gen_ai.conversation.id``             ``session_id``
``gen_ai.evaluation.result`` events,   ``scores[name]`` (name in snake_case); a score
or ``gen_ai.evaluation.name`` +        outside [0, 1] (a 1-5 scale …) is skipped, not
``gen_ai.evaluation.score.value``      clamped, and its raw value kept in ``attributes``
                                       as ``gen_ai.evaluation.<name>.score.value``
``tracewatch.<field>``                 that contract field: kind, app, prompt_version,
                                       cohort, loop_depth, retry_count, cost_usd,
                                       guardrail_action, guardrail_name
route attributes (configurable,        ``route``; each looked up on the span, then on its
``tracewatch.route``, ``http.route``,  resource; then the resource's ``service.name``, then
``gen_ai.agent.name``)                 the span name
resource ``service.name``              ``app``
every other span attribute             ``attributes``, bounded as the contract says: the
                                       first 64 in span order are kept, the rest dropped;
                                       names over 128 characters dropped; strings (arrays and
                                       maps as JSON) truncated to 1024 characters; bytes and
                                       non-finite numbers dropped; plus ``otel.span_name``
=====================================  =============================================

Prompt and completion content is never copied, whatever the operator sets:
``gen_ai.input.messages``, ``gen_ai.output.messages``, ``gen_ai.system_instructions``,
``gen_ai.prompt*`` (except the identifier ``gen_ai.prompt.name``), ``gen_ai.completion*``,
tool call arguments and results, tool definitions, retrieval queries and documents,
evaluation explanations, and the content attributes of OpenLLMetry and OpenInference.
Span events other than evaluation results and exceptions are not read at all.

A span that cannot become an event (no valid ids, no end time) is rejected
with a message; the receiver reports the count in the OTLP partial-success
answer. OTLP/JSON bodies carry hex ids (the spec) but base64 is accepted too:
the length tells them apart. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tracewatch.schemas.content import CONTENT_ATTRIBUTES, is_content

__all__ = [
    "CONTENT_ATTRIBUTES",
    "DEFAULT_ROUTE_ATTRIBUTES",
    "MappingResult",
    "OtlpDecodeError",
    "SpanPosition",
    "args_hash",
    "map_request",
    "map_span",
    "parse_json_request",
    "parse_protobuf_request",
    "score_name",
]

DEFAULT_ROUTE_ATTRIBUTES: tuple[str, ...] = ("tracewatch.route", "http.route", "gen_ai.agent.name")

MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_NAME = 128
MAX_ATTRIBUTE_STRING = 1024
MAX_LABEL = 256
MAX_SCORES = 32
MAX_SCORE_NAME = 64
_MAX_REPORTED = 5

_LLM_OPERATIONS = frozenset({"chat", "generate_content", "text_completion", "embeddings"})
_TOOL_OPERATIONS = frozenset({"execute_tool"})
_AGENT_OPERATIONS = frozenset({"invoke_agent", "create_agent", "invoke_workflow", "plan"})
_RETRIEVAL_OPERATIONS = frozenset(
    {"retrieval", "retrieve", "search", "vector_search", "similarity_search", "rerank"}
)
_KINDS = frozenset({"llm", "tool", "retrieval", "agent_step", "guardrail", "eval"})

_EVALUATION_EVENT = "gen_ai.evaluation.result"
_EVALUATION_NAME = "gen_ai.evaluation.name"
_EVALUATION_SCORE = "gen_ai.evaluation.score.value"

# Contract fields an app may set directly as ``tracewatch.<field>`` span attributes.
_TRACEWATCH_LABELS = ("app", "prompt_version", "cohort", "guardrail_action", "guardrail_name")
_TRACEWATCH_COUNTS = ("loop_depth", "retry_count")

# Attributes the fixed mapping consumes; never copied to ``attributes``.
_CONSUMED = frozenset(
    {
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.provider.name",
        "gen_ai.system",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.prompt_tokens",
        "gen_ai.usage.completion_tokens",
        "gen_ai.tool.name",
        "gen_ai.conversation.id",
        _EVALUATION_NAME,
        _EVALUATION_SCORE,
    }
)

_TRACE_ID_BYTES = 16
_SPAN_ID_BYTES = 8
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_WORD = re.compile(r"[^a-z0-9]+")


class OtlpDecodeError(ValueError):
    """A request body that is not an OTLP ExportTraceServiceRequest; the message says why."""


@dataclass
class MappingResult:
    """The events of one export request, and what became of the other spans."""

    events: list[dict[str, Any]] = field(default_factory=list)
    #: one message per span that could not become an event
    rejected: list[str] = field(default_factory=list)
    #: spans without a GenAI meaning (no event kind fits them), accepted and not stored
    ignored: int = 0

    @property
    def spans(self) -> int:
        return len(self.events) + len(self.rejected) + self.ignored


# --------------------------------------------------------------------------- decoding


def parse_protobuf_request(body: bytes) -> ExportTraceServiceRequest:
    """An ``application/x-protobuf`` body; ``OtlpDecodeError`` when it is not one."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise OtlpDecodeError(f"not a protobuf ExportTraceServiceRequest: {exc}") from None
    return request


#: where a span sits in an export request: (resource spans, scope spans, span) indexes
SpanPosition = tuple[int, int, int]


def parse_json_request(
    body: bytes, problems: dict[SpanPosition, str] | None = None
) -> ExportTraceServiceRequest:
    """An ``application/json`` body (OTLP/JSON: lowerCamelCase, hex ids, unknown fields ignored).

    A span (or one of its links) whose id is neither hex nor base64 of the right length
    makes the whole body an ``OtlpDecodeError``, unless ``problems`` is given: then the
    span's ids are cleared, the reason is put in ``problems`` at the span's position,
    and ``map_request(..., problems=problems)`` rejects that span alone.
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise OtlpDecodeError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise OtlpDecodeError("an OTLP/JSON body is an object with resourceSpans")
    _ids_to_base64(data, problems)
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(data, request, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise OtlpDecodeError(f"not an OTLP/JSON ExportTraceServiceRequest: {exc}") from None
    return request


def _ids_to_base64(data: dict[str, Any], problems: dict[SpanPosition, str] | None) -> None:
    """Rewrite the ids of every span and link into the base64 protobuf's JSON parser expects."""
    for r, resource_spans in enumerate(_items(data, "resourceSpans", "resource_spans")):
        for s, scope_spans in enumerate(_items(resource_spans, "scopeSpans", "scope_spans")):
            for index, span in enumerate(_items(scope_spans, "spans", "spans")):
                try:
                    _fix_ids(span, f"span {index}")
                    for link in _items(span, "links", "links"):
                        _fix_ids(link, f"a link of span {index}")
                except OtlpDecodeError as exc:
                    if problems is None:
                        raise
                    problems[(r, s, index)] = str(exc)
                    _clear_ids(span)


def _clear_ids(span: dict[str, Any]) -> None:
    """Empty every id of a span refused for its ids, so the rest of the body still parses."""
    for obj in (span, *_items(span, "links", "links")):
        for key in ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"):
            if key in obj:
                obj[key] = ""


def _items(container: object, camel: str, snake: str) -> Iterator[dict[str, Any]]:
    if not isinstance(container, dict):
        return
    values = container.get(camel, container.get(snake))
    if isinstance(values, list):
        yield from (value for value in values if isinstance(value, dict))


def _fix_ids(obj: dict[str, Any], where: str) -> None:
    for camel, snake, size in (
        ("traceId", "trace_id", _TRACE_ID_BYTES),
        ("spanId", "span_id", _SPAN_ID_BYTES),
        ("parentSpanId", "parent_span_id", _SPAN_ID_BYTES),
    ):
        for key in (camel, snake):
            value = obj.get(key)
            if isinstance(value, str) and value:
                obj[key] = base64.b64encode(_id_bytes(value, size, f"{where}: {camel}")).decode()


def _id_bytes(text: str, size: int, where: str) -> bytes:
    """Hex (the OTLP/JSON spelling) or base64 (protobuf's JSON mapping), told apart by length."""
    if len(text) == 2 * size:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        raise OtlpDecodeError(
            f"{where} {text[:40]!r} is neither {2 * size} hex digits nor base64 of {size} bytes"
        )
    return raw


# --------------------------------------------------------------------------- mapping


def map_request(
    request: ExportTraceServiceRequest,
    route_attributes: Sequence[str] = DEFAULT_ROUTE_ATTRIBUTES,
    problems: Mapping[SpanPosition, str] | None = None,
) -> MappingResult:
    """Every span of an export request as a contract event dict (or a rejection).

    One span never fails the request: a span that cannot be mapped (``problems`` from
    ``parse_json_request``, a value nested too deeply to read …) is rejected alone.
    """
    result = MappingResult()
    problems = problems or {}
    for r, resource_spans in enumerate(request.resource_spans):
        resource = _attributes(resource_spans.resource.attributes)
        for s, scope_spans in enumerate(resource_spans.scope_spans):
            for index, span in enumerate(scope_spans.spans):
                problem = problems.get((r, s, index))
                if problem is not None:
                    result.rejected.append(problem)
                    continue
                try:
                    event = map_span(span, resource, route_attributes)
                except _SpanError as exc:
                    result.rejected.append(str(exc))
                    continue
                except RecursionError:
                    result.rejected.append(
                        f"span {span.trace_id.hex()}/{span.span_id.hex()} ({span.name[:80]!r}): "
                        "a value (tool call arguments?) is nested too deeply to read"
                    )
                    continue
                if event is None:
                    result.ignored += 1
                else:
                    result.events.append(event)
    return result


class _SpanError(ValueError):
    """One span that cannot become an event."""


def map_span(
    span: Span,
    resource: Mapping[str, AnyValue],
    route_attributes: Sequence[str] = DEFAULT_ROUTE_ATTRIBUTES,
) -> dict[str, Any] | None:
    """One span as an event dict; None when it has no GenAI meaning."""
    attrs = _attributes(span.attributes)
    kind = _kind(attrs)
    if kind is None:
        return None
    trace_id, span_id = _ids(span)
    if span.end_time_unix_nano == 0:
        raise _SpanError(f"span {trace_id}/{span_id} ({span.name!r}) has no end time")
    event: dict[str, Any] = {
        "event_id": f"{trace_id}-{span_id}",
        "trace_id": trace_id,
        "span_id": span_id,
        "ts": span.end_time_unix_nano / 1e9,
        "kind": kind,
        "route": _route(span, attrs, resource, route_attributes),
    }
    if len(span.parent_span_id) == _SPAN_ID_BYTES and any(span.parent_span_id):
        event["parent_span_id"] = span.parent_span_id.hex()
    if 0 < span.start_time_unix_nano <= span.end_time_unix_nano:
        event["latency_ms"] = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
    _put_labels(event, attrs, resource)
    _put_counts(event, attrs)
    _put_status(event, span, attrs)
    _put_tool(event, attrs)
    extra: dict[str, str | bool | int | float] = {}
    _put_scores(event, span, attrs, extra)
    event["attributes"] = _bounded_attributes(span, attrs, event, extra)
    return event


def _ids(span: Span) -> tuple[str, str]:
    if len(span.trace_id) != _TRACE_ID_BYTES or not any(span.trace_id):
        raise _SpanError(
            f"span {span.name!r}: trace id {span.trace_id.hex() or '(empty)'} is not "
            "16 bytes with at least one non-zero byte"
        )
    if len(span.span_id) != _SPAN_ID_BYTES or not any(span.span_id):
        raise _SpanError(
            f"span {span.name!r} of trace {span.trace_id.hex()}: span id "
            f"{span.span_id.hex() or '(empty)'} is not 8 bytes with at least one non-zero byte"
        )
    return span.trace_id.hex(), span.span_id.hex()


def _kind(attrs: Mapping[str, AnyValue]) -> str | None:
    explicit = _text(attrs.get("tracewatch.kind"))
    if explicit in _KINDS:
        return explicit
    operation = (_text(attrs.get("gen_ai.operation.name")) or "").strip().lower()
    has_model = _model(attrs) is not None
    if operation:
        if operation in _LLM_OPERATIONS:
            return "llm"
        if operation in _TOOL_OPERATIONS:
            return "tool"
        if operation in _AGENT_OPERATIONS:
            return "agent_step"
        if operation in _RETRIEVAL_OPERATIONS:
            return "retrieval"
        return "llm" if has_model else "agent_step"
    if "gen_ai.tool.name" in attrs:
        return "tool"
    if _EVALUATION_NAME in attrs:
        return "eval"
    if has_model:
        return "llm"
    return None


def _route(
    span: Span,
    attrs: Mapping[str, AnyValue],
    resource: Mapping[str, AnyValue],
    route_attributes: Sequence[str],
) -> str:
    for name in route_attributes:
        for source in (attrs, resource):
            value = (_text(source.get(name)) or "").strip()
            if value:
                return value[:MAX_LABEL]
    service = (_text(resource.get("service.name")) or "").strip()
    name = service or span.name.strip() or "unknown"
    return name[:MAX_LABEL]


def _model(attrs: Mapping[str, AnyValue]) -> str | None:
    return _text(attrs.get("gen_ai.response.model")) or _text(attrs.get("gen_ai.request.model"))


def _put_labels(
    event: dict[str, Any], attrs: Mapping[str, AnyValue], resource: Mapping[str, AnyValue]
) -> None:
    labels = {
        "model": _model(attrs),
        "provider": _text(attrs.get("gen_ai.provider.name")) or _text(attrs.get("gen_ai.system")),
        "session_id": _text(attrs.get("gen_ai.conversation.id")),
        "app": _text(resource.get("service.name")),
    }
    for name in _TRACEWATCH_LABELS:
        value = _text(attrs.get(f"tracewatch.{name}"))
        if value is not None:
            labels[name] = value
    for name, value in labels.items():
        if value:
            event[name] = value[:MAX_LABEL]


def _put_counts(event: dict[str, Any], attrs: Mapping[str, AnyValue]) -> None:
    counts = {
        "input_tokens": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
        "output_tokens": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
        **{name: (f"tracewatch.{name}",) for name in _TRACEWATCH_COUNTS},
    }
    for name, keys in counts.items():
        for key in keys:
            value = _integer(attrs.get(key))
            if value is not None:
                event[name] = value
                break
    cost = _number(attrs.get("tracewatch.cost_usd"))
    if cost is not None:
        event["cost_usd"] = cost


def _put_status(event: dict[str, Any], span: Span, attrs: Mapping[str, AnyValue]) -> None:
    if span.status.code != Status.STATUS_CODE_ERROR:
        return
    error_type = _text(attrs.get("error.type")) or _exception_type(span)
    timeout = error_type is not None and "timeout" in error_type.lower()
    event["status"] = "timeout" if timeout else "error"
    if error_type:
        event["error_type"] = error_type[:MAX_LABEL]


def _exception_type(span: Span) -> str | None:
    for span_event in span.events:
        if span_event.name == "exception":
            found = _text(_attributes(span_event.attributes).get("exception.type"))
            if found:
                return found
    return None


def _put_tool(event: dict[str, Any], attrs: Mapping[str, AnyValue]) -> None:
    name = _text(attrs.get("gen_ai.tool.name"))
    if name:
        event["tool_name"] = name[:MAX_LABEL]
    arguments = attrs.get("gen_ai.tool.call.arguments")
    if arguments is not None:
        event["tool_args_hash"] = args_hash(arguments)


def args_hash(value: AnyValue) -> str:
    """A short hash of tool arguments: equal arguments, however spelled in JSON, hash equal."""
    plain = _plain(value)
    if isinstance(plain, str):
        with contextlib.suppress(ValueError):
            plain = json.loads(plain)
    try:
        canonical = json.dumps(plain, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN inside: hash its repr, still deterministic
        canonical = repr(plain)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _put_scores(
    event: dict[str, Any],
    span: Span,
    attrs: Mapping[str, AnyValue],
    extra: dict[str, str | bool | int | float],
) -> None:
    results: list[tuple[str | None, float | None]] = [
        (_text(attrs.get(_EVALUATION_NAME)), _number(attrs.get(_EVALUATION_SCORE)))
    ]
    for span_event in span.events:
        if span_event.name == _EVALUATION_EVENT:
            found = _attributes(span_event.attributes)
            results.append(
                (_text(found.get(_EVALUATION_NAME)), _number(found.get(_EVALUATION_SCORE)))
            )
    scores: dict[str, float] = {}
    for raw_name, value in results:
        name = score_name(raw_name or "")
        if not name or value is None:
            continue
        if 0.0 <= value <= 1.0:
            if name in scores or len(scores) < MAX_SCORES:
                scores[name] = value
        else:
            extra[f"gen_ai.evaluation.{name}.score.value"] = value
    if scores:
        event["scores"] = scores


def score_name(raw: str) -> str:
    """``IntentResolution`` → ``intent_resolution``: score names are snake_case, as in rules."""
    name = _NOT_WORD.sub("_", _CAMEL.sub("_", raw.strip()).lower()).strip("_")
    if name and not name[0].isalpha():
        name = f"score_{name}"
    return name[:MAX_SCORE_NAME].rstrip("_")


def _bounded_attributes(
    span: Span,
    attrs: Mapping[str, AnyValue],
    event: Mapping[str, Any],
    extra: Mapping[str, str | bool | int | float],
) -> dict[str, str | bool | int | float]:
    kept: dict[str, str | bool | int | float] = {}
    candidates: Iterable[tuple[str, str | bool | int | float | None]] = (
        *((name, _attribute_value(value)) for name, value in attrs.items() if _copied(name)),
        *extra.items(),
        ("otel.span_name", span.name or None),
    )
    request_model = _text(attrs.get("gen_ai.request.model"))
    if request_model and request_model != event.get("model"):
        candidates = (("gen_ai.request.model", request_model[:MAX_ATTRIBUTE_STRING]), *candidates)
    for name, value in candidates:
        if len(kept) >= MAX_ATTRIBUTES:
            break
        if value is not None and 0 < len(name) <= MAX_ATTRIBUTE_NAME:
            kept.setdefault(name, value)
    return kept


def _copied(name: str) -> bool:
    if name in _CONSUMED or name.startswith("tracewatch."):
        return False
    return not is_content(name)


# --------------------------------------------------------------------------- values


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, AnyValue]:
    """Attributes by name; the first of repeated keys wins, as the spec asks of receivers."""
    found: dict[str, AnyValue] = {}
    for pair in pairs:
        found.setdefault(pair.key, pair.value)
    return found


def _text(value: AnyValue | None) -> str | None:
    """A string attribute (or an integer one, for ids sent as numbers)."""
    if value is None:
        return None
    which = value.WhichOneof("value")
    if which == "string_value":
        return str(value.string_value)
    if which == "int_value":
        return str(value.int_value)
    return None


def _integer(value: AnyValue | None) -> int | None:
    if value is None:
        return None
    which = value.WhichOneof("value")
    if which == "int_value":
        return int(value.int_value)
    if which == "double_value" and float(value.double_value).is_integer():
        return int(value.double_value)
    return None


def _number(value: AnyValue | None) -> float | None:
    if value is None:
        return None
    which = value.WhichOneof("value")
    if which == "int_value":
        return float(value.int_value)
    if which == "double_value" and math.isfinite(value.double_value):
        return float(value.double_value)
    return None


def _plain(value: AnyValue) -> Any:
    """An AnyValue as plain Python (bytes as hex), for JSON."""
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_plain(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return {pair.key: _plain(pair.value) for pair in value.kvlist_value.values}
    if which == "bytes_value":
        return bytes(value.bytes_value).hex()
    if which is None:
        return None
    return getattr(value, which)


def _attribute_value(value: AnyValue) -> str | bool | int | float | None:
    """A contract attribute value, or None for what the contract cannot hold."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return str(value.string_value)[:MAX_ATTRIBUTE_STRING]
    if which == "bool_value":
        return bool(value.bool_value)
    if which == "int_value":
        return int(value.int_value)
    if which == "double_value":
        number = float(value.double_value)
        return number if math.isfinite(number) else None
    if which in {"array_value", "kvlist_value"}:
        try:
            text = json.dumps(_plain(value), ensure_ascii=False, allow_nan=False)
        except ValueError:
            return None
        return text[:MAX_ATTRIBUTE_STRING]
    return None  # bytes, or no value at all
