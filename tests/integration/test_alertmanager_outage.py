"""Alertmanager down while alerts fire: they are on the alerts topic, and reach it when back.

The real worker sends to an Alertmanager of this test alone (its own port and
state dir), which is stopped before an error burst makes ``ErrorRateHigh`` fire.
While it is down the alert is on the Kafka topic and the worker's ``/status``
shows it held in the Alertmanager outbox with failing POSTs; once Alertmanager
is started again, empty, on the same port, the held alert arrives within the
capped backoff. The issue's "a few minutes" of outage is scaled down to about
twenty seconds: the backoff is capped at one second, so a longer outage would
only repeat the same failing tries.
"""

from __future__ import annotations

import json
import math
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
BURST_FROM = 40  # minutes of quiet baseline, then 30 % of calls fail
MINUTES = 46  # produced: the burst is still going, so the alert stays firing
OUTAGE_S = 20.0  # at least this long down, counted from the stop
BACKOFF_MAX_S = 1.0
AM_ENV = {
    "TRACEWATCH_ALERTMANAGER_RESEND_INTERVAL_S": "2",
    "TRACEWATCH_ALERTMANAGER_BACKOFF_INITIAL_S": "0.2",
    "TRACEWATCH_ALERTMANAGER_BACKOFF_MAX_S": str(BACKOFF_MAX_S),
    "TRACEWATCH_ALERTMANAGER_TIMEOUT_S": "1",
}


def burst_events(route: str, t0: float) -> list[dict[str, Any]]:
    rng = np.random.default_rng(7)
    return [
        {
            "event_id": f"{route}-{m}-{i}",
            "trace_id": f"t{m}-{i}",
            "ts": t0 + 60 * m + i * (60 / PER_MINUTE),
            "kind": "llm",
            "route": route,
            "model": "gpt-4o-mini",
            "prompt_version": "v3",
            "latency_ms": float(500 * rng.lognormal(0, 0.3)),
            "cost_usd": float(0.001 * rng.lognormal(0, 0.3)),
            "status": "error" if rng.random() < (0.3 if m >= BURST_FROM else 0.01) else "ok",
        }
        for m in range(MINUTES)
        for i in range(PER_MINUTE)
    ]


def in_alertmanager(url: str, route: str) -> list[dict[str, Any]] | None:
    """What Alertmanager shows for ``route``; None while it does not answer."""
    query = urllib.parse.urlencode({"filter": f'route="{route}"'})
    try:
        with urllib.request.urlopen(f"{url}/api/v2/alerts?{query}", timeout=2) as response:
            body: list[dict[str, Any]] = json.loads(response.read())
    except OSError:
        return None
    return body


def test_alerts_fired_during_an_alertmanager_outage_reach_it_when_it_is_back(
    kafka_settings: KafkaSettings,
    private_alertmanager: Any,
    tmp_path: Path,
    free_port: int,
    make_worker: Any,
) -> None:
    am = private_alertmanager
    ensure_topics(kafka_settings)
    route = f"it/{uuid.uuid4().hex[:8]}/outage"
    t0 = math.floor(time.time() / 60) * 60 - 3 * 3600
    home = tmp_path / "worker"
    home.mkdir()
    worker = make_worker(
        kafka_settings,
        home,
        free_port,
        TRACEWATCH_WORKER_ALLOWED_LATENESS_S="30",
        TRACEWATCH_ALERTMANAGER_URL=am.url,
        **AM_ENV,
    )
    worker.start()
    worker.wait_for(lambda body: body["alertmanager"] is not None)

    am.stop(forget=True)
    down_at = time.monotonic()
    assert in_alertmanager(am.url, route) is None, "Alertmanager should be down"

    with AlertSubscriber(kafka_settings, from_beginning=True) as subscriber:
        with TraceProducer(settings=kafka_settings) as producer:
            for event in burst_events(route, t0):
                producer.send(event)
        seen: list[Alert] = []
        deadline = time.monotonic() + 120
        while not any(a.status == "firing" for a in seen) and time.monotonic() < deadline:
            alert = subscriber.poll(0.5)
            if alert is not None:
                seen.append(alert)
    firing = [a for a in seen if a.status == "firing"]
    assert [(a.alertname, a.labels["route"]) for a in firing] == [("ErrorRateHigh", route)], seen

    # held while Alertmanager is down: pending in the outbox, POSTs failing
    held = worker.wait_for(lambda body: body["alertmanager"]["failed_total"] >= 3, timeout=30)
    during = held["alertmanager"]
    assert during["pending"] == 1 and during["firing"] == 1 and during["sent_total"] == 0
    assert during["outage_since"] is not None and during["consecutive_failures"] >= 3
    assert am.url in during["last_error"]
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
    assert in_alertmanager(am.url, route) is None, "Alertmanager should still be down"

    am.start()
    back_at = time.monotonic()
    shown: list[dict[str, Any]] | None = None
    while time.monotonic() - back_at < 10 * BACKOFF_MAX_S:
        shown = in_alertmanager(am.url, route)
        if shown:
            break
        time.sleep(0.1)
    arrived_s = time.monotonic() - back_at
    print(f"\nAlertmanager was down {back_at - down_at:.1f}s; the alert (event time "
          f"{firing[0].starts_at:%H:%M}) arrived {arrived_s:.1f}s after it was back")  # fmt: skip
    assert shown is not None and len(shown) == 1, shown
    assert shown[0]["labels"] == {"alertname": "ErrorRateHigh", **firing[0].labels}
    assert shown[0]["annotations"]["tracewatch_fingerprint"] == firing[0].fingerprint
    assert shown[0]["status"]["state"] == "active"

    after = worker.wait_for(lambda body: body["alertmanager"]["pending"] == 0, timeout=10)
    status = after["alertmanager"]
    assert status["sent_total"] >= 1 and status["consecutive_failures"] == 0
    assert status["outage_since"] is None
    assert after["alerts_sent"] == 1  # on the topic once; the retries were to Alertmanager only
    print(f"{status['failed_total']} failed POSTs during the outage, {status['sent_total']} sent")
    worker.stop()
