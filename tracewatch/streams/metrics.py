"""The worker's own health: Prometheus metrics (``/metrics``) and a verdict (``/health``).

The ingest loop counts what it does anyway (received, valid, rejected by reason,
late, stored, alerts, breakers) for ``/status``; ``IngestCollector`` reads those
counters when Prometheus scrapes instead of incrementing metric objects on the
hot path. Only the two timings (batch processing, sink writes) are observed where
they happen, as histograms cannot be rebuilt from totals.

Every ``WorkerMetrics`` has a ``CollectorRegistry`` of its own, not the global
default: tests and several workers in one process do not collide.

Metric names:

- ``tracewatch_events_consumed_total``, ``tracewatch_events_valid_total``,
  ``tracewatch_events_rejected_total{reason}``, ``tracewatch_events_late_total``,
  ``tracewatch_events_duplicate_total``, ``tracewatch_events_stored_total``
- ``tracewatch_consumer_lag{partition}`` (messages behind the high watermark)
- ``tracewatch_batch_processing_seconds`` and ``tracewatch_sink_write_seconds{table}``
  (histograms), ``tracewatch_sink_errors_total``, ``tracewatch_flushes_total``
- ``tracewatch_alerts_fired_total{alertname,status}``, ``tracewatch_alerts_firing``
- ``tracewatch_breakers_opened_total{kind}`` (``trace`` or ``route``),
  ``tracewatch_breakers_open``
- ``tracewatch_state_overflow_total{kind}``: ``bucket_route``, ``bucket_key`` (events
  folded into ``__other__`` keys), ``breaker_trace_shed`` / ``_refused``,
  ``breaker_route_shed`` / ``_refused`` (the breaker board's pressure)
- ``tracewatch_alertmanager_outbox_pending`` (only when Alertmanager is configured)
- ``tracewatch_web_requests_refused_total{reason}`` (streams/web_access.py: ``host``,
  ``origin``, ``token``, ``content_type``)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "CONTENT_TYPE",
    "DUPLICATE_REASON",
    "Health",
    "IngestCollector",
    "IngestReading",
    "WorkerMetrics",
    "judge_health",
    "reading_from",
    "register_metrics",
    "service_health",
]

#: the text exposition format ``generate_latest`` writes
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: the rejection reason the pipeline gives a repeated ``event_id``
DUPLICATE_REASON = "duplicate_event_id"
#: seconds; a batch takes milliseconds, a sink write up to seconds when ClickHouse is busy
TIME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class IngestReading:
    """The ingest loop's counters at one instant: what a scrape turns into metrics."""

    received: int = 0
    valid: int = 0
    late: int = 0
    rejected: Mapping[str, int] = field(default_factory=dict)
    stored_events: int = 0
    flushes: int = 0
    sink_errors: int = 0
    #: (alertname, status) → transitions delivered
    alerts_fired: Mapping[tuple[str, str], int] = field(default_factory=dict)
    alerts_firing: int = 0
    #: scope kind (``trace``/``route``) → breakers opened
    breakers_opened: Mapping[str, int] = field(default_factory=dict)
    breakers_open: int = 0
    #: partition → messages between this consumer's position and the high watermark
    consumer_lag: Mapping[int, int] = field(default_factory=dict)
    #: alerts waiting for Alertmanager; None when no Alertmanager is configured
    outbox_pending: int | None = None
    #: what the state caps turned away, by kind (``Stage.overflow``)
    overflow: Mapping[str, int] = field(default_factory=dict)


class IngestCollector(Collector):
    """Turns an ``IngestReading`` into metric families; pure, so a fake reading tests it."""

    def __init__(self, read: Callable[[], IngestReading]) -> None:
        self.read = read

    def collect(self) -> Iterable[Metric]:
        r = self.read()
        yield _counter("events_consumed", "Events read from the events topic.", r.received)
        yield _counter("events_valid", "Events accepted by validation.", r.valid)
        rejected = CounterMetricFamily(
            "tracewatch_events_rejected", "Events sent to the DLQ, by reason.", labels=["reason"]
        )
        for reason, n in sorted(r.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected
        yield _counter("events_late", "Valid events whose minute had closed.", r.late)
        duplicates = r.rejected.get(DUPLICATE_REASON, 0)
        yield _counter("events_duplicate", "Events with an event_id seen before.", duplicates)
        yield _counter("events_stored", "Events written to ClickHouse.", r.stored_events)
        yield _counter("flushes", "Batches written and committed.", r.flushes)
        yield _counter("sink_errors", "Failed sink calls (each retried).", r.sink_errors)
        yield from self._lag(r)
        yield from self._alerts(r)
        yield from self._breakers(r)
        overflow = CounterMetricFamily(
            "tracewatch_state_overflow",
            "Events folded into __other__ bucket keys, and traces or routes the breaker "
            "board shed or could not track, by kind (state caps, issue 16).",
            labels=["kind"],
        )
        for kind, n in sorted(r.overflow.items()):
            overflow.add_metric([kind], n)
        yield overflow
        if r.outbox_pending is not None:
            yield GaugeMetricFamily(
                "tracewatch_alertmanager_outbox_pending",
                "Alerts not yet delivered to Alertmanager.",
                value=r.outbox_pending,
            )

    @staticmethod
    def _lag(r: IngestReading) -> Iterable[Metric]:
        lag = GaugeMetricFamily(
            "tracewatch_consumer_lag",
            "Messages between the consumer's position and the partition's high watermark.",
            labels=["partition"],
        )
        for partition, n in sorted(r.consumer_lag.items()):
            lag.add_metric([str(partition)], n)
        yield lag

    @staticmethod
    def _alerts(r: IngestReading) -> Iterable[Metric]:
        fired = CounterMetricFamily(
            "tracewatch_alerts_fired",
            "Alert transitions delivered to the alerts topic.",
            labels=["alertname", "status"],
        )
        for (alertname, status), n in sorted(r.alerts_fired.items()):
            fired.add_metric([alertname, status], n)
        yield fired
        yield GaugeMetricFamily("tracewatch_alerts_firing", "Alerts firing now.", r.alerts_firing)

    @staticmethod
    def _breakers(r: IngestReading) -> Iterable[Metric]:
        opened = CounterMetricFamily(
            "tracewatch_breakers_opened", "Breakers opened, by scope kind.", labels=["kind"]
        )
        for kind, n in sorted(r.breakers_opened.items()):
            opened.add_metric([kind], n)
        yield opened
        yield GaugeMetricFamily("tracewatch_breakers_open", "Breakers open now.", r.breakers_open)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"tracewatch_{name}", documentation, value=value)


