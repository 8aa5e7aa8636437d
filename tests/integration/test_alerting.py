"""An error burst through the real worker: alert on the topic and in Alertmanager, then resolved.

The events are produced in two phases so that Alertmanager can be seen holding
the firing alert before the resolving events exist: phase one is 40 quiet
minutes and the first minutes of a burst of errors, phase two the rest of the
burst and 25 quiet minutes. Event time is three hours ago (a backfill), which is
what a replay or a catching-up worker sees too.
"""

from __future__ import annotations

import json
import math
import signal
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tracewatch.config import KafkaSettings
from tracewatch.schemas.alert import Alert
from tracewatch.sdk import AlertSubscriber, TraceProducer
from tracewatch.streams.topics import ensure_topics

pytestmark = pytest.mark.integration

PER_MINUTE = 60
BURST = (40, 50)  # minutes with a 30 % error rate
PHASE_ONE = 46  # minutes produced before the firing alert is checked
MINUTES = 75


def events(route: str, quiet_route: str, t0: float, minutes: range) -> list[dict[str, Any]]:
    rng = np.random.default_rng(minutes.start + 1)
    out = []
    for m in minutes:
        for i in range(PER_MINUTE):
            for r in (route, quiet_route):
                burst = r == route and BURST[0] <= m < BURST[1]
                failed = rng.random() < (0.3 if burst else 0.01)
                out.append(
                    {
                        "event_id": f"{r}-{m}-{i}",
                        "trace_id": f"t{m}-{i}",
                        "ts": t0 + 60 * m + i * (60 / PER_MINUTE),
                        "kind": "llm",
                        "route": r,
                        "model": "gpt-4o-mini",
                        "prompt_version": "v3",
                        "latency_ms": float(500 * rng.lognormal(0, 0.3)),
                        "cost_usd": float(0.001 * rng.lognormal(0, 0.3)),
                        "status": "error" if failed else "ok",
                    }
                )
    return out


def produce(kafka: KafkaSettings, batch: list[dict[str, Any]]) -> None:
    with TraceProducer(settings=kafka) as producer:
        for event in batch:
            producer.send(event)


def collect(subscriber: AlertSubscriber, want: Any, timeout: float = 120.0) -> list[Alert]:
    """Read alerts until ``want(alerts)`` holds."""
    seen: list[Alert] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alert = subscriber.poll(0.5)
        if alert is not None:
            seen.append(alert)
        if want(seen):
            return seen
    pytest.fail(f"alerts seen in {timeout}s: {[(a.alertname, a.status) for a in seen]}")


def in_alertmanager(url: str, route: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"filter": f'route="{route}"'})
    with urllib.request.urlopen(f"{url}/api/v2/alerts?{query}", timeout=5) as response:
        body: list[dict[str, Any]] = json.loads(response.read())
    return body


