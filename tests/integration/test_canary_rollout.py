"""A canary through the real worker: the alert, the variant signal, the SDK refusing it.

A route's recent traffic (``demo/canary.py``: ten minutes of ``prompt_version=v20``
alone, then fifteen with a quarter of the requests on ``v21``, whose latency is
1.6x and errors 6x) is produced to the events topic the way apps would, ending
now. The worker's rollout judge must roll the candidate back: a
``CanaryRegression`` alert on the alerts topic, an open ``variant:`` signal on
the breakers topic, an app's ``BreakerClient.variant_state`` refusing v21 while
it lets v20 through, and ``tracewatch rollouts --check`` failing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tracewatch.config import KafkaSettings
from tracewatch.demo.canary import ROUTE, canary_events
from tracewatch.schemas.alert import Alert
from tracewatch.sdk import AlertSubscriber, BreakerClient, TraceProducer
from tracewatch.streams.topics import ensure_topics

pytestmark = pytest.mark.integration

WARM_S, CANARY_S = 600.0, 900.0


def canary_alerts(kafka: KafkaSettings, within: float = 30.0) -> list[Alert]:
    found: list[Alert] = []
    with AlertSubscriber(kafka, from_beginning=True) as subscriber:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and not found:
            alert = subscriber.poll(0.5)
            if alert is not None and alert.alertname == "CanaryRegression":
                found.append(alert)
    return found


def test_a_bad_canary_is_rolled_back_and_refused(
    kafka_settings: KafkaSettings, tmp_path: Path, free_port: int, make_worker: Any
) -> None:
    ensure_topics(kafka_settings)
    worker = make_worker(kafka_settings, tmp_path, free_port)
    worker.start()
    worker.wait_for(lambda body: body is not None, timeout=60)
    start = time.time() - WARM_S - CANARY_S
    stream = canary_events(11, 0.25, "latency_errors", warm_s=WARM_S, canary_s=CANARY_S,
                           start_ts=start)  # fmt: skip

    with BreakerClient(kafka_settings) as router:
        assert router.wait_ready(30)
        assert router.variant_state(ROUTE, prompt_version="v21").verdict is None
        with TraceProducer(settings=kafka_settings) as app:
            for event in stream.events:
                app.send(event)
            app.flush()
        deadline = time.monotonic() + 180
        while router.variant_state(ROUTE, prompt_version="v21").allowed:
            assert time.monotonic() < deadline, worker.status()
            time.sleep(0.2)
        refused = router.variant_state(ROUTE, prompt_version="v21")
        incumbent = router.variant_state(ROUTE, prompt_version="v20")
    assert (refused.verdict, refused.weight) == ("rollback", 0.0)
    assert refused.scope == f"variant:{ROUTE}:prompt_version=v21"
    assert refused.signal is not None and refused.signal.metric in {"latency_ms", "error_rate"}
    assert refused.signal.opened_at is not None
    assert refused.signal.opened_at.timestamp() - stream.canary_start <= 25 * 60
    assert incumbent.allowed and incumbent.verdict is None  # the incumbent is not judged

    (alert,) = canary_alerts(kafka_settings)
    assert alert.status == "firing"
    assert alert.labels["route"] == ROUTE
    assert alert.labels["variant"] == "prompt_version=v21"
    assert alert.labels["incumbent"] == "prompt_version=v20"
    assert alert.labels["metric"] == refused.signal.metric
    assert " vs " in alert.summary and " for v20, n=" in alert.summary

    env = {
        **os.environ,
        "TRACEWATCH_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "TRACEWATCH_KAFKA_BREAKERS_TOPIC": kafka_settings.breakers_topic,
    }
    cli = subprocess.run(
        [str(Path(sys.executable).with_name("tracewatch")), "rollouts", "--check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 1, cli.stderr
    assert "prompt_version=v21" in cli.stdout and "rollback" in cli.stdout
    worker.stop()
