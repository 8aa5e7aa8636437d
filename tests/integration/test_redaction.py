"""No password in a URL is ever printed: the real worker, its log, ``status`` and the CLI.

The worker is started with an Alertmanager URL that carries ``user:password`` and
points at a closed port, so every delivery fails and is logged; an alert is made to
fire (an error burst, as in test_alertmanager_outage.py). Its start-up banner, its
whole log, ``/status`` and ``tracewatch status`` are searched for the password. A
refused Alertmanager URL and an unreachable ClickHouse DSN with a password are
checked the same way.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tracewatch.config import KafkaSettings
from tracewatch.sdk import TraceProducer
from tracewatch.streams.topics import ensure_topics

pytestmark = pytest.mark.integration

PASSWORD = "Zq9-pw"  # short: pydantic would elide the middle of a long value


def squeezed(text: str) -> str:
    """``text`` without whitespace: a terminal may wrap a long line inside the password."""
    return "".join(text.split())


TRACEWATCH = str(Path(sys.executable).with_name("tracewatch"))


def burst_events(route: str, t0: float) -> list[dict[str, Any]]:
    """40 quiet minutes, then 30 % errors: ErrorRateHigh fires."""
    rng = np.random.default_rng(7)
    return [
        {
            "event_id": f"{route}-{m}-{i}", "trace_id": f"t{m}-{i}", "ts": t0 + 60 * m + i,
            "kind": "llm", "route": route, "model": "gpt-4o-mini",
            "latency_ms": float(500 * rng.lognormal(0, 0.3)),
            "status": "error" if rng.random() < (0.3 if m >= 40 else 0.01) else "ok",
        }
        for m in range(46)
        for i in range(60)
    ]  # fmt: skip


def cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TRACEWATCH_")},
        "TRACEWATCH_HOME": str(home),
        **env,
    }
    return subprocess.run(
        [TRACEWATCH, *args], env=full_env, capture_output=True, text=True, timeout=90
    )


def test_the_worker_never_prints_the_alertmanager_password(
    kafka_settings: KafkaSettings, tmp_path: Path, free_port: int, make_worker: Any
) -> None:
    ensure_topics(kafka_settings)
    closed = free_port + 1 if free_port < 65535 else free_port - 1
    url = f"http://tracewatch:{PASSWORD}@127.0.0.1:{closed}"
    route = f"it/{uuid.uuid4().hex[:8]}/redact"
    worker = make_worker(
        kafka_settings,
        tmp_path,
        free_port,
        TRACEWATCH_ALERTMANAGER_URL=url,
        TRACEWATCH_ALERTMANAGER_BACKOFF_INITIAL_S="0.2",
        TRACEWATCH_ALERTMANAGER_BACKOFF_MAX_S="0.5",
        TRACEWATCH_ALERTMANAGER_TIMEOUT_S="1",
        TRACEWATCH_WORKER_ALLOWED_LATENESS_S="30",
    )
    worker.start()
    worker.wait_for(lambda body: body["alertmanager"] is not None)
    t0 = math.floor(time.time() / 60) * 60 - 3 * 3600
    with TraceProducer(settings=kafka_settings) as producer:
        for event in burst_events(route, t0):
            producer.send(event)
    body = worker.wait_for(lambda b: b["alertmanager"]["failed_total"] >= 2, timeout=180)
    assert "127.0.0.1" in body["alertmanager"]["last_error"]  # the error names where
    status = cli(tmp_path, "status")
    worker.stop()

    log = (tmp_path / "worker-1.log").read_text()
    assert "tracewatch worker:" in log and f"127.0.0.1:{closed}" in log  # banner names it
    assert "could not be reached" in log  # the delivery failures are logged
    for where, text in {
        "log": log,
        "/status": str(body),
        "status stdout": status.stdout,
        "status stderr": status.stderr,
    }.items():
        assert PASSWORD not in squeezed(text), f"the Alertmanager password is in the {where}"
    assert status.returncode == 0 and "alertmanager" in status.stdout, status.stderr[-2000:]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRACEWATCH_ALERTMANAGER_URL", f"ftp://tracewatch:{PASSWORD}@127.0.0.1:9093"),
        ("TRACEWATCH_ALERTMANAGER_URL", f"http://tracewatch:{PASSWORD}@127.0.0.1:notaport"),
        ("TRACEWATCH_CLICKHOUSE_DSN", f"ftp://default:{PASSWORD}@127.0.0.1:8123"),
        ("TRACEWATCH_CLICKHOUSE_DSN", f"http://default:{PASSWORD}@127.0.0.1:1"),
    ],
    ids=["am-scheme", "am-port", "ch-scheme", "ch-unreachable"],
)
def test_a_refused_or_unreachable_url_is_reported_without_its_password(
    kafka_bootstrap: str, tmp_path: Path, free_port: int, variable: str, value: str
) -> None:
    done = cli(
        tmp_path,
        "run",
        **{
            variable: value,
            "TRACEWATCH_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "TRACEWATCH_WORKER_WEB_PORT": str(free_port),
            "TRACEWATCH_KAFKA_EVENTS_TOPIC": f"it-{uuid.uuid4().hex[:8]}.events",
        },
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-2000:]
    assert variable in output or "127.0.0.1" in output, output[-2000:]  # it says where
    assert PASSWORD not in squeezed(output), output[-2000:]


def test_query_commands_report_an_unreachable_clickhouse_without_its_password(
    tmp_path: Path,
) -> None:
    done = cli(tmp_path, "query", "top", "--clickhouse-dsn", f"http://u:{PASSWORD}@127.0.0.1:1")
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "127.0.0.1" in output, output[-2000:]
    assert PASSWORD not in squeezed(output), output[-2000:]
