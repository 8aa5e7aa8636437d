"""The OTLP/HTTP receiver's answers, in-process, with a broker that cannot be reached.

Nothing here needs Kafka to be up: every request either never reaches the
producer (bad body, wrong type, too large, nothing to produce) or proves that
an unacknowledged export is answered 503, never 200.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracewatch.config import KafkaSettings, OtlpSettings
from tracewatch.otlp.receiver import OtlpReceiver

PROTOBUF = "application/x-protobuf"
START = 1_795_341_600_000_000_000


def export(*spans: Span) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.extend(spans)
    return req


def span(span_id: int, **attributes: Any) -> Span:
    s = Span(
        trace_id=bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736"),
        span_id=span_id.to_bytes(8, "big"),
        name="s",
        start_time_unix_nano=START,
        end_time_unix_nano=START + 1_000_000,
    )
    for key, v in attributes.items():
        any_value = AnyValue(int_value=v) if isinstance(v, int) else AnyValue(string_value=v)
        s.attributes.append(KeyValue(key=key.replace("__", "."), value=any_value))
    return s


Call = Callable[[aiohttp.ClientSession, str], Awaitable[None]]


def make_receiver(**settings: Any) -> OtlpReceiver:
    """A receiver on a free port whose producer reaches no broker."""
    otlp = OtlpSettings(**{"port": 0, "flush_timeout_s": 1.0, **settings})
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1")  # nothing listens on port 1
    quiet = {"message.timeout.ms": 1000, "log_level": 0}  # no connection-refused noise
    return OtlpReceiver(otlp, kafka, producer_config=quiet)


def against_receiver(call: Call, **settings: Any) -> OtlpReceiver:
    """Start a receiver on a free port, run ``call(session, url)``, stop it."""
    return run_against(make_receiver(**settings), call)


def run_against(receiver: OtlpReceiver, call: Call) -> OtlpReceiver:
    """Start ``receiver``, run ``call(session, url)``, stop it."""

    async def main() -> None:
        url = await receiver.start()
        try:
            async with aiohttp.ClientSession() as session:
                await call(session, url)
        finally:
            await receiver.stop()

    asyncio.run(main())
    return receiver


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, content_type: str, **headers: str
) -> tuple[int, bytes, aiohttp.typedefs.LooseHeaders]:
    async with session.post(
        url, data=body, headers={"Content-Type": content_type, **headers}
    ) as response:
        return response.status, await response.read(), response.headers


def status_of(body: bytes, content_type: str) -> Any:
    status = status_pb2.Status()
    if content_type == PROTOBUF:
        status.ParseFromString(body)
    else:
        from google.protobuf import json_format

        json_format.Parse(body, status)
    return status


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "rebound.example:4318"},  # a page on a DNS name pointed at 127.0.0.1
        {"Host": "127.0.0.1:1"},  # the right name, another port: not us
        {"Origin": "http://127.0.0.1:8000"},  # a page on another local port
        {"Origin": "null"},
    ],
)
def test_requests_from_web_pages_are_403_before_the_body_is_read(headers: dict[str, str]) -> None:
    """DNS rebinding makes a page "same-origin" with the receiver; its ``Host`` (or its
    ``Origin``) still says it is no exporter. Nothing of the body is produced."""

    async def call(session: aiohttp.ClientSession, url: str) -> None:
        body = export(span(1)).SerializeToString()
        code, answer, _ = await post(session, url, body, "application/json", **headers)
        assert code == 403, answer
        assert "exporter" in status_of(answer, "application/json").message or (
            "TRACEWATCH_OTLP_ALLOWED_HOSTS" in status_of(answer, "application/json").message
        )

    receiver = against_receiver(call)
    assert receiver.counters.refused == 1 and receiver.counters.spans == 0


def test_a_configured_host_name_is_served() -> None:
    async def call(session: aiohttp.ClientSession, url: str) -> None:
        port = url.split(":")[2].split("/")[0]
        code, _, _ = await post(
            session, url, b"{", "application/json", Host=f"otlp.internal:{port}"
        )
        assert code == 400  # past the door: the body is read and refused as a body

    receiver = against_receiver(call, allowed_hosts=("otlp.internal",))
    assert receiver.counters.refused == 0


def test_a_wildcard_bind_without_names_checks_no_host() -> None:
    """Bound to every interface, remote exporters use names the receiver cannot know."""
    from tracewatch.otlp.receiver import _served_hosts

    assert _served_hosts(OtlpSettings(host="0.0.0.0"), 4318) is None
    named = _served_hosts(OtlpSettings(host="0.0.0.0", allowed_hosts=("otlp.internal",)), 4318)
    assert named is not None and "otlp.internal:4318" in named and "127.0.0.1:4318" in named
    local = _served_hosts(OtlpSettings(), 4318)
    assert local is not None and "localhost:4318" in local and "0.0.0.0:4318" not in local


def test_unsupported_content_type_is_415() -> None:
    async def call(session: aiohttp.ClientSession, url: str) -> None:
        code, body, _ = await post(session, url, b"hello", "text/plain")
        assert code == 415
        assert "application/x-protobuf" in status_of(body, "application/json").message

    against_receiver(call)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [(PROTOBUF, b"\x0a\xff\xff\xff\xff\x0f garbage"), ("application/json", b"{not json")],
)
def test_unparsable_bodies_are_400_with_a_status_in_the_same_encoding(
    content_type: str, body: bytes
) -> None:
    async def call(session: aiohttp.ClientSession, url: str) -> None:
        code, answer, headers = await post(session, url, body, content_type)
        assert code == 400 and headers["Content-Type"].startswith(content_type)
        status = status_of(answer, content_type)
        assert status.code == code_pb2.INVALID_ARGUMENT and status.message

    against_receiver(call)


def test_bodies_over_the_limit_are_413_also_after_decompression() -> None:
    big = export(*(span(i + 1, padding="x" * 100) for i in range(100))).SerializeToString()
    assert len(big) > 4096 and len(gzip.compress(big)) < 4096

    async def call(session: aiohttp.ClientSession, url: str) -> None:
        code, answer, _ = await post(session, url, big, PROTOBUF)
        assert code == 413 and "4096" in status_of(answer, PROTOBUF).message
        code, _, _ = await post(
            session, url, gzip.compress(big), PROTOBUF, **{"Content-Encoding": "gzip"}
        )
        assert code == 413

    against_receiver(call, max_body_bytes=4096)


def test_gzip_bodies_are_read_and_a_broken_stream_is_400() -> None:
    http_only = export(span(1, http__route="/x")).SerializeToString()

    async def call(session: aiohttp.ClientSession, url: str) -> None:
        code, answer, _ = await post(
            session, url, gzip.compress(http_only), PROTOBUF, **{"Content-Encoding": "gzip"}
        )
        assert code == 200 and answer == b""  # an empty response: nothing rejected
        code, _, _ = await post(
            session, url, b"\x1f\x8b not gzip", PROTOBUF, **{"Content-Encoding": "gzip"}
        )
        assert code == 400

    receiver = against_receiver(call)
    assert (receiver.counters.spans, receiver.counters.ignored) == (1, 1)


def test_spans_that_cannot_be_events_are_a_partial_success() -> None:
    no_end = span(1, gen_ai__operation__name="chat")
    no_end.end_time_unix_nano = 0
    negative = span(2, gen_ai__operation__name="chat", gen_ai__usage__input_tokens=-5)
    body = export(no_end, negative, span(3, http__route="/x")).SerializeToString()

    async def call(session: aiohttp.ClientSession, url: str) -> None:
        code, answer, _ = await post(session, url, body, PROTOBUF)
        assert code == 200
        response = ExportTraceServiceResponse.FromString(answer)
        assert response.partial_success.rejected_spans == 2
        message = response.partial_success.error_message
        assert "no end time" in message and "negative_number" in message

        code, answer, _ = await post(
            session, url, json.dumps({"resourceSpans": []}).encode(), "application/json"
        )
        assert code == 200 and json.loads(answer) == {}

    receiver = against_receiver(call)
    assert receiver.counters.rejected == 2 and receiver.counters.events == 0


def test_an_export_kafka_did_not_acknowledge_is_503_so_the_exporter_retries() -> None:
    body = export(span(1, gen_ai__operation__name="chat")).SerializeToString()

    async def call(session: aiohttp.ClientSession, url: str) -> None:
        code, answer, headers = await post(session, url, body, PROTOBUF)
        assert code == 503 and headers["Retry-After"]
        status = status_of(answer, PROTOBUF)
        assert status.code == code_pb2.UNAVAILABLE and "retry" in status.message

    receiver = against_receiver(call)
    assert receiver.counters.events == 0


def test_only_post_on_the_traces_path() -> None:
    async def call(session: aiohttp.ClientSession, url: str) -> None:
        async with session.get(url) as response:
            assert response.status == 405
        async with session.post(url.replace("/v1/traces", "/v1/logs")) as response:
            assert response.status == 404

    against_receiver(call)


def _gzip_cases() -> dict[str, bytes]:
    http_only = export(span(1, http__route="/x"), span(2, http__route="/y")).SerializeToString()
    whole = gzip.compress(http_only)
    bad_crc = bytearray(whole)
    bad_crc[-8] ^= 0xFF  # the CRC32 of the trailer
    return {
        "no trailer (CRC, size)": whole[:-8],
        "cut in the middle": whole[: len(whole) // 2],
        "wrong CRC": bytes(bad_crc),
        "trailing garbage": whole + b"garbage",
        "header only": whole[:10],
    }


@pytest.mark.parametrize("case", list(_gzip_cases()))
def test_a_gzip_stream_that_is_not_whole_is_400(case: str) -> None:
    body = _gzip_cases()[case]

    async def call(session: aiohttp.ClientSession, url: str) -> None:
        code, answer, _ = await post(session, url, body, PROTOBUF, **{"Content-Encoding": "gzip"})
        assert code == 400, case
        assert "gzip" in status_of(answer, PROTOBUF).message

    receiver = against_receiver(call)
    assert receiver.counters.spans == 0


def test_gzip_members_in_a_row_are_one_body() -> None:
    """RFC 1952: a gzip file may hold several members; their data is concatenated."""
    first = export(span(1, http__route="/x")).SerializeToString()
    second = export(span(2, http__route="/y")).SerializeToString()
    body = gzip.compress(first) + gzip.compress(second)  # protobuf: concatenation merges

    async def call(session: aiohttp.ClientSession, url: str) -> None:
        code, _, _ = await post(session, url, body, PROTOBUF, **{"Content-Encoding": "gzip"})
        assert code == 200

    receiver = against_receiver(call)
    assert (receiver.counters.spans, receiver.counters.ignored) == (2, 2)


def test_a_gzip_bomb_is_413_without_inflating_it() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)

    async def call(session: aiohttp.ClientSession, url: str) -> None:
        code, _, _ = await post(session, url, bomb, PROTOBUF, **{"Content-Encoding": "gzip"})
        assert code == 413

    against_receiver(call)


def test_requests_over_the_memory_budget_wait_then_get_429_with_retry_after() -> None:
    """The budget admits one request at a time here; the others wait, then are told to
    come back (429 and Retry-After, which OTLP exporters retry) rather than all being
    read and parsed at once."""
    body = export(*(span(i + 1, http__route="/x") for i in range(200))).SerializeToString()

    async def call(session: aiohttp.ClientSession, url: str) -> None:
        receiver.budget.hold(len(body))  # as if another request were being read
        try:
            code, answer, headers = await post(session, url, body, PROTOBUF)
        finally:
            receiver.budget.release(len(body))
        assert code == 429 and int(headers["Retry-After"]) >= 1
        status = status_of(answer, PROTOBUF)
        assert status.code == code_pb2.RESOURCE_EXHAUSTED
        assert "TRACEWATCH_OTLP_MAX_INFLIGHT_BYTES" in status.message
        code, _, _ = await post(session, url, body, PROTOBUF)  # the budget is free again
        assert code == 200

    receiver = make_receiver(
        max_inflight_bytes=len(body), inflight_wait_s=0.2, flush_timeout_s=10.0
    )
    run_against(receiver, call)
    assert receiver.counters.throttled == 1
