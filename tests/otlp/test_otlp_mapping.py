"""OTLP spans to contract events: every mapping rule, both body encodings, content never copied."""

from __future__ import annotations

import ast
import base64
import json
import math
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tracewatch.otlp import (
    CONTENT_ATTRIBUTES,
    OtlpDecodeError,
    map_request,
    parse_json_request,
    parse_protobuf_request,
)
from tracewatch.otlp.mapping import args_hash, score_name
from tracewatch.schemas.validation import validate_message

TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
START = 1_795_341_600_000_000_000  # 2026-11-22T10:00:00Z in ns


def value(v: Any) -> AnyValue:
    if isinstance(v, AnyValue):
        return v
    if v is None:
        return AnyValue()
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    if isinstance(v, list):
        return AnyValue(array_value=ArrayValue(values=[value(x) for x in v]))
    if isinstance(v, dict):
        pairs = [KeyValue(key=k, value=value(x)) for k, x in v.items()]
        return AnyValue(kvlist_value=KeyValueList(values=pairs))
    return AnyValue(string_value=str(v))


def attrs(mapping: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=value(v)) for k, v in mapping.items()]


def span(
    attributes: dict[str, Any] | None = None,
    *,
    span_id: int = 1,
    parent: int | None = None,
    name: str = "chat gpt-4o",
    duration_ms: float = 812.0,
    status: int = Status.STATUS_CODE_UNSET,
    events: list[Span.Event] | None = None,
    trace: bytes = TRACE,
) -> Span:
    s = Span(
        trace_id=trace,
        span_id=span_id.to_bytes(8, "big"),
        name=name,
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=START,
        end_time_unix_nano=START + int(duration_ms * 1e6),
        attributes=attrs(attributes or {}),
        status=Status(code=status),  # type: ignore[arg-type]
        events=events or [],
    )
    if parent is not None:
        s.parent_span_id = parent.to_bytes(8, "big")
    return s


def request(*spans: Span, resource: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(attrs({"service.name": "support-bot", **(resource or {})}))
    rs.scope_spans.add().spans.extend(spans)
    return req


def one(s: Span, **kwargs: Any) -> dict[str, Any]:
    result = map_request(request(s, **kwargs))
    assert not result.rejected and result.ignored == 0
    [event] = result.events
    validate_message(json.dumps(event).encode())  # every mapped event passes the contract
    return event


CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.provider.name": "openai",
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.output_tokens": 230,
    "gen_ai.conversation.id": "conv_5j66",
    "gen_ai.response.id": "chatcmpl-123",
    "gen_ai.request.temperature": 0.2,
    "tracewatch.route": "support/chat",
}


def test_a_chat_span_becomes_an_llm_event() -> None:
    event = one(span(CHAT, span_id=0xA1, parent=0xB2))
    assert event["trace_id"] == TRACE.hex()
    assert event["span_id"] == "00000000000000a1"
    assert event["parent_span_id"] == "00000000000000b2"
    assert event["event_id"] == f"{TRACE.hex()}-00000000000000a1"
    assert event["ts"] == pytest.approx(START / 1e9 + 0.812)
    assert event["latency_ms"] == pytest.approx(812.0)
    assert event["kind"] == "llm"
    assert event["route"] == "support/chat"
    assert event["model"] == "gpt-4o-2024-08-06"  # the model that ran
    assert event["provider"] == "openai"
    assert (event["input_tokens"], event["output_tokens"]) == (1200, 230)
    assert event["session_id"] == "conv_5j66"
    assert event["app"] == "support-bot"
    assert "status" not in event and "cost_usd" not in event
    assert event["attributes"] == {
        "gen_ai.request.model": "gpt-4o",  # differs from the response model: kept
        "gen_ai.operation.name": "chat",
        "gen_ai.response.id": "chatcmpl-123",
        "gen_ai.request.temperature": 0.2,
        "otel.span_name": "chat gpt-4o",
    }


def test_a_root_span_has_no_parent_and_the_request_model_serves_alone() -> None:
    attributes = {k: v for k, v in CHAT.items() if k != "gen_ai.response.model"}
    event = one(span(attributes))
    assert "parent_span_id" not in event
    assert event["model"] == "gpt-4o"
    assert "gen_ai.request.model" not in event["attributes"]


