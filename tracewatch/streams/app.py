"""The faust application: wiring only, no statistics here.

- ``IngestService`` runs the high-volume batch stage (``IngestLoop``) on a thread,
  including the alert engine: detectors run on the minutes as they close, and
  their transitions are acknowledged on the alerts topic before offsets commit.
- ``AlertmanagerService`` (when ``TRACEWATCH_ALERTMANAGER_URL`` is set) posts those
  alerts to Alertmanager, re-sends the firing ones, and catches up after an outage.
- The ``route_stats`` agent consumes the low-volume closed-bucket stream and keeps
  the latest minute per key in a table with a changelog.
- Web views on localhost: ``/status`` (counters), ``/metrics`` (Prometheus) and
  ``/health`` (streams/metrics.py), ``/stats`` (latest minute per key), ``/alerts``
  (open alerts), ``/query`` (one guarded, limited SELECT with bound parameters on
  a read-only ClickHouse session of its own, never the writer's: how ``tracewatch
  query`` reaches an embedded chDB that this process holds open).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from datetime import date, datetime
from typing import Any

import faust
import mode

from tracewatch.config import Settings
from tracewatch.detectors.judges import load_judges
from tracewatch.errors import TracewatchError
from tracewatch.schemas.alert import Alert
from tracewatch.sinks.alertmanager import AlertmanagerService
from tracewatch.sinks.clickhouse import ClickHouseSink, QueryResult
from tracewatch.sinks.clickhouse_reader import ClickHouseReader
from tracewatch.sinks.kafka_alerts import AlertPublisher
from tracewatch.sinks.kafka_breakers import BreakerPublisher
from tracewatch.sinks.kafka_stats import StatsPublisher
from tracewatch.streams.dashboard_views import register_dashboard
from tracewatch.streams.ingest import IngestLoop
from tracewatch.streams.kafka_auth import faust_credentials
from tracewatch.streams.metrics import register_metrics
from tracewatch.streams.web_access import worker_access

__all__ = ["IngestService", "build_app"]

log = logging.getLogger("tracewatch.worker")


class IngestService(mode.Service):
    """Owns the ingest thread; stopping the service drains and commits before it returns."""

    def __init__(
        self,
        loop_: IngestLoop,
        alertmanager: AlertmanagerService | None = None,
        **kwargs: Any,
    ) -> None:
        self.alertmanager = alertmanager
        super().__init__(**kwargs)
        self.ingest = loop_
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed: BaseException | None = None

    def on_init_dependencies(self) -> list[mode.ServiceT]:
        # started before the ingest thread, stopped after it has drained
        return [] if self.alertmanager is None else [self.alertmanager]

    async def on_start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tracewatch-ingest", daemon=True)
        self._thread.start()

    async def on_stop(self) -> None:
        self._stop_event.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 60.0)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            self.ingest.run(self._stop_event)
        except BaseException as exc:  # surfaced in /status and the log; the worker stops
            self.failed = exc
            log.exception("ingest stopped")


def build_app(
    settings: Settings,
    sink: ClickHouseSink,
    reader: ClickHouseReader | None = None,
    *,
    token: str | None = None,
) -> tuple[faust.App, IngestService]:
    """The worker's app; ``sink`` writes, ``reader`` (one of its own if not given, opened
    at its first query) serves ``/query`` and the dashboard; ``token`` is the web views'
    (a random one if not given)."""
    w = settings.worker
    access = worker_access(settings, token)  # Host, Origin, token, content type: every view
    reads = reader or ClickHouseReader(settings.clickhouse, settings.query)
    app = faust.App(
        w.app_id,
        broker=settings.kafka.faust_broker_url(),
        broker_credentials=faust_credentials(settings.kafka),  # SASL/SSL as the other clients
        autodiscover=False,
        store="memory://",
        web_enabled=True,
        web_bind=w.web_host,
        web_host=w.web_host,
        web_port=w.web_port,
        topic_partitions=3,
        topic_replication_factor=settings.kafka.replication_factor,
        datadir=str(settings.home / "faust"),
        web_in_thread=False,
        web_application_options=access.application_options(),  # the guard, as a middleware
        # as the ingest consumer: after a kill -9 faust's group waits out the dead
        # member's session (60 s by default), and a SIGTERM meanwhile blocks until then
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
    )
    stats_publisher = StatsPublisher(settings.kafka)
    alert_publisher = AlertPublisher(settings.kafka)
    alertmanager = AlertmanagerService(settings.alertmanager) if settings.alertmanager.url else None

    def deliver(alerts: list[Alert]) -> None:
        alert_publisher.publish(alerts)
        alert_publisher.flush()  # raises SinkError: the flush is retried, nothing committed
        if alertmanager is not None:
            alertmanager.submit(alerts)

    judges = load_judges(settings.detect, settings.worker.breaker_max_traces)
    ingest = IngestLoop(
        settings,
        sink,
        on_closed=stats_publisher.publish,
        engine=judges.engine,
        on_alerts=deliver,
        on_restored=alertmanager.submit if alertmanager is not None else None,
        board=judges.board,
        breakers=BreakerPublisher(settings.kafka),
    )
    service = IngestService(ingest, alertmanager)

    stats_topic = app.topic(settings.kafka.stats_topic, key_type=str, value_serializer="json")
    latest = app.Table("latest_stats", default=None, partitions=3)

    @app.agent(stats_topic)
    async def route_stats(stream: Any) -> None:
        async for key, summary in stream.items():
            if not summary.get("late"):
                latest[key] = summary

    @app.page("/status")
    async def status(web: Any, request: Any) -> Any:
        body = service.ingest.status()
        body["ingest_alive"] = service.alive
        body["ingest_error"] = None if service.failed is None else repr(service.failed)
        body["alertmanager"] = None if alertmanager is None else alertmanager.status()
        return web.json(body)

    @app.page("/breakers")
    async def breakers(web: Any, request: Any) -> Any:
        board = service.ingest.board
        signals = [] if board is None else list(board.open_signals())
        return web.json({"open": [json.loads(s.model_dump_json()) for s in signals]})

    @app.page("/alerts")
    async def alerts(web: Any, request: Any) -> Any:
        firing = [json.loads(a.model_dump_json()) for a in service.ingest.firing]
        return web.json({"firing": firing})

    @app.page("/stats")
    async def stats(web: Any, request: Any) -> Any:
        return web.json({k: v for k, v in latest.items() if v is not None})

    @app.page("/query")
    class QueryView(faust.web.View):
        async def post(self, request: Any) -> Any:
            try:
                payload = await request.json()
                sql, parameters = str(payload["sql"]), dict(payload.get("parameters") or {})
            except (ValueError, KeyError, TypeError):
                return self.json({"error": 'send {"sql": "...", "parameters": {...}}'}, status=400)
            loop = asyncio.get_running_loop()
            try:
                result = await loop.run_in_executor(None, lambda: reads.query(sql, parameters))
            except TracewatchError as exc:
                return self.json({"error": str(exc)}, status=400)
            # encoded off the event loop too: 100 000 rows take a while as JSON
            body = await loop.run_in_executor(None, _encode, result)
            return self.bytes(body, content_type="application/json")

    register_dashboard(app, settings, reads, service)  # /dashboard and its /api/* views
    register_metrics(app, service, alertmanager, w.health_sink_error_s, access.collector())
    return app, service


def _encode(result: QueryResult) -> bytes:
    return json.dumps({"columns": result.columns, "rows": result.rows}, default=_jsonable).encode()


def _jsonable(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)
