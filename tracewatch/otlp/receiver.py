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
    400  the body is not an ExportTraceServiceRequest (google.rpc.Status), or its
         gzip stream is not whole (cut short, wrong CRC, bytes after it)
    413  the body (after decompression) is over ``TRACEWATCH_OTLP_MAX_BODY_BYTES``
    415  a content type other than the two above, or a Content-Encoding other than
         gzip, deflate or none
    429  the bodies in flight already fill ``TRACEWATCH_OTLP_MAX_INFLIGHT_BYTES`` and
         none finished within ``TRACEWATCH_OTLP_INFLIGHT_WAIT_S`` (retryable, Retry-After)
    503  Kafka did not acknowledge in ``TRACEWATCH_OTLP_FLUSH_TIMEOUT_S`` (retryable)

One bad span never fails its request: a span that cannot become an event (an id of
the wrong length in OTLP/JSON, arguments nested too deeply to read, a value the
contract refuses) is counted as rejected and named in ``partial_success``; the
others are produced. Exporters do not retry a 400 or a 500, so failing the whole
request would lose its good spans.

One request is produced and flushed at a time: the flush is what makes the
acknowledgement honest, and it also gives backpressure when Kafka is slow. Bodies
are read, inflated (``tracewatch.otlp.body``) and parsed within a memory budget
(``tracewatch.otlp.budget``), so many large requests at once wait or are told to
retry instead of taking the machine's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tracewatch.config import KafkaSettings, OtlpSettings, Settings
from tracewatch.errors import ConfigError, DeliveryError, InvalidEvent
from tracewatch.otlp.body import ENCODINGS, BodyTooLarge, decode_body
from tracewatch.otlp.budget import InflightBudget
from tracewatch.otlp.mapping import (
    OtlpDecodeError,
    SpanPosition,
    map_request,
    parse_json_request,
    parse_protobuf_request,
)
from tracewatch.schemas.validation import DEFAULT_MAX_MESSAGE_BYTES
from tracewatch.sdk.producer import TraceProducer
from tracewatch.streams.web_access import allowed_hosts, check_host

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
    #: requests answered 429 because the memory budget stayed full
    throttled: int = 0
    #: requests answered 403: a foreign ``Host`` or an ``Origin`` (a web page, not an exporter)
    refused: int = 0
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
        self.budget = InflightBudget(otlp.max_inflight_bytes)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        #: the ``Host`` values served (known once listening); None: not checked
        self._hosts: frozenset[str] | None = None

    def app(self) -> web.Application:
        application = web.Application(client_max_size=self.settings.max_body_bytes)
        application.router.add_post(TRACES_PATH, self._export)
        return application

    async def start(self) -> str:
        """Listen; returns the traces URL (with the real port when the setting is 0)."""
        # auto_decompress off: aiohttp would take a gzip stream cut short (tracewatch.otlp.body)
        runner = web.AppRunner(self.app(), access_log=None, auto_decompress=False)
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
        self._hosts = _served_hosts(self.settings, self.port)
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
        refused = self._foreign(request)
        if refused is not None:
            self.counters.refused += 1
            return _status(403, code_pb2.PERMISSION_DENIED, refused, JSON)
        if request.content_type not in (PROTOBUF, JSON):
            return _status(
                415,
                code_pb2.INVALID_ARGUMENT,
                f"unsupported Content-Type {request.content_type!r}; send {PROTOBUF} or {JSON}",
                JSON,
            )
        encoding = request.content_type
        compression = request.headers.get("Content-Encoding", "identity").strip().lower()
        if compression not in ENCODINGS:
            return _status(
                415,
                code_pb2.INVALID_ARGUMENT,
                f"unsupported Content-Encoding {compression!r}; send gzip or none",
                encoding,
            )
        limit = self.settings.max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            return _too_large(limit, encoding)
        # what the body will hold once read and inflated: known only without compression
        reserved = length if length is not None and compression == "identity" else limit
        if not await self.budget.acquire(reserved, self.settings.inflight_wait_s):
            self.counters.throttled += 1
            return _busy(self.settings.max_inflight_bytes, encoding)
        try:
            return await self._read_and_accept(request, encoding, compression, limit)
        finally:
            self.budget.release(reserved)

    def _foreign(self, request: web.Request) -> str | None:
        """Why a request that did not come from an exporter is refused, if it did not.

        Exporters send neither a foreign ``Host`` nor an ``Origin``. A web page does: on
        a DNS name it points at 127.0.0.1 its own ``Host``, and always its ``Origin`` (the
        receiver answers no CORS preflight, so a browser exporter cannot use it anyway).
        """
        if "Origin" in request.headers:
            return (
                f"requests from web pages are refused (Origin: {request.headers['Origin']!r}); "
                "send spans from an OpenTelemetry exporter or collector"
            )
        host = request.headers.get("Host")
        if self._hosts is not None and check_host(host, self._hosts) is not None:
            return (
                f"Host {host!r} is not an address this receiver serves "
                f"({', '.join(sorted(self._hosts))}); add the name exporters use to "
                "TRACEWATCH_OTLP_ALLOWED_HOSTS"
            )
        return None

    async def _read_and_accept(
        self, request: web.Request, encoding: str, compression: str, limit: int
    ) -> web.Response:
        try:
            body = decode_body(await request.read(), compression, limit)
        except (web.HTTPRequestEntityTooLarge, BodyTooLarge):
            return _too_large(limit, encoding)
        except OtlpDecodeError as exc:
            return _status(400, code_pb2.INVALID_ARGUMENT, str(exc), encoding)
        problems: dict[SpanPosition, str] = {}
        try:
            export = _parse(body, encoding, problems)
        except OtlpDecodeError as exc:
            return _status(400, code_pb2.INVALID_ARGUMENT, str(exc), encoding)
        del body
        return await self._accept(export, encoding, problems)

    async def _accept(
        self,
        export: ExportTraceServiceRequest,
        encoding: str,
        problems: dict[SpanPosition, str],
    ) -> web.Response:
        result = map_request(export, self._route_attributes, problems)
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


def _parse(
    body: bytes, encoding: str, problems: dict[SpanPosition, str]
) -> ExportTraceServiceRequest:
    if encoding == PROTOBUF:
        return parse_protobuf_request(body)
    return parse_json_request(body, problems)


def _served_hosts(settings: OtlpSettings, port: int) -> frozenset[str] | None:
    """The ``Host`` values to accept; None (no check) for a wildcard bind with no names
    configured: remote exporters reach it by names the receiver cannot know."""
    try:
        wildcard = ipaddress.ip_address(settings.host.strip("[]")).is_unspecified
    except ValueError:
        wildcard = settings.host == ""
    if wildcard and not settings.allowed_hosts:
        return None
    return allowed_hosts(settings.host, port, settings.allowed_hosts)


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


def _busy(budget: int, encoding: str) -> web.Response:
    return _status(
        429,
        code_pb2.RESOURCE_EXHAUSTED,
        f"the receiver is reading {budget} bytes of other requests "
        "(TRACEWATCH_OTLP_MAX_INFLIGHT_BYTES); retry later",
        encoding,
        retry_after=1,
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
            "otlp receiver stopped: %d requests (%d throttled), %d spans: %d events, "
            "%d rejected, %d ignored",
            c.requests,
            c.throttled,
            c.spans,
            c.events,
            c.rejected,
            c.ignored,
        )