@pytest.mark.parametrize(
    ("operation", "kind"),
    [
        ("chat", "llm"),
        ("text_completion", "llm"),
        ("generate_content", "llm"),
        ("embeddings", "llm"),
        ("execute_tool", "tool"),
        ("invoke_agent", "agent_step"),
        ("create_agent", "agent_step"),
        ("invoke_workflow", "agent_step"),
        ("retrieval", "retrieval"),
        ("search", "retrieval"),
        ("rerank", "retrieval"),
        ("Chat", "llm"),
        ("my_custom_step", "agent_step"),
    ],
)
def test_operation_name_gives_the_kind(operation: str, kind: str) -> None:
    assert one(span({"gen_ai.operation.name": operation}))["kind"] == kind


def test_an_unknown_operation_with_a_model_is_an_llm_call() -> None:
    event = one(span({"gen_ai.operation.name": "summarize", "gen_ai.request.model": "m"}))
    assert event["kind"] == "llm"


@pytest.mark.parametrize(
    ("attributes", "kind"),
    [
        ({"gen_ai.tool.name": "web_search"}, "tool"),
        ({"gen_ai.evaluation.name": "Relevance", "gen_ai.evaluation.score.value": 0.5}, "eval"),
        ({"gen_ai.request.model": "gpt-4o-mini", "gen_ai.system": "openai"}, "llm"),
        ({"gen_ai.operation.name": "chat", "tracewatch.kind": "guardrail"}, "guardrail"),
    ],
)
def test_kind_without_an_operation_name_or_set_explicitly(
    attributes: dict[str, Any], kind: str
) -> None:
    assert one(span(attributes))["kind"] == kind


def test_spans_without_genai_meaning_are_ignored_not_rejected() -> None:
    http = span({"http.route": "/chat", "http.request.method": "POST"}, span_id=1, name="POST")
    chat = span(CHAT, span_id=2, parent=1)
    result = map_request(request(http, chat))
    assert result.ignored == 1 and not result.rejected
    assert [e["span_id"] for e in result.events] == ["0000000000000002"]
    assert result.spans == 2


@pytest.mark.parametrize(
    ("span_attributes", "resource", "route"),
    [
        ({"tracewatch.route": "a", "http.route": "b", "gen_ai.agent.name": "c"}, {}, "a"),
        ({"http.route": "b", "gen_ai.agent.name": "c"}, {}, "b"),
        ({"gen_ai.agent.name": "Math Tutor"}, {}, "Math Tutor"),
        ({}, {"tracewatch.route": "from-resource"}, "from-resource"),
        ({"tracewatch.route": "  "}, {}, "support-bot"),  # blank: next candidate
        ({}, {}, "support-bot"),  # service.name
    ],
)
def test_route_candidates_in_order(
    span_attributes: dict[str, Any], resource: dict[str, Any], route: str
) -> None:
    s = span({"gen_ai.operation.name": "chat", **span_attributes})
    assert one(s, resource=resource)["route"] == route


def test_route_falls_back_to_the_span_name_and_is_configurable() -> None:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.scope_spans.add().spans.extend(
        [span({"gen_ai.operation.name": "chat", "custom.route": "x" * 300}, name="chat gpt-4o")]
    )
    assert map_request(req).events[0]["route"] == "chat gpt-4o"
    assert map_request(req).events[0].get("app") is None
    routed = map_request(req, route_attributes=["custom.route"]).events[0]["route"]
    assert routed == "x" * 256  # the contract's route limit


def test_provider_prefers_the_current_attribute_over_gen_ai_system() -> None:
    both = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "aws.bedrock"}
    assert one(span({**both, "gen_ai.system": "anthropic"}))["provider"] == "aws.bedrock"
    older = {"gen_ai.operation.name": "chat", "gen_ai.system": "anthropic"}
    assert one(span(older))["provider"] == "anthropic"
    assert "gen_ai.system" not in one(span(older))["attributes"]


def test_older_token_names_and_integral_doubles_are_read() -> None:
    event = one(
        span(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.usage.prompt_tokens": 10,
                "gen_ai.usage.completion_tokens": 5.0,
            }
        )
    )
    assert (event["input_tokens"], event["output_tokens"]) == (10, 5)
    assert isinstance(event["output_tokens"], int)


def test_tracewatch_attributes_set_contract_fields() -> None:
    event = one(
        span(
            {
                "gen_ai.operation.name": "invoke_agent",
                "tracewatch.app": "coder",
                "tracewatch.prompt_version": "v13",
                "tracewatch.cohort": "beta",
                "tracewatch.loop_depth": 7,
                "tracewatch.retry_count": 2,
                "tracewatch.cost_usd": 0.0123,
                "tracewatch.unknown": "dropped",
            }
        )
    )
    assert event["app"] == "coder"  # over service.name
    assert (event["prompt_version"], event["cohort"]) == ("v13", "beta")
    assert (event["loop_depth"], event["retry_count"], event["cost_usd"]) == (7, 2, 0.0123)
    assert not any(k.startswith("tracewatch.") for k in event["attributes"])


