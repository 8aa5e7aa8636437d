"""Real services for integration tests, started by the project's own infra scripts.

A service that does not start fails the test run (it never skips): the broker's
log tail is in the failure message.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracewatch.config import KafkaSettings

ROOT = Path(__file__).resolve().parents[2]
KAFKA_INFRA = ROOT / "infra" / "kafka"


def _kafka_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TRACEWATCH_")}


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A running broker: started here if needed, stopped at the end if we started it."""
    env = _kafka_env()
    was_running = (
        subprocess.run(
            ["bash", str(KAFKA_INFRA / "status.sh")], env=env, capture_output=True
        ).returncode
        == 0
    )
    started = subprocess.run(
        ["bash", str(KAFKA_INFRA / "start.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if started.returncode != 0:
        pytest.fail(f"the Kafka broker did not start:\n{started.stdout}\n{started.stderr}")
    port = env.get("KAFKA_PORT", "9092")
    yield f"127.0.0.1:{port}"
    if not was_running:
        subprocess.run(["bash", str(KAFKA_INFRA / "stop.sh")], env=env, capture_output=True)


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    """Topics and group of this test alone, so tests never see each other's messages."""
    prefix = f"it-{uuid.uuid4().hex[:10]}"
    return KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        events_topic=f"{prefix}.events",
        alerts_topic=f"{prefix}.alerts",
        breakers_topic=f"{prefix}.breakers",
        dlq_topic=f"{prefix}.dlq",
        stats_topic=f"{prefix}.stats",
        consumer_group=f"{prefix}-worker",
        events_partitions=4,
    )


@pytest.fixture
def free_port() -> int:
    """A TCP port nobody listens on right now, for a worker's web views."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