def wait_in_alertmanager(url: str, route: str, want: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    body: Any = None
    while time.monotonic() < deadline:
        body = in_alertmanager(url, route)
        if want(body):
            return body
        time.sleep(0.2)
    pytest.fail(f"Alertmanager did not get there in {timeout}s: {body}")


def test_an_error_burst_alerts_on_the_topic_and_in_alertmanager_then_resolves(
    kafka_settings: KafkaSettings,
    alertmanager_url: str,
    tmp_path: Path,
    free_port: int,
    make_worker: Any,
) -> None:
    ensure_topics(kafka_settings)
    route, quiet = f"it/{uuid.uuid4().hex[:8]}/burst", f"it/{uuid.uuid4().hex[:8]}/quiet"
    t0 = math.floor(time.time() / 60) * 60 - 3 * 3600
    worker = make_worker(
        kafka_settings,
        tmp_path,
        free_port,
        TRACEWATCH_WORKER_ALLOWED_LATENESS_S="30",
        TRACEWATCH_ALERTMANAGER_URL=alertmanager_url,
        TRACEWATCH_ALERTMANAGER_RESEND_INTERVAL_S="2",
    )
    worker.start()
    with AlertSubscriber(kafka_settings, from_beginning=True) as subscriber:
        produce(kafka_settings, events(route, quiet, t0, range(PHASE_ONE)))
        firing = collect(subscriber, lambda seen: any(a.status == "firing" for a in seen))
        alert = firing[-1]
        assert (alert.alertname, alert.status) == ("ErrorRateHigh", "firing")
        assert alert.labels == {
            "route": route, "metric": "error_rate", "detector": "error_rate",
            "severity": "warning", "model": "gpt-4o-mini", "prompt_version": "v3",
        }  # fmt: skip
        burst_start = t0 + 60 * BURST[0]
        assert burst_start < alert.starts_at.timestamp() <= burst_start + 5 * 60
        assert alert.value is not None and alert.value > 0.1
        assert alert.summary.startswith(f"error rate on {route} is ")

        open_alerts = worker.get("/alerts")["firing"]
        assert [a["fingerprint"] for a in open_alerts] == [alert.fingerprint]

        shown = wait_in_alertmanager(alertmanager_url, route, lambda body: len(body) == 1)[0]
        assert shown["labels"] == {"alertname": "ErrorRateHigh", **alert.labels}
        assert shown["status"]["state"] == "active"
        assert shown["annotations"]["summary"] == alert.summary

        produce(kafka_settings, events(route, quiet, t0, range(PHASE_ONE, MINUTES)))
        more = collect(subscriber, lambda seen: any(a.status == "resolved" for a in seen))
        resolved = more[-1]
        assert resolved.fingerprint == alert.fingerprint
        assert resolved.labels == alert.labels and resolved.starts_at == alert.starts_at
        assert resolved.ends_at is not None
        assert t0 + 60 * BURST[1] < resolved.ends_at.timestamp() <= t0 + 60 * MINUTES
        wait_in_alertmanager(alertmanager_url, route, lambda body: body == [])

        # nothing about the quiet route, and nothing twice
        for _ in range(6):
            extra = subscriber.poll(0.5)
            assert extra is None, extra
    statuses = [a.status for a in [*firing, *more] if a.fingerprint == alert.fingerprint]
    assert statuses == ["firing", "resolved"]
    assert all(a.labels["route"] == route for a in [*firing, *more])
    status = worker.status()
    assert status is not None and status["alertmanager"]["failed_total"] == 0
    worker.stop()


def test_after_a_kill_9_the_restarted_worker_remembers_the_baseline_and_resolves(
    kafka_settings: KafkaSettings, tmp_path: Path, free_port: int, make_worker: Any
) -> None:
    """Without the warm-up from stats_1m the new process would have no baseline, so
    the open alert would never resolve (and the burst's tail could not be judged)."""
    ensure_topics(kafka_settings)
    route, quiet = f"it/{uuid.uuid4().hex[:8]}/burst", f"it/{uuid.uuid4().hex[:8]}/quiet"
    t0 = math.floor(time.time() / 60) * 60 - 3 * 3600
    worker = make_worker(
        kafka_settings, tmp_path, free_port, TRACEWATCH_WORKER_ALLOWED_LATENESS_S="30"
    )
    worker.start()
    with AlertSubscriber(kafka_settings, from_beginning=True) as subscriber:
        produce(kafka_settings, events(route, quiet, t0, range(PHASE_ONE)))
        firing = collect(subscriber, lambda seen: any(a.status == "firing" for a in seen))
        worker.wait_for(lambda body: body["pending_events"] == 0 and body["alerts_sent"] >= 1)
        worker.stop(signal.SIGKILL)

        produce(kafka_settings, events(route, quiet, t0, range(PHASE_ONE, MINUTES)))
        worker.start()
        more = collect(subscriber, lambda seen: any(a.status == "resolved" for a in seen))
    fingerprint = firing[-1].fingerprint
    assert [a.status for a in more if a.fingerprint == fingerprint][-1] == "resolved"
    # a repeat after the restart is allowed only as the same alert (same starts_at)
    assert {a.starts_at for a in [*firing, *more] if a.fingerprint == fingerprint} == {
        firing[-1].starts_at
    }
    assert {a.labels["route"] for a in [*firing, *more]} == {route}
    worker.stop()