def test_tool_arguments_are_hashed_never_stored() -> None:
    secret = '{"query": "my card number 4111", "page": 2}'
    event = one(
        span(
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "web_search",
                "gen_ai.tool.call.arguments": secret,
                "gen_ai.tool.call.id": "call_1",
            }
        )
    )
    assert event["kind"] == "tool" and event["tool_name"] == "web_search"
    assert len(event["tool_args_hash"]) == 16
    assert "4111" not in json.dumps(event)
    assert event["attributes"]["gen_ai.tool.call.id"] == "call_1"
    # the same arguments, spelled differently or sent structured, hash the same
    assert args_hash(value('{"page":2,"query":"my card number 4111"}')) == event["tool_args_hash"]
    structured = value({"page": 2, "query": "my card number 4111"})
    assert args_hash(structured) == event["tool_args_hash"]
    assert (
        args_hash(value('{"page": 3, "query": "my card number 4111"}')) != event["tool_args_hash"]
    )
    assert args_hash(value("not json")) == args_hash(value("not json"))


def evaluation(name: str, score: float) -> Span.Event:
    return Span.Event(
        name="gen_ai.evaluation.result",
        time_unix_nano=START,
        attributes=attrs(
            {
                "gen_ai.evaluation.name": name,
                "gen_ai.evaluation.score.value": score,
                "gen_ai.evaluation.explanation": "the answer quotes the user's address",
            }
        ),
    )


def test_evaluation_results_become_scores() -> None:
    events = [
        evaluation("Groundedness", 0.91),
        evaluation("IntentResolution", 1),
        evaluation("Relevance", 4.0),  # a 1-5 scale: skipped, raw value kept
        evaluation("", 0.5),  # no name: skipped
    ]
    event = one(span({"gen_ai.operation.name": "chat"}, events=events))
    assert event["scores"] == {"groundedness": 0.91, "intent_resolution": 1.0}
    assert event["attributes"]["gen_ai.evaluation.relevance.score.value"] == 4.0
    assert "address" not in json.dumps(event)


def test_an_evaluation_span_carries_its_own_score() -> None:
    event = one(
        span({"gen_ai.evaluation.name": "hallucination", "gen_ai.evaluation.score.value": 0.1})
    )
    assert event["kind"] == "eval" and event["scores"] == {"hallucination": 0.1}


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("Groundedness", "groundedness"),
        ("IntentResolution", "intent_resolution"),
        ("context relevance", "context_relevance"),
        ("task-completion", "task_completion"),
        ("2nd_opinion", "score_2nd_opinion"),
        ("!!!", ""),
    ],
)
def test_score_names_are_snake_case(raw: str, name: str) -> None:
    assert score_name(raw) == name


def test_error_status_with_error_type() -> None:
    attributes = {"gen_ai.operation.name": "chat", "error.type": "RateLimitError"}
    event = one(span(attributes, status=Status.STATUS_CODE_ERROR))
    assert (event["status"], event["error_type"]) == ("error", "RateLimitError")


def test_error_type_from_the_exception_event_and_timeouts() -> None:
    exception = Span.Event(
        name="exception",
        attributes=attrs(
            {"exception.type": "openai.APITimeoutError", "exception.message": "user said: hi"}
        ),
    )
    event = one(
        span({"gen_ai.operation.name": "chat"}, status=Status.STATUS_CODE_ERROR, events=[exception])
    )
    assert (event["status"], event["error_type"]) == ("timeout", "openai.APITimeoutError")
    assert "user said" not in json.dumps(event)


def test_error_type_without_an_error_status_is_only_an_attribute() -> None:
    event = one(span({"gen_ai.operation.name": "chat", "error.type": "x"}))
    assert "status" not in event and event["attributes"]["error.type"] == "x"


