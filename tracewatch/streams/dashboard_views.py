"""The dashboard's web views on the worker's faust web server (localhost by default).

``register_dashboard`` adds:

- ``/dashboard`` (the page) and its files (``/dashboard/app.js`` …, uPlot under
  ``/dashboard/vendor/``), all package data: no CDN, no build step;
- ``/api/routes?from=&to=``: routes with traffic, busiest first;
- ``/api/series?route=&from=&to=&step=``: a route's p50/p95/p99 cost and latency,
  error rate, loop depth and score means (``tracewatch.dashboard.queries``);
- ``/api/alerts?route=&from=&to=``: the open alerts, and the route's alert firings
  in the range (markers);
- ``/api/breakers?route=&from=&to=``: the open breakers, and the openings of the
  route's breakers and of its traces' breakers in the range (markers).

Times are Unix seconds, RFC 3339, ``now`` or ``15m``/``6h``/``7d`` ago. Markers
come from ``MarkerFeed``, which reads the alerts and breakers topics from their
beginning into a bounded ``MarkerHistory``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

import faust
import mode
from confluent_kafka import Consumer, KafkaError, Message

from tracewatch.config import KafkaSettings, Settings
from tracewatch.dashboard import queries
from tracewatch.dashboard.markers import MarkerHistory, breaker_markers, trace_ids
from tracewatch.errors import ConfigError, TracewatchError
from tracewatch.queries import parse_time
from tracewatch.schemas.alert import Alert
from tracewatch.schemas.breaker import BreakerSignal
from tracewatch.sinks.clickhouse_reader import ClickHouseReader

__all__ = ["MarkerFeed", "register_dashboard"]

log = logging.getLogger("tracewatch.dashboard")

#: URL path under /dashboard → (file under tracewatch/dashboard/static, content type)
STATIC_FILES: dict[str, tuple[str, str]] = {
    "": ("index.html", "text/html"),
    "/app.js": ("app.js", "text/javascript"),
    "/app.css": ("app.css", "text/css"),
    "/vendor/uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript"),
    "/vendor/uPlot.min.css": ("vendor/uPlot.min.css", "text/css"),
}


class MarkerFeed(mode.Service):
    """Reads the alerts and breakers topics into ``history`` on a thread of its own.

    A consumer group of its own, from the earliest offset and never committed, so
    every start reads the whole retained history (both topics are small).
    """

    def __init__(self, kafka: KafkaSettings, history: MarkerHistory, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kafka = kafka
        self.history = history
        self.skipped = 0
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    async def on_start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tracewatch-markers", daemon=True)
        self._thread.start()

    async def on_stop(self) -> None:
        self._stop_event.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10.0)

    def _run(self) -> None:
        consumer = Consumer(
            {
                **self.kafka.client_config(),
                "group.id": f"tracewatch-dashboard-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "allow.auto.create.topics": False,
            }
        )
        topics = {self.kafka.alerts_topic: self._alert, self.kafka.breakers_topic: self._breaker}
        try:
            consumer.subscribe(list(topics))
            while not self._stop_event.is_set():
                for message in consumer.consume(500, 0.5):
                    self._take(message, topics)
        except Exception:  # the dashboard loses its markers, the worker goes on
            log.exception("the dashboard stopped reading alert and breaker history")
        finally:
            consumer.close()

    def _take(self, message: Message, handlers: Mapping[str, Callable[[bytes], None]]) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("reading markers: %s", error)
            return
        value = message.value()
        handler = handlers.get(message.topic() or "")
        if value is None or handler is None:
            return
        try:
            handler(value)
        except ValueError:  # pydantic's ValidationError too: not ours to judge, skip it
            self.skipped += 1

    def _alert(self, value: bytes) -> None:
        self.history.add_alert(Alert.model_validate_json(value))

    def _breaker(self, value: bytes) -> None:
        self.history.add_breaker(BreakerSignal.model_validate_json(value))


def register_dashboard(
    app: faust.App, settings: Settings, reader: ClickHouseReader, service: mode.Service
) -> MarkerHistory:
    """Add the dashboard's views to ``app``; ``service`` is the ingest service (its
    ``ingest`` has the open alerts and breakers), and runs the marker feed with it.
    Reads go through ``reader`` (guarded, limited, read-only; never the writer's session)."""
    history = MarkerHistory()
    service.add_dependency(MarkerFeed(settings.kafka, history))
    database = settings.clickhouse.database
    _register_static(app)

    async def query(sql: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(None, lambda: reader.query(sql, parameters))
        return result.rows

    @app.page("/api/routes", name="dashboard_routes")
    async def routes(web: Any, request: Any) -> Any:
        try:
            start, end = _range(request.query)
            rows = await query(queries.ROUTES_SQL, queries.routes_parameters(database, start, end))
        except TracewatchError as exc:
            return web.json({"error": str(exc)}, status=400)
        return web.json({"from": start, "to": end, "routes": queries.shape_routes(rows)})

    @app.page("/api/series", name="dashboard_series")
    async def series(web: Any, request: Any) -> Any:
        try:
            start, end = _range(request.query)
            step = _step(request.query.get("step"))
            plan = queries.plan_series(request.query.get("route", ""), start, end, step)
            rows = await query(queries.series_sql(plan), plan.parameters(database))
        except TracewatchError as exc:
            return web.json({"error": str(exc)}, status=400)
        return web.json(queries.shape_series(plan, rows))

    @app.page("/api/alerts", name="dashboard_alerts")
    async def alerts(web: Any, request: Any) -> Any:
        try:
            start, end = _range(request.query)
        except TracewatchError as exc:
            return web.json({"error": str(exc)}, status=400)
        ingest = getattr(service, "ingest", None)
        firing = [json.loads(a.model_dump_json()) for a in getattr(ingest, "firing", [])]
        route = request.query.get("route", "")
        return web.json({"firing": firing, "markers": history.alerts(route, start, end)})

    @app.page("/api/breakers", name="dashboard_breakers")
    async def breakers(web: Any, request: Any) -> Any:
        try:
            start, end = _range(request.query)
        except TracewatchError as exc:
            return web.json({"error": str(exc)}, status=400)
        board = getattr(getattr(service, "ingest", None), "board", None)
        signals = [] if board is None else list(board.open_signals())
        openings = history.openings(start, end)
        ids = trace_ids(openings)
        trace_routes: dict[str, str] = {}
        if ids:
            params = {"db": database, "ids": ids}
            try:
                trace_routes = dict(await query(queries.TRACE_ROUTES_SQL, params))
            except TracewatchError as exc:
                log.warning("could not look up the routes of breaker traces: %s", exc)
        route = request.query.get("route", "")
        return web.json(
            {
                "open": [json.loads(s.model_dump_json()) for s in signals],
                "markers": breaker_markers(openings, route, trace_routes),
            }
        )

    return history


def _register_static(app: faust.App) -> None:
    root = resources.files("tracewatch.dashboard") / "static"
    for suffix, (name, content_type) in STATIC_FILES.items():
        body = (root / name).read_bytes()  # read once: package data does not change

        async def serve(
            web: Any, request: Any, body: bytes = body, kind: str = content_type
        ) -> Any:
            return web.bytes(body, content_type=kind, headers={"Cache-Control": "no-cache"})

        app.page(f"/dashboard{suffix}", name=f"dashboard_static_{name}")(serve)


def _range(query: Mapping[str, str]) -> tuple[float, float]:
    now = time.time()
    start = parse_time(query.get("from") or "1h", now).timestamp()
    end = parse_time(query.get("to") or "now", now).timestamp()
    return start, end


def _step(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return max(int(text), 1)
    except ValueError:
        raise ConfigError("`step` must be a whole number of seconds") from None
