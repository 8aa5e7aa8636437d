"""What the dashboard marks on its charts: alert firings and breaker openings.

Pure and bounded. The worker keeps no alert history of its own and ClickHouse
has no alerts table, so the views fill a ``MarkerHistory`` from the alerts and
breakers topics (read from their beginning at start-up, so it survives restarts
as far back as the topics' retention), and ask it for one route's markers.

Breakers scoped ``trace:<id>`` do not say their route; the views look the
traces up in ``events`` and pass the answer to ``breaker_markers``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tracewatch.schemas.alert import Alert
from tracewatch.schemas.breaker import BreakerSignal

__all__ = ["BreakerOpening", "MarkerHistory", "alert_marker", "breaker_markers", "trace_ids"]


@dataclass(frozen=True)
class BreakerOpening:
    scope: str
    at: float
    reason: str
    ttl_s: float | None

    @property
    def trace_id(self) -> str | None:
        return self.scope.removeprefix("trace:") if self.scope.startswith("trace:") else None

    @property
    def route(self) -> str | None:
        return self.scope.removeprefix("route:") if self.scope.startswith("route:") else None


class MarkerHistory:
    """The latest ``limit`` alert episodes and breaker openings; thread-safe.

    An alert episode is one (fingerprint, starts_at): its firing and resolved
    transitions (and the worker's re-sends after a restart) fold into one entry.
    """

    def __init__(self, limit: int = 20_000) -> None:
        self.limit = limit
        self._alerts: OrderedDict[tuple[str, float], Alert] = OrderedDict()
        self._openings: OrderedDict[tuple[str, float], BreakerOpening] = OrderedDict()
        self._lock = threading.Lock()

    def add_alert(self, alert: Alert) -> None:
        key = (alert.fingerprint, alert.starts_at.timestamp())
        with self._lock:
            known = self._alerts.get(key)
            if known is None or known.status == "firing":  # a resolve is final
                self._alerts[key] = alert
            _trim(self._alerts, self.limit)

    def add_breaker(self, signal: BreakerSignal) -> None:
        if signal.state != "open" or signal.opened_at is None:
            return
        at = signal.opened_at.timestamp()
        with self._lock:
            self._openings[(signal.scope, at)] = BreakerOpening(
                signal.scope, at, signal.reason, signal.ttl_s
            )
            _trim(self._openings, self.limit)

    def alerts(self, route: str, start: float, end: float) -> list[dict[str, Any]]:
        """Markers of ``route``'s alerts that fired in ``[start, end)``, oldest first."""
        with self._lock:
            chosen = [a for a in self._alerts.values() if a.labels.get("route") == route]
        markers = [alert_marker(a) for a in chosen]
        return sorted((m for m in markers if start <= m["at"] < end), key=lambda m: m["at"])

    def openings(self, start: float, end: float) -> list[BreakerOpening]:
        with self._lock:
            return sorted(
                (o for o in self._openings.values() if start <= o.at < end), key=lambda o: o.at
            )

    def __len__(self) -> int:
        with self._lock:
            return len(self._alerts) + len(self._openings)


def alert_marker(alert: Alert) -> dict[str, Any]:
    return {
        "kind": "alert",
        "at": alert.starts_at.timestamp(),
        "end": None if alert.ends_at is None else alert.ends_at.timestamp(),
        "status": alert.status,
        "alertname": alert.alertname,
        "metric": alert.labels.get("metric", ""),
        "severity": alert.labels.get("severity", ""),
        "summary": alert.summary,
    }


def trace_ids(openings: Iterable[BreakerOpening], limit: int = 1000) -> list[str]:
    """The traces whose route must be looked up (the newest ``limit``)."""
    ids = [o.trace_id for o in openings if o.trace_id is not None]
    return sorted(set(ids[-limit:]))


def breaker_markers(
    openings: Iterable[BreakerOpening], route: str, trace_routes: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Markers of the openings that belong to ``route``: its own breaker, and the
    breakers of its traces (``trace_routes``: trace id → route)."""
    return [
        {"kind": "breaker", "at": o.at, "scope": o.scope, "reason": o.reason, "ttl_s": o.ttl_s}
        for o in openings
        if o.route == route or (o.trace_id is not None and trace_routes.get(o.trace_id) == route)
    ]


def _trim(entries: OrderedDict[Any, Any], limit: int) -> None:
    while len(entries) > limit:
        entries.popitem(last=False)
