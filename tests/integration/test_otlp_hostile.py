"""Hostile OTLP requests against the real receiver (``tracewatch otlp`` and Kafka).

One bad span must not cost the request's good spans: exporters do not retry a
400 or a 500, so whatever else the request carried would be lost. A span whose
tool arguments nest too deeply and a span whose ids are not ids are rejected alone
(OTLP ``partial_success``: ``rejected_spans`` and the reason), the others arrive.
Many large requests at once are held to a memory budget: the receiver answers 429
with ``Retry-After`` (exporters retry it) instead of taking the machine's memory.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from confluent_kafka import Consumer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracewatch.config import KafkaSettings

pytestmark = pytest.mark.integration

PROTOBUF = "application/x-protobuf"
NESTED = "[" * 100_000 + "]" * 100_000  # valid JSON, 100 000 levels deep


def event_ids(settings: KafkaSettings, n: int, within: float = 30.0) -> list[str]:
    """The event ids on the events topic, once ``n`` arrived (or ``within`` passed)."""
    consumer = Consumer(
        {
            **settings.client_config(),
            "group.id": f"otlp-hostile-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.events_topic])
    ids: list[str] = []
    deadline = time.monotonic() + within
    while len(ids) < n and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            ids.append(json.loads(message.value())["event_id"])
    consumer.close()
    return ids


def json_span(trace_id: str, span_id: str, **attributes: str) -> dict[str, Any]:
    now = time.time_ns()
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "name": "s",
        "startTimeUnixNano": str(now - 1_000_000),
        "endTimeUnixNano": str(now),
        "attributes": [
            {"key": key, "value": {"stringValue": value}} for key, value in attributes.items()
        ],
    }


def post_json(url: str, spans: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {"error": exc.read().decode(errors="replace")}


def test_a_span_with_deeply_nested_arguments_is_rejected_alone(
    receiver_url: str, kafka_settings: KafkaSettings
) -> None:
    trace = uuid.uuid4().hex
    spans = [
        json_span(trace, "00000000000000a1", **{"gen_ai.operation.name": "chat"}),
        json_span(
            trace,
            "00000000000000a2",
            **{"gen_ai.tool.name": "lookup", "gen_ai.tool.call.arguments": NESTED},
        ),
        json_span(trace, "00000000000000a3", **{"gen_ai.operation.name": "chat"}),
    ]
    status, answer = post_json(receiver_url, spans)
    assert status == 200, answer
    assert answer["partialSuccess"]["rejectedSpans"] == "1"
    assert "00000000000000a2" in answer["partialSuccess"]["errorMessage"]
    assert "nested" in answer["partialSuccess"]["errorMessage"]
    ids = event_ids(kafka_settings, 2)
    assert sorted(ids) == [f"{trace}-00000000000000a1", f"{trace}-00000000000000a3"]


def test_a_span_with_a_bad_id_is_rejected_alone(
    receiver_url: str, kafka_settings: KafkaSettings
) -> None:
    trace = uuid.uuid4().hex
    chat = {"gen_ai.operation.name": "chat"}
    spans = [
        json_span(trace, "00000000000000b1", **chat),
        json_span(trace[:30], "00000000000000b2", **chat),  # 15 bytes
        json_span(trace, "00000000000000b3", **chat),
        json_span(trace, "abc", **chat),
        {**json_span(trace, "00000000000000b5", **chat), "parentSpanId": "zz"},
    ]
    status, answer = post_json(receiver_url, spans)
    assert status == 200, answer
    assert answer["partialSuccess"]["rejectedSpans"] == "3"
    message = answer["partialSuccess"]["errorMessage"]
    assert "traceId" in message and "spanId" in message and "parentSpanId" in message
    ids = event_ids(kafka_settings, 2)
    assert sorted(ids) == [f"{trace}-00000000000000b1", f"{trace}-00000000000000b3"]


def big_export(n_spans: int, trace_id: bytes) -> bytes:
    """About 160 bytes per span: chat spans with one ordinary attribute."""
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    now = time.time_ns()
    for i in range(n_spans):
        span = Span(
            trace_id=trace_id,
            span_id=(i + 1).to_bytes(8, "big"),
            name="chat",
            start_time_unix_nano=now - 1_000_000,
            end_time_unix_nano=now,
        )
        span.attributes.extend(
            [
                KeyValue(key="gen_ai.operation.name", value=AnyValue(string_value="chat")),
                KeyValue(key="app.note", value=AnyValue(string_value="x" * 80)),
            ]
        )
        spans.append(span)
    return request.SerializeToString()


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_concurrent_large_requests_are_held_to_a_memory_budget(
    kafka_settings: KafkaSettings, tmp_path: Path, start_otlp: Any
) -> None:
    body = big_export(11_500, bytes.fromhex(uuid.uuid4().hex))
    assert 1.9e6 < len(body) < 2.2e6
    with start_otlp(kafka_settings, tmp_path) as url:
        pid = int((tmp_path / "otlp.pid").read_text())
        before = rss_peak_mb(pid)

        async def send_all() -> list[tuple[int, str | None, bytes]]:
            async with aiohttp.ClientSession() as session:

                async def one() -> tuple[int, str | None, bytes]:
                    headers = {"Content-Type": PROTOBUF}
                    async with session.post(
                        url, data=io.BytesIO(body), headers=headers
                    ) as response:
                        return (
                            response.status,
                            response.headers.get("Retry-After"),
                            (await response.read()),
                        )

                return await asyncio.gather(*(one() for _ in range(16)))

        answers = asyncio.run(send_all())
        after = rss_peak_mb(pid)
    codes = sorted(code for code, _, _ in answers)
    print(f"\n16 x {len(body) / 1e6:.1f} MB at once: peak RSS {before:.0f} -> {after:.0f} MB; "
          f"answers {codes}")  # fmt: skip
    assert set(codes) <= {200, 429}, codes
    assert codes.count(200) >= 1
    for code, retry_after, answer in answers:
        if code == 429:
            assert retry_after is not None and int(retry_after) >= 1
        else:
            assert not ExportTraceServiceResponse.FromString(answer).partial_success.rejected_spans
    assert after - before < 160, f"peak RSS grew {after - before:.0f} MB"


def test_ids_may_also_be_base64(receiver_url: str, kafka_settings: KafkaSettings) -> None:
    """The lenient id decoding still takes protobuf's JSON spelling (base64)."""
    trace = uuid.uuid4().hex
    span = json_span(
        base64.b64encode(bytes.fromhex(trace)).decode(),
        base64.b64encode(bytes.fromhex("00000000000000c1")).decode(),
        **{"gen_ai.operation.name": "chat"},
    )
    status, answer = post_json(receiver_url, [span])
    assert status == 200 and "partialSuccess" not in answer, answer
    assert event_ids(kafka_settings, 1) == [f"{trace}-00000000000000c1"]
