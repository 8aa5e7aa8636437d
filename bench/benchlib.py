"""What the benchmarks share: a bench broker setup, a real worker process, its status."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from tracewatch.config import KafkaSettings

ROOT = Path(__file__).resolve().parents[1]
#: the web token of every worker this bench run starts (TRACEWATCH_WORKER_TOKEN), so
#: ``worker_status`` can read /status without knowing each worker's home
WORKER_TOKEN = secrets.token_urlsafe(32)


def start_broker() -> None:
    """The local broker from infra/kafka (a no-op when it already runs)."""
    subprocess.run(["bash", str(ROOT / "infra/kafka/start.sh")], check=True, capture_output=True)


def bench_kafka(name: str, partitions: int = 6) -> KafkaSettings:
    """Topics and a consumer group of this run alone."""
    prefix = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    return KafkaSettings(
        events_topic=f"{prefix}.events", alerts_topic=f"{prefix}.alerts",
        breakers_topic=f"{prefix}.breakers", dlq_topic=f"{prefix}.dlq",
        stats_topic=f"{prefix}.stats", consumer_group=f"{prefix}-worker",
        events_partitions=partitions,
    )  # fmt: skip


def start_worker(
    kafka: KafkaSettings, home: Path, port: int, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``tracewatch run`` on the bench topics, with its own embedded ClickHouse under ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEWATCH_")}
    env.update(
        TRACEWATCH_HOME=str(home),
        TRACEWATCH_KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        TRACEWATCH_KAFKA_EVENTS_TOPIC=kafka.events_topic,
        TRACEWATCH_KAFKA_DLQ_TOPIC=kafka.dlq_topic,
        TRACEWATCH_KAFKA_STATS_TOPIC=kafka.stats_topic,
        TRACEWATCH_KAFKA_ALERTS_TOPIC=kafka.alerts_topic,
        TRACEWATCH_KAFKA_BREAKERS_TOPIC=kafka.breakers_topic,
        TRACEWATCH_KAFKA_CONSUMER_GROUP=kafka.consumer_group,
        TRACEWATCH_KAFKA_EVENTS_PARTITIONS=str(kafka.events_partitions),
        TRACEWATCH_WORKER_APP_ID=f"{kafka.consumer_group}-faust-{port}",
        TRACEWATCH_WORKER_WEB_PORT=str(port),
        TRACEWATCH_WORKER_TOKEN=WORKER_TOKEN,
        **(extra_env or {}),
    )
    tracewatch = str(Path(sys.executable).with_name("tracewatch"))
    log = (home / "worker.log").open("w")
    return subprocess.Popen([tracewatch, "run"], env=env, stdout=log, stderr=subprocess.STDOUT)


def worker_status(port: int) -> dict[str, object] | None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/status", headers={"Authorization": f"Bearer {WORKER_TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            body: dict[str, object] = json.loads(response.read())
            return body
    except OSError:
        return None


def wait_up(worker: subprocess.Popen[bytes], port: int, home: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while worker_status(port) is None:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited; see {home / 'worker.log'}")
        if time.monotonic() > deadline:
            raise SystemExit(f"the worker did not answer in {timeout:g} s; see {home}")
        time.sleep(0.3)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    worker.terminate()
    try:
        worker.wait(120)
    except subprocess.TimeoutExpired:
        worker.kill()