CONTENT = {
    "gen_ai.input.messages": '[{"role": "user", "parts": [{"content": "SECRET-1"}]}]',
    "gen_ai.output.messages": '[{"role": "assistant", "parts": [{"content": "SECRET-2"}]}]',
    "gen_ai.system_instructions": "SECRET-3",
    "gen_ai.prompt": "SECRET-4",
    "gen_ai.prompt.0.content": "SECRET-5",
    "gen_ai.completion.0.content": "SECRET-6",
    "gen_ai.tool.call.result": "SECRET-7",
    "gen_ai.tool.definitions": "SECRET-8",
    "gen_ai.retrieval.query.text": "SECRET-9",
    "gen_ai.retrieval.documents": "SECRET-10",
    "llm.prompts.0.content": "SECRET-11",
    "input.value": "SECRET-12",
    "output.value": "SECRET-13",
}


def test_prompt_and_completion_content_is_never_copied() -> None:
    structured = value([{"role": "user", "parts": [{"content": "SECRET-14"}]}])
    attributes = {
        "gen_ai.operation.name": "chat",
        **CONTENT,
        "gen_ai.input.messages": structured,
        "gen_ai.prompt.name": "analyze-code",
    }
    event = one(span(attributes))
    assert "SECRET" not in json.dumps(event)
    assert event["attributes"]["gen_ai.prompt.name"] == "analyze-code"  # an identifier, kept
    for name in CONTENT_ATTRIBUTES:
        assert not any(
            key.startswith(name) for key in event["attributes"] if key != "gen_ai.prompt.name"
        )


def test_attributes_are_bounded_as_the_contract_says() -> None:
    many = {f"app.attr_{i:03d}": i for i in range(100)}
    attributes = {
        "gen_ai.operation.name": "chat",
        "long.string": "x" * 5000,
        "n" * 129: "dropped: name too long",
        "n" * 128: "kept",
        "finish": ["stop", "length"],
        "nested": {"a": 1, "b": [True, None]},
        "raw.bytes": b"\x00\x01",
        "not.finite": math.nan,
        "flag": True,
        **many,
    }
    event = one(span(attributes))
    kept = event["attributes"]
    assert len(kept) == 64
    assert kept["long.string"] == "x" * 1024
    assert "n" * 129 not in kept and kept["n" * 128] == "kept"
    assert kept["finish"] == '["stop", "length"]'
    assert json.loads(kept["nested"]) == {"a": 1, "b": [True, None]}
    assert "raw.bytes" not in kept and "not.finite" not in kept
    assert kept["flag"] is True
    assert "app.attr_000" in kept and "app.attr_099" not in kept  # first in span order win


def test_spans_that_cannot_be_events_are_rejected_one_by_one() -> None:
    good = span(CHAT, span_id=1)
    zero_trace = span(CHAT, span_id=2, trace=bytes(16))
    short_trace = span(CHAT, span_id=3, trace=b"\x01" * 8)
    zero_span = span(CHAT, span_id=0)
    no_end = span(CHAT, span_id=5)
    no_end.end_time_unix_nano = 0
    result = map_request(request(good, zero_trace, short_trace, zero_span, no_end))
    assert len(result.events) == 1 and len(result.rejected) == 4
    assert "trace id" in result.rejected[0] and "non-zero" in result.rejected[0]
    assert "span id" in result.rejected[2]
    assert "no end time" in result.rejected[3]


def test_missing_start_time_means_no_latency() -> None:
    s = span(CHAT)
    s.start_time_unix_nano = 0
    assert "latency_ms" not in one(s)


def test_the_same_span_sent_twice_is_the_same_event() -> None:
    first = one(span(CHAT, span_id=7))
    again = one(span(CHAT, span_id=7))
    other = one(span(CHAT, span_id=8))
    assert first == again and first["event_id"] != other["event_id"]


# --------------------------------------------------------------------------- bodies


def sample() -> ExportTraceServiceRequest:
    link = Span.Link(trace_id=TRACE, span_id=(9).to_bytes(8, "big"))
    root = span({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "coder"}, span_id=1)
    child = span(CHAT, span_id=2, parent=1, events=[evaluation("Groundedness", 0.8)])
    child.links.append(link)
    return request(root, child)


