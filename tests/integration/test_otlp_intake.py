"""OTLP intake end to end: the real OpenTelemetry SDK and OTLP/HTTP exporter send GenAI
spans to ``tracewatch otlp`` (a subprocess), and the events arrive on the events topic."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, Message
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from tracewatch.config import KafkaSettings
from tracewatch.schemas.validation import validate_message

pytestmark = pytest.mark.integration

SECRET = "PROMPT-TEXT-MUST-NOT-BE-STORED"


def read_events(settings: KafkaSettings, n: int, within: float = 30.0) -> list[Message]:
    consumer = Consumer(
        {
            **settings.client_config(),
            "group.id": f"otlp-it-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.events_topic])
    got: list[Message] = []
    deadline = time.monotonic() + within
    while len(got) < n and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            got.append(message)
    # a little longer: nothing beyond the n expected may arrive
    extra_until = time.monotonic() + 2.0
    while time.monotonic() < extra_until:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            got.append(message)
    consumer.close()
    return got


def genai_spans() -> list[ReadableSpan]:
    """An agent run traced with the real SDK: agent step, chat call, tool call, HTTP span."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "otel-support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test-genai")
    with tracer.start_as_current_span("POST /chat", attributes={"http.route": "/chat"}):
        agent_attrs = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "Support Agent",
            "gen_ai.agent.id": "asst_1",
            "gen_ai.conversation.id": "conv_42",
            "tracewatch.route": "agent/support",
        }
        with tracer.start_as_current_span("invoke_agent Support Agent", attributes=agent_attrs):
            chat_attrs = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                "gen_ai.usage.input_tokens": 1200,
                "gen_ai.usage.output_tokens": 230,
                "gen_ai.conversation.id": "conv_42",
                "gen_ai.input.messages": json.dumps([{"role": "user", "content": SECRET}]),
                "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": SECRET}]),
                "gen_ai.response.finish_reasons": ["stop"],
            }
            with tracer.start_as_current_span("chat gpt-4o-mini", attributes=chat_attrs) as chat:
                chat.add_event(
                    "gen_ai.evaluation.result",
                    {
                        "gen_ai.evaluation.name": "Groundedness",
                        "gen_ai.evaluation.score.value": 0.9,
                    },
                )
            tool_attrs = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "lookup_order",
                "gen_ai.tool.call.arguments": json.dumps({"order": SECRET}),
                "error.type": "OrderNotFound",
            }
            with tracer.start_as_current_span(
                "execute_tool lookup_order", attributes=tool_attrs
            ) as t:
                t.set_status(Status(StatusCode.ERROR))
    provider.shutdown()
    return list(memory.get_finished_spans())


def test_spans_from_the_sdk_exporter_arrive_as_events(
    receiver_url: str, kafka_settings: KafkaSettings
) -> None:
    spans = genai_spans()
    assert len(spans) == 4
    exporter = OTLPSpanExporter(endpoint=receiver_url, compression=Compression.Gzip, timeout=30)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    assert exporter.export(spans) == SpanExportResult.SUCCESS  # a re-sent export
    exporter.shutdown()

    messages = read_events(kafka_settings, 6)
    assert len(messages) == 6  # 3 GenAI spans x 2 sends; the HTTP span is not an event
    for message in messages:
        assert SECRET.encode() not in message.value()
        validate_message(message.value())  # as the worker will see them
    events = [json.loads(m.value()) for m in messages]
    assert len({e["event_id"] for e in events}) == 3  # the re-sent ones are duplicates
    by_kind = {e["kind"]: e for e in events}
    assert set(by_kind) == {"agent_step", "llm", "tool"}

    trace_id = format(spans[0].context.trace_id, "032x")
    assert all(e["trace_id"] == trace_id for e in events)
    assert all(m.key() == trace_id.encode() for m in messages)

    agent, llm, tool = by_kind["agent_step"], by_kind["llm"], by_kind["tool"]
    agent_span = next(s for s in spans if s.name.startswith("invoke_agent"))
    assert agent["span_id"] == format(agent_span.context.span_id, "016x")
    assert agent["event_id"] == f"{trace_id}-{agent['span_id']}"
    assert agent["route"] == "agent/support" and agent["session_id"] == "conv_42"
    assert agent["attributes"]["gen_ai.agent.id"] == "asst_1"
    assert llm["parent_span_id"] == agent["span_id"]
    assert llm["route"] == "otel-support-bot"  # no route attribute: service.name
    assert llm["app"] == "otel-support-bot"
    assert llm["model"] == "gpt-4o-mini-2024-07-18" and llm["provider"] == "openai"
    assert (llm["input_tokens"], llm["output_tokens"]) == (1200, 230)
    assert llm["scores"] == {"groundedness": 0.9}
    assert llm["attributes"]["gen_ai.response.finish_reasons"] == '["stop"]'
    chat_span = next(s for s in spans if s.name.startswith("chat"))
    assert chat_span.end_time is not None and chat_span.start_time is not None
    assert llm["ts"] == pytest.approx(chat_span.end_time / 1e9)
    assert llm["latency_ms"] == pytest.approx((chat_span.end_time - chat_span.start_time) / 1e6)
    assert tool["tool_name"] == "lookup_order" and len(tool["tool_args_hash"]) == 16
    assert (tool["status"], tool["error_type"]) == ("error", "OrderNotFound")


def post_json(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as response:
        return response.status, json.loads(response.read())


def test_a_json_body_posted_by_hand(receiver_url: str, kafka_settings: KafkaSettings) -> None:
    trace_id = uuid.uuid4().hex
    now_ns = time.time_ns()

    def span(span_id: str, end_ns: int) -> dict[str, Any]:
        return {
            "traceId": trace_id,
            "spanId": span_id,
            "name": "retrieval docs",
            "kind": 3,
            "startTimeUnixNano": str(now_ns - 40_000_000),
            "endTimeUnixNano": str(end_ns),
            "attributes": [
                {"key": "gen_ai.operation.name", "value": {"stringValue": "retrieval"}},
                {"key": "http.route", "value": {"stringValue": "rag/search"}},
                {"key": "gen_ai.data_source.id", "value": {"stringValue": "kb-7"}},
            ],
        }

    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "rag"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "manual"},
                        "spans": [span("00f067aa0ba902b7", now_ns), span("00f067aa0ba902b8", 0)],
                    }
                ],
            }
        ]
    }
    status, answer = post_json(receiver_url, body)
    assert status == 200
    assert answer["partialSuccess"]["rejectedSpans"] == "1"  # int64 is a string in OTLP/JSON
    assert "no end time" in answer["partialSuccess"]["errorMessage"]

    [message] = read_events(kafka_settings, 1)
    event = json.loads(message.value())
    assert event["trace_id"] == trace_id and event["span_id"] == "00f067aa0ba902b7"
    assert event["kind"] == "retrieval" and event["route"] == "rag/search"
    assert event["latency_ms"] == pytest.approx(40.0)
    assert event["attributes"]["gen_ai.data_source.id"] == "kb-7"
