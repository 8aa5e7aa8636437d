"""Delivers alerts to Prometheus Alertmanager (API v2, ``POST /api/v2/alerts``).

Three layers, so the delivery rules can be tested without a network:

- ``to_postable`` turns one ``Alert`` into Alertmanager's ``postableAlert``.
- ``AlertmanagerOutbox`` is pure bookkeeping (no I/O, the wall clock is passed in):
  the latest alert per fingerprint, what is due now, resends, backoff, a bound.
- ``AlertmanagerClient`` (aiohttp) does the HTTP; ``AlertmanagerService`` (a mode
  service the worker runs next to faust) ties both together on the event loop and
  takes alerts from any thread.

Timing model. Alertmanager keeps an alert active until its ``endsAt``. A firing alert is
posted with ``endsAt = now + ends_at_intervals * resend_interval_s`` and posted again every
``resend_interval_s``, so it stays active while tracewatch runs and resolves by itself a few
intervals after tracewatch dies. A resolved alert is posted with ``endsAt <= now`` so it
never looks active. ``startsAt`` is event time; ``endsAt`` is never before ``startsAt``
(Alertmanager answers HTTP 400 to such an alert and drops it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import mode

from tracewatch.config import AlertmanagerSettings
from tracewatch.errors import ConfigError, ServiceUnavailable
from tracewatch.redact import redact_text, redact_url
from tracewatch.schemas.alert import Alert

__all__ = [
    "AlertmanagerClient",
    "AlertmanagerOutbox",
    "AlertmanagerService",
    "to_postable",
]

log = logging.getLogger("tracewatch.alertmanager")

API_PATH = "/api/v2/alerts"
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# ---------------------------------------------------------------------------- payloads


def to_postable(alert: Alert, now: float, settings: AlertmanagerSettings) -> dict[str, Any]:
    """The API v2 ``postableAlert`` for ``alert`` as posted at wall-clock time ``now``.

    Label names Alertmanager would refuse (it accepts ``[A-Za-z_][A-Za-z0-9_]*``) are
    rewritten with ``_``: one refused alert makes the whole POST answer 400, and
    retrying would never succeed.
    """
    labels = {"alertname": alert.alertname, **alert.labels}
    starts_at, ends_at = _active_window(alert, _utc_from_ts(now), settings)
    return {
        "labels": {_label_name(k): v for k, v in labels.items()},
        "annotations": _annotations(alert),
        "startsAt": _rfc3339(starts_at),
        "endsAt": _rfc3339(ends_at),
    }


def _active_window(
    alert: Alert, now: datetime, settings: AlertmanagerSettings
) -> tuple[datetime, datetime]:
    """(startsAt, endsAt) for Alertmanager; always ``startsAt <= endsAt``.

    Firing: active until a few resend intervals after ``now`` (or after a future
    ``starts_at``). Resolved: ``ends_at`` clamped into ``[startsAt, now]``; a resolved
    alert whose event time is ahead of this clock gets ``startsAt = endsAt = now``, since
    keeping the future ``startsAt`` would force a future ``endsAt`` and look active.
    """
    starts_at = _utc(alert.starts_at)
    if alert.status == "firing":
        keep_for = timedelta(seconds=settings.ends_at_intervals * settings.resend_interval_s)
        return starts_at, max(now, starts_at) + keep_for
    starts_at = min(starts_at, now)
    ends_at = _utc(alert.ends_at) if alert.ends_at is not None else now
    return starts_at, max(min(ends_at, now), starts_at)


def _annotations(alert: Alert) -> dict[str, str]:
    annotations = {"summary": alert.summary, "tracewatch_fingerprint": alert.fingerprint}
    for name in ("value", "baseline", "threshold"):
        number = getattr(alert, name)
        if number is not None:
            annotations[name] = str(number)
    return annotations


def _label_name(name: str) -> str:
    if _LABEL_NAME.fullmatch(name):
        return name
    fixed = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return fixed if fixed[:1].isalpha() or fixed[:1] == "_" else f"_{fixed}"


def _utc(moment: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _utc_from_ts(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------- outbox


@dataclass
class _Entry:
    alert: Alert
    version: int  # changes whenever the alert does, so a reply is matched to what was sent
    submitted_at: float  # when this version was submitted (wall clock)
    unsent: bool = True  # this version never reached Alertmanager
    last_sent: float | None = None  # last successful delivery of this fingerprint (firing)


class AlertmanagerOutbox:
    """What to post to Alertmanager and when: pure bookkeeping, no I/O, no clock.

    One alert per fingerprint: the latest submitted (a resolved replaces its firing one).
    The caller loops ``batch = due(now)`` → POST → ``sent(now)`` or ``failed(now, error)``,
    one batch at a time (``due`` forgets a batch that got neither answer).

    - due: never-sent alerts (resolved first), then firing ones last delivered at least
      ``resend_interval_s`` ago; nothing while backing off. At most ``max_batch`` per POST.
    - sent: resolved alerts are forgotten, firing ones remembered for their next resend.
      An alert replaced while its batch was in flight stays due: the newer version was not
      sent. Ends any backoff.
    - failed: back off ``backoff_initial_s``, doubling per failure up to ``backoff_max_s``.
    - bound: more than ``max_pending`` alerts held drops the oldest unsent resolved one
      first (Alertmanager resolves it anyway when its ``endsAt`` passes), then the oldest
      firing one. ``dropped`` counts them.

    Not thread-safe: ``AlertmanagerService`` holds a lock around every call.
    """

    def __init__(self, settings: AlertmanagerSettings, max_batch: int = 1000) -> None:
        self.settings = settings
        self.max_batch = max_batch
        # oldest first; every resolved entry is unsent (delivered ones are forgotten)
        self._firing: OrderedDict[str, _Entry] = OrderedDict()
        self._resolved: OrderedDict[str, _Entry] = OrderedDict()
        self._versions = itertools.count(1)
        self._in_flight: dict[str, int] = {}
        self.consecutive_failures = 0
        self.backoff_until: float | None = None
        self.sent_total = 0
        self.failed_total = 0
        self.dropped = 0
        self.last_error: str | None = None

    def __len__(self) -> int:
        return len(self._firing) + len(self._resolved)

    def submit(self, alerts: Iterable[Alert], now: float) -> None:
        """Hold ``alerts`` for delivery; an unchanged re-submission keeps its schedule."""
        for alert in alerts:
            self._put(alert, now)
        self._enforce_bound()

    def due(self, now: float, *, ignore_backoff: bool = False) -> list[dict[str, Any]]:
        """Payloads to POST now; they become the batch that ``sent``/``failed`` settle."""
        self._in_flight = {}
        if self.in_backoff(now) and not ignore_backoff:
            return []
        batch = list(itertools.islice(self._due_entries(now), self.max_batch))
        self._in_flight = {e.alert.fingerprint: e.version for e in batch}
        return [to_postable(e.alert, now, self.settings) for e in batch]

    def sent(self, now: float) -> None:
        """The batch of the last ``due`` reached Alertmanager."""
        for fingerprint, version in self._in_flight.items():
            entry = self._find(fingerprint)
            if entry is None or entry.version != version:
                continue  # dropped or replaced meanwhile: the newer one is still unsent
            if entry.alert.status == "resolved":
                del self._resolved[fingerprint]
            else:
                entry.unsent, entry.last_sent = False, now
        self.sent_total += len(self._in_flight)
        self._in_flight = {}
        self.consecutive_failures, self.backoff_until = 0, None

    def failed(self, now: float, error: BaseException | str) -> None:
        """The batch of the last ``due`` did not get through: keep it all, back off."""
        self._in_flight = {}
        self.consecutive_failures += 1
        self.failed_total += 1
        self.last_error = str(error)
        self.backoff_until = now + self.backoff_delay()

    def backoff_delay(self) -> float:
        """Seconds to wait after ``consecutive_failures`` failures in a row."""
        s = self.settings
        exponent = min(max(self.consecutive_failures - 1, 0), 62)  # 2**63 s is "forever"
        return float(min(s.backoff_initial_s * 2**exponent, s.backoff_max_s))

    def in_backoff(self, now: float) -> bool:
        return self.backoff_until is not None and now < self.backoff_until

    def status(self) -> dict[str, Any]:
        """Counters for /status. ``pending``: alerts whose current version was never
        delivered; ``firing``: firing alerts held (delivered or not); ``sent_total``: alerts
        delivered; ``failed_total``: failed POSTs; ``backoff_until``: epoch seconds or None;
        ``last_error`` stays after a recovery (``consecutive_failures`` is then 0);
        ``oldest_unsent_at``: when the longest-waiting undelivered alert was submitted."""
        unsent = [e.submitted_at for e in self._entries() if e.unsent]
        return {
            "pending": len(unsent),
            "oldest_unsent_at": min(unsent, default=None),
            "firing": len(self._firing),
            "sent_total": self.sent_total,
            "failed_total": self.failed_total,
            "consecutive_failures": self.consecutive_failures,
            "dropped": self.dropped,
            "last_error": self.last_error,
            "backoff_until": self.backoff_until,
        }

    def _put(self, alert: Alert, now: float) -> None:
        fingerprint = alert.fingerprint
        old = self._firing.pop(fingerprint, None) or self._resolved.pop(fingerprint, None)
        if old is not None and old.alert == alert:
            entry = old
        else:
            last_sent = None if old is None else old.last_sent
            entry = _Entry(alert, next(self._versions), now, last_sent=last_sent)
        queue = self._firing if alert.status == "firing" else self._resolved
        queue[fingerprint] = entry  # (re)inserted last: the newest

    def _enforce_bound(self) -> None:
        while len(self) > self.settings.max_pending:
            (self._resolved or self._firing).popitem(last=False)
            self.dropped += 1

    def _due_entries(self, now: float) -> Iterable[_Entry]:
        yield from self._resolved.values()
        yield from (e for e in self._firing.values() if e.unsent)
        resend = self.settings.resend_interval_s
        for entry in self._firing.values():
            if not entry.unsent and now - (entry.last_sent or 0.0) >= resend:
                yield entry

    def _find(self, fingerprint: str) -> _Entry | None:
        return self._firing.get(fingerprint) or self._resolved.get(fingerprint)

    def _entries(self) -> Iterable[_Entry]:
        return itertools.chain(self._resolved.values(), self._firing.values())


# ---------------------------------------------------------------------------- HTTP


class AlertmanagerClient:
    """Alertmanager's alerts endpoint over aiohttp; every failure is ``ServiceUnavailable``.

    The session is opened on first use (inside the event loop that uses it); ``close``
    it, or use ``async with``. Credentials in the URL (``http://user:pass@host``) are
    used for basic auth and never appear in messages.
    """

    def __init__(self, settings: AlertmanagerSettings) -> None:
        if not settings.url:
            raise ConfigError(
                "TRACEWATCH_ALERTMANAGER_URL is empty: set it (e.g. http://127.0.0.1:9093) "
                "to send alerts to Alertmanager"
            )
        self.url = settings.url
        self.endpoint = f"{settings.url}{API_PATH}"
        self.timeout_s = settings.timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AlertmanagerClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def post(self, payloads: Sequence[dict[str, Any]]) -> None:
        """POST ``payloads`` (postableAlert objects) as one JSON list."""
        await self._request("POST", json=list(payloads))

    async def get_alerts(self, matchers: Sequence[str] = ()) -> list[dict[str, Any]]:
        """GET the alerts Alertmanager holds, optionally filtered (``'route="a/b"'``)."""
        params = [("filter", m) for m in matchers]
        body = await self._request("GET", params=params)
        return list(body or [])

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def _request(self, method: str, **kwargs: Any) -> Any:
        session = self._open()
        try:
            async with session.request(method, self.endpoint, **kwargs) as response:
                text = await response.text()
                if not 200 <= response.status < 300:
                    raise ServiceUnavailable(self._refused(method, response.status, text))
                return json.loads(text) if text.strip() else None
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise ServiceUnavailable(self._unreachable(method, exc)) from None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    def _refused(self, method: str, status: int, body: str) -> str:
        if status in (401, 403, 407):
            hint = "check the credentials in TRACEWATCH_ALERTMANAGER_URL or the proxy in front"
        elif status == 404:
            hint = (
                "check that TRACEWATCH_ALERTMANAGER_URL is Alertmanager's root URL "
                "(no /api path) and that it serves API v2 (Alertmanager >= 0.16)"
            )
        elif status < 500:
            hint = "Alertmanager refused the alerts (invalid labels or times?)"
        else:
            hint = "Alertmanager or a proxy in front of it failed; see its log"
        snippet = redact_text(" ".join(body.split())[:300])
        return (
            f"Alertmanager at {redact_url(self.url)} answered HTTP {status} to "
            f"{method} {API_PATH}: {snippet or '(empty body)'}; {hint}"
        )

    def _unreachable(self, method: str, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            why = f"no answer within {self.timeout_s:g} s (TRACEWATCH_ALERTMANAGER_TIMEOUT_S)"
        elif isinstance(exc, ValueError):
            why = f"the answer is not JSON ({exc})"
        else:
            why = redact_text(f"{type(exc).__name__}: {exc}")
        return (
            f"Alertmanager at {redact_url(self.url)} could not be reached ({method} "
            f"{API_PATH}: {why}); check that it is running and that "
            "TRACEWATCH_ALERTMANAGER_URL points at it (a local one: infra/alertmanager/start.sh)"
        )


# ---------------------------------------------------------------------------- service


class AlertmanagerService(mode.Service):
    """Posts alerts to Alertmanager in the background of the worker's event loop.

    ``submit`` may be called from any thread (the ingest thread does): it takes a lock,
    hands the alerts to the outbox and wakes the delivery task, which otherwise looks
    every ``tick_s`` for due alerts (resends, end of a backoff). An outage is logged once
    when it starts and once when it ends, not per attempt. Stopping makes one last
    best-effort delivery of what is unsent, bounded by ``stop_flush_timeout_s``.
    """

    def __init__(
        self,
        settings: AlertmanagerSettings,
        *,
        clock: Callable[[], float] = time.time,
        tick_s: float = 1.0,
        stop_flush_timeout_s: float = 2.0,
        max_batch: int = 1000,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.client = AlertmanagerClient(settings)
        self.outbox = AlertmanagerOutbox(settings, max_batch=max_batch)
        self.clock = clock  # wall clock: endsAt is compared with Alertmanager's clock
        self.tick_s = tick_s
        self.stop_flush_timeout_s = stop_flush_timeout_s
        self._lock = threading.Lock()  # guards the outbox and the outage fields
        self._deliver_lock = asyncio.Lock()  # one POST at a time (task or final flush)
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outage_since: float | None = None
        self._drops_reported = False  # drops are logged once until the next delivery

    def submit(self, alerts: Iterable[Alert]) -> None:
        """Queue alerts for delivery; thread-safe, never blocks on the network."""
        batch = list(alerts)
        if not batch:
            return
        with self._lock:
            dropped_before = self.outbox.dropped
            self.outbox.submit(batch, self.clock())
            first_drop = self.outbox.dropped > dropped_before and not self._drops_reported
            self._drops_reported |= first_drop
        if first_drop:
            log.warning(
                "more than %d alerts waiting for Alertmanager: dropping the oldest "
                "(resolved ones first) until it takes alerts again; see 'dropped' in /status",
                self.settings.max_pending,
            )
        self._poke()

    def status(self) -> dict[str, Any]:
        """The outbox counters plus where alerts go and since when it is unreachable."""
        with self._lock:
            body = self.outbox.status()
            body["outage_since"] = self._outage_since
        body["url"] = redact_url(self.settings.url)
        return body

    async def deliver_once(self, *, ignore_backoff: bool = False) -> int:
        """POST what is due now; returns how many alerts were delivered."""
        async with self._deliver_lock:
            with self._lock:
                payloads = self.outbox.due(self.clock(), ignore_backoff=ignore_backoff)
            if not payloads:
                return 0
            try:
                await self.client.post(payloads)
            except Exception as exc:
                self._failed(exc)
                return 0
            self._sent(len(payloads))
            return len(payloads)

    async def on_start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def on_stop(self) -> None:
        self._wake.set()  # the delivery task sees should_stop at once
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self.deliver_once(ignore_backoff=True), timeout=self.stop_flush_timeout_s
            )
        pending = self.status()["pending"]
        if pending:
            log.warning("stopping with %d alert(s) not delivered to Alertmanager", pending)

    async def on_shutdown(self) -> None:
        await self.client.close()  # after the delivery task is cancelled

    @mode.Service.task
    async def _deliver_forever(self) -> None:
        while not self.should_stop:
            delivered = await self.deliver_once()
            if delivered and delivered == self.outbox.max_batch:
                continue  # more may be waiting behind a full batch
            await self._nap()

    async def _nap(self) -> None:
        """Sleep ``tick_s``, less if a backoff ends sooner; ``submit`` and stop wake it."""
        with self._lock:
            until = self.outbox.backoff_until
        seconds = self.tick_s
        if until is not None:
            seconds = min(seconds, max(until - self.clock(), 0.01))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()

    def _poke(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # not started yet: the delivery task finds the alerts when it starts
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._wake.set)

    def _failed(self, exc: Exception) -> None:
        now = self.clock()
        with self._lock:
            self.outbox.failed(now, exc)
            first = self._outage_since is None
            if first:
                self._outage_since = now
            delay = self.outbox.backoff_delay()
        if first and not isinstance(exc, ServiceUnavailable):  # a bug: keep the traceback
            log.exception("unexpected error posting alerts to Alertmanager; retrying with backoff")
        elif first:
            log.warning("%s; retrying with backoff, alerts are kept meanwhile", exc)
        else:
            log.debug("Alertmanager still unreachable, next try in %.1f s: %s", delay, exc)

    def _sent(self, count: int) -> None:
        now = self.clock()
        with self._lock:
            self.outbox.sent(now)
            since, self._outage_since = self._outage_since, None
            self._drops_reported = False
            failures = self.outbox.failed_total
        if since is not None:
            log.info(
                "Alertmanager reachable again after %.1f s (%d failed POSTs so far); "
                "delivered %d alert(s)",
                now - since,
                failures,
                count,
            )