def otlp_json(req: ExportTraceServiceRequest) -> dict[str, Any]:
    """The OTLP/JSON spelling: protobuf's JSON mapping with ids as hex, not base64."""
    data: dict[str, Any] = json_format.MessageToDict(req)
    for rs in data["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                for obj in [s, *s.get("links", [])]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in obj:
                            obj[key] = base64.b64decode(obj[key]).hex()
    return data


def test_protobuf_and_json_bodies_give_the_same_events() -> None:
    req = sample()
    from_protobuf = map_request(parse_protobuf_request(req.SerializeToString()))
    data = otlp_json(req)
    assert data["resourceSpans"][0]["scopeSpans"][0]["spans"][1]["traceId"] == TRACE.hex()
    from_json = map_request(parse_json_request(json.dumps(data).encode()))
    assert from_json.events == from_protobuf.events == map_request(req).events
    assert parse_json_request(json.dumps(data).encode()) == req  # links' ids too


def test_json_bodies_with_base64_ids_and_snake_case_names_are_accepted() -> None:
    req = sample()
    as_base64 = json_format.MessageToJson(req, preserving_proto_field_name=True)
    assert '"trace_id"' in as_base64
    assert parse_json_request(as_base64.encode()) == req


def test_json_enums_as_integers_int64_as_strings_and_unknown_fields() -> None:
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "s"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": TRACE.hex().upper(),
                                "spanId": "00f067aa0ba902b7",
                                "parentSpanId": "",
                                "name": "chat",
                                "kind": 3,
                                "startTimeUnixNano": str(START),
                                "endTimeUnixNano": str(START + 5_000_000),
                                "attributes": [
                                    {
                                        "key": "gen_ai.operation.name",
                                        "value": {"stringValue": "chat"},
                                    },
                                    {
                                        "key": "gen_ai.usage.input_tokens",
                                        "value": {"intValue": "42"},
                                    },
                                ],
                                "status": {"code": 2},
                                "futureField": {"x": 1},
                            }
                        ]
                    }
                ],
            }
        ]
    }
    [event] = map_request(parse_json_request(json.dumps(body).encode())).events
    assert event["trace_id"] == TRACE.hex() and event["span_id"] == "00f067aa0ba902b7"
    assert event["input_tokens"] == 42 and event["status"] == "error"
    assert event["latency_ms"] == pytest.approx(5.0)
    assert "parent_span_id" not in event


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "an object"),
        (b'{"resourceSpans": "nope"}', "ExportTraceServiceRequest"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}', "traceId"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "abcd"}]}]}]}', "spanId"),
    ],
)
def test_bad_json_bodies_say_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(OtlpDecodeError, match=message):
        parse_json_request(body)


def test_bad_protobuf_bodies_are_refused() -> None:
    with pytest.raises(OtlpDecodeError, match="protobuf"):
        parse_protobuf_request(b"\x0a\xff\xff\xff\xff\x0f garbage")


def test_an_empty_protobuf_body_is_an_empty_export() -> None:
    assert map_request(parse_protobuf_request(b"")).spans == 0


def test_the_mapping_imports_no_io_library() -> None:
    source = Path(__file__).resolve().parents[2] / "tracewatch" / "otlp" / "mapping.py"
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert not roots & {"aiohttp", "confluent_kafka", "faust", "aiokafka", "clickhouse_connect"}
    assert "google" in roots  # the check sees imports


def test_a_span_whose_arguments_nest_too_deeply_is_rejected_alone() -> None:
    nested = "[" * 100_000 + "]" * 100_000
    deep = span({"gen_ai.tool.name": "t", "gen_ai.tool.call.arguments": nested}, span_id=2)
    result = map_request(request(span(CHAT, span_id=1), deep, span(CHAT, span_id=3)))
    assert [e["span_id"] for e in result.events] == [f"{1:016x}", f"{3:016x}"]
    [reason] = result.rejected
    assert f"{2:016x}" in reason and "nested" in reason


def test_json_spans_with_bad_ids_are_rejected_alone_when_asked() -> None:
    chat = [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}}]
    good = {"traceId": TRACE.hex(), "endTimeUnixNano": "5", "name": "s", "attributes": chat}
    spans = [
        {**good, "spanId": f"{1:016x}"},
        {**good, "spanId": "abc"},
        {**good, "spanId": f"{3:016x}", "traceId": "00ff"},
        {**good, "spanId": f"{4:016x}", "links": [{"traceId": TRACE.hex(), "spanId": "x"}]},
        {**good, "spanId": f"{5:016x}"},
    ]
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()
    with pytest.raises(OtlpDecodeError, match="spanId"):
        parse_json_request(body)  # the strict form, as before
    problems: dict[tuple[int, int, int], str] = {}
    result = map_request(parse_json_request(body, problems), problems=problems)
    assert [e["span_id"] for e in result.events] == [f"{1:016x}", f"{5:016x}"]
    assert len(result.rejected) == 3
    assert "span 1: spanId 'abc'" in result.rejected[0]
    assert "span 2: traceId '00ff'" in result.rejected[1]
    assert "a link of span 3: spanId 'x'" in result.rejected[2]
