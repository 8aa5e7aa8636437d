"""The OTLP/HTTP trace receiver behind ``tracewatch otlp``.

``POST /v1/traces`` with an ExportTraceServiceRequest, as protobuf
(``application/x-protobuf``) or OTLP/JSON (``application/json``), optionally
gzip-compressed. Each span with a GenAI meaning becomes a contract event
(``tracewatch.otlp.mapping``), validated and produced to the events topic with
the SDK's ``TraceProducer``. The answer waits until Kafka has acknowledged every
event of the request, so nothing a client was told is accepted can be lost; if
Kafka does not acknowledge in time the answer is 503 and the exporter retries
(event ids are derived from the span ids, so a retried span is counted once).

Answers, as the OTLP/HTTP spec has them, in the encoding of the request:

    200  ExportTraceServiceResponse; ``partial_success`` with ``rejected_spans``
         and an ``error_message`` when some spans could not become events
    400  the body is not an ExportTraceServiceRequest (google.rpc.Status)
    413  the body (after decompression) is over ``TRACEWATCH_OTLP_MAX_BODY_BYTES``
    415  a content type other than the two above
    503  Kafka did not acknowledge in ``TRACEWATCH_OTLP_FLUSH_TIMEOUT_S`` (retryable)

One request is produced and flushed at a time: the flush is what makes the
acknowledgement honest, and it also gives backpressure when Kafka is slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tracewatch.config import KafkaSettings, OtlpSettings, Settings
from tracewatch.errors import ConfigError, DeliveryError, InvalidEvent
from tracewatch.otlp.mapping import (
    OtlpDecodeError,
    map_request,
    parse_json_request,
    parse_protobuf_request,
)
from tracewatch.schemas.validation import DEFAULT_MAX_MESSAGE_BYTES
from tracewatch.sdk.producer import TraceProducer

__all__ = ["OtlpReceiver", "ReceiverCounters", "run_receiver"]

log = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
TRACES_PATH = "/v1/traces"
_MAX_MESSAGES = 5


@dataclass
class ReceiverCounters:
    """Totals since start; ``spans == events + rejected + ignored``."""

    requests: int = 0
    spans: int = 0
    events: int = 0
    rejected: int = 0
    ignored: int = 0


class OtlpReceiver:
    """An aiohttp app for ``/v1/traces`` and the producer it feeds; ``start`` / ``stop``."""

    def __init__(
        self,
        otlp: OtlpSettings,
        kafka: KafkaSettings,
        *,
        max_event_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        producer_config: dict[str, Any] | None = None,
    ) -> None:
        self.settings = otlp
        self.kafka = kafka
        self.counters = ReceiverCounters()
        self._producer = TraceProducer(
            settings=kafka, max_message_bytes=max_event_bytes, config=producer_config
        )
        self._route_attributes: Sequence[str] = tuple(otlp.route_attributes)
        self._lock = asyncio.Lock()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        application = web.Application(client_max_size=self.settings.max_body_bytes)
        application.router.add_post(TRACES_PATH, self._export)
        return application

    async def start(self) -> str:
        """Listen; returns the traces URL (with the real port when the setting is 0)."""
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.settings.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"cannot listen on {self.settings.host}:{self.settings.port} "
                f"({exc.strerror or exc}); is another receiver running? "
                "Pick another port with --port or TRACEWATCH_OTLP_PORT"
            ) from None
        self._runner = runner
        addresses = runner.addresses
        self.port = int(addresses[0][1]) if addresses else self.settings.port
        return f"http://{self.settings.host}:{self.port}{TRACES_PATH}"

    async def stop(self) -> None:
        """Finish the requests in flight, then deliver anything still queued."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self._producer.flush, self.settings.flush_timeout_s)
        except DeliveryError as exc:
            log.error("otlp receiver: events not delivered at shutdown: %s", exc)

    async def _export(self, request: web.Request) -> web.Response:
        self.counters.requests += 1
        if request.content_type not in (PROTOBUF, JSON):
            return _status(
                415,
                code_pb2.INVALID_ARGUMENT,
                f"unsupported Content-Type {request.content_type!r}; send {PROTOBUF} or {JSON}",
                JSON,
            )
        encoding = request.content_type
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return _too_large(limit, encoding)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(limit, encoding)
        except RequestPayloadError as exc:  # e.g. a broken gzip stream
            return _status(400, code_pb2.INVALID_ARGUMENT, f"cannot read the body: {exc}", encoding)
        try:
            export = _parse(body, encoding)
        except OtlpDecodeError as exc:
            return _status(400, code_pb2.INVALID_ARGUMENT, str(exc), encoding)
        return await self._accept(export, encoding)

    async def _accept(self, export: ExportTraceServiceRequest, encoding: str) -> web.Response:
        result = map_request(export, self._route_attributes)
        loop = asyncio.get_running_loop()
        async with self._lock:
            try:
                invalid = await loop.run_in_executor(None, self._produce, result.events)
            except DeliveryError as exc:
                log.warning("otlp receiver: Kafka did not acknowledge a request: %s", exc)
                return _status(
                    503,
                    code_pb2.UNAVAILABLE,
                    f"Kafka did not acknowledge the events ({exc}); retry later",
                    encoding,
                    retry_after=2,
                )
        rejected = [*result.rejected, *invalid]
        counters = self.counters
        counters.spans += result.spans
        counters.events += len(result.events) - len(invalid)
        counters.rejected += len(rejected)
        counters.ignored += result.ignored
        response = ExportTraceServiceResponse()
        if rejected:
            log.warning("otlp receiver: %d span(s) rejected; first: %s", len(rejected), rejected[0])
            response.partial_success.rejected_spans = len(rejected)
            response.partial_success.error_message = _summary(rejected)
        return _message(200, response, encoding)

    def _produce(self, events: list[dict[str, Any]]) -> list[str]:
        """Send and flush (in a worker thread); returns the events the validator refused."""
        invalid: list[str] = []
        for event in events:
            try:
                self._producer.send(event)
            except InvalidEvent as exc:
                invalid.append(f"span {event['trace_id']}/{event['span_id']}: {exc}")
        self._producer.flush(self.settings.flush_timeout_s)
        return invalid