class WorkerMetrics:
    """One worker's registry: the collector plus the two timing histograms."""

    def __init__(self, read: Callable[[], IngestReading]) -> None:
        self.registry = CollectorRegistry()
        self.batch_seconds = Histogram(
            "tracewatch_batch_processing_seconds",
            "Time to validate, aggregate and judge one consumed batch.",
            buckets=TIME_BUCKETS,
            registry=self.registry,
        )
        self.sink_write_seconds = Histogram(
            "tracewatch_sink_write_seconds",
            "Time of one successful ClickHouse insert, by table.",
            ["table"],
            buckets=TIME_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(IngestCollector(read))

    def observe_write(self, table: str, seconds: float) -> None:
        self.sink_write_seconds.labels(table).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def reading_from(status: Mapping[str, Any], **extra: Any) -> IngestReading:
    """An ``IngestReading`` from ``IngestLoop.status()`` plus the counters it does not show."""
    return IngestReading(
        received=int(status["received"]),
        valid=int(status["valid"]),
        late=int(status["late"]),
        rejected=dict(status["rejected"]),
        stored_events=int(status["stored_events"]),
        flushes=int(status["flushes"]),
        alerts_firing=int(status["alerts_firing"]),
        breakers_open=int(status["breakers_open"]),
        overflow=dict(status.get("overflow", {})),
        **extra,
    )


@dataclass(frozen=True)
class Health:
    """``/health``'s answer: ``ok`` → 200, otherwise 503 with ``reason``."""

    ok: bool
    reason: str = ""

    def body(self) -> dict[str, str]:
        return {"status": "ok"} if self.ok else {"status": "failing", "reason": self.reason}


def judge_health(
    *,
    ingest_alive: bool,
    ingest_error: str | None = None,
    writer_error: str | None = None,
    sink_error: str | None = None,
    sink_error_for_s: float = 0.0,
    max_sink_error_s: float = 60.0,
) -> Health:
    """Unhealthy when ingestion stopped or the sink has failed longer than tolerated.

    A sink error younger than ``max_sink_error_s`` is a retry in progress (a
    ClickHouse merge stall, a restart): reporting it would make a load balancer
    or an orchestrator restart a worker that is about to recover.
    """
    if writer_error is not None:
        return Health(False, f"the writer thread failed: {writer_error}")
    if ingest_error is not None:
        return Health(False, f"the ingest thread failed: {ingest_error}")
    if not ingest_alive:
        return Health(False, "the ingest thread is not running")
    if sink_error is not None and sink_error_for_s >= max_sink_error_s:
        return Health(False, f"the sink has been failing for {sink_error_for_s:.0f}s: {sink_error}")
    return Health(True)


def register_metrics(
    app: Any, service: Any, alertmanager: Any, max_sink_error_s: float, *more: Collector
) -> None:
    """``/metrics`` and ``/health`` on the worker's web server, and the ingest timing hooks.

    ``service`` is the ``IngestService`` (its ``ingest`` loop, ``alive``, ``failed``);
    ``alertmanager`` the ``AlertmanagerService`` or None; ``more``: collectors of other
    parts (the web guard's refusals). Typed loosely so this module stays free of faust
    and Kafka imports.
    """
    ingest = service.ingest

    def read() -> IngestReading:
        outbox = None if alertmanager is None else int(alertmanager.status()["pending"])
        return reading_from(
            ingest.status(),
            sink_errors=ingest.sink_errors,
            alerts_fired=dict(ingest.alerts_fired),
            breakers_opened=dict(ingest.breakers_opened),
            consumer_lag=ingest.consumer_lag,
            outbox_pending=outbox,
        )

    metrics = WorkerMetrics(read)
    for collector in more:
        metrics.registry.register(collector)
    ingest.observe_batch = metrics.batch_seconds.observe
    ingest.observe_write = metrics.observe_write

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        # a header, not content_type=: aiohttp refuses a charset in that argument
        return web.bytes(metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    @app.page("/health")
    async def health_view(web: Any, request: Any) -> Any:
        verdict = service_health(service, max_sink_error_s)
        return web.json(verdict.body(), status=200 if verdict.ok else 503)


def service_health(service: Any, max_sink_error_s: float, now: float | None = None) -> Health:
    """``judge_health`` over a running ``IngestService``."""
    ingest = service.ingest
    now = time.monotonic() if now is None else now
    writer = ingest.writer_failed
    failed = service.failed
    return judge_health(
        ingest_alive=bool(service.alive),
        ingest_error=None if failed is None else repr(failed),
        writer_error=None if writer is None else repr(writer),
        sink_error=ingest.last_error,
        sink_error_for_s=now - ingest.last_error_since,
        max_sink_error_s=max_sink_error_s,
    )