def _parse(body: bytes, encoding: str) -> ExportTraceServiceRequest:
    if encoding == PROTOBUF:
        return parse_protobuf_request(body)
    return parse_json_request(body)


def _summary(messages: list[str]) -> str:
    shown = "; ".join(messages[:_MAX_MESSAGES])
    more = len(messages) - _MAX_MESSAGES
    return f"{shown}; and {more} more" if more > 0 else shown


def _too_large(limit: int, encoding: str) -> web.Response:
    return _status(
        413,
        code_pb2.RESOURCE_EXHAUSTED,
        f"the request body is over {limit} bytes (TRACEWATCH_OTLP_MAX_BODY_BYTES); "
        "export smaller batches (the batch span processor's max_export_batch_size)",
        encoding,
    )


def _status(
    http_status: int, code: int, message: str, encoding: str, retry_after: int | None = None
) -> web.Response:
    response = _message(http_status, status_pb2.Status(code=code, message=message), encoding)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _message(http_status: int, message: Any, encoding: str) -> web.Response:
    if encoding == PROTOBUF:
        return web.Response(
            status=http_status, body=message.SerializeToString(), content_type=PROTOBUF
        )
    text = json_format.MessageToJson(message, indent=None)
    return web.Response(status=http_status, text=text, content_type=JSON)


def run_receiver(settings: Settings, ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT (Ctrl-C) or SIGTERM, then finish in-flight requests and flush."""
    asyncio.run(_serve(settings, ready))


async def _serve(settings: Settings, ready: Callable[[str], None] | None) -> None:
    receiver = OtlpReceiver(
        settings.otlp, settings.kafka, max_event_bytes=settings.worker.max_message_bytes
    )
    url = await receiver.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    if ready is not None:
        ready(url)
    try:
        await stop.wait()
    finally:
        await receiver.stop()
        c = receiver.counters
        log.info(
            "otlp receiver stopped: %d requests, %d spans: %d events, %d rejected, %d ignored",
            c.requests,
            c.spans,
            c.events,
            c.rejected,
            c.ignored,
        )
