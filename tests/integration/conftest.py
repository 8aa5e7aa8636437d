"""Real services for integration tests, started by the project's own infra scripts.

A service that does not start fails the test run (it never skips): the broker's
log tail is in the failure message.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tracewatch.config import KafkaSettings
from tracewatch.sdk import TraceProducer
from tracewatch.streams.topics import ensure_topics
from tracewatch.streams.worker_token import authorization_header, read_token

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


def unique_kafka_settings(bootstrap: str, partitions: int = 4, name: str = "it") -> KafkaSettings:
    """Topics and group of one test (or module) alone, so tests never see each other's
    messages."""
    prefix = f"{name}-{uuid.uuid4().hex[:10]}"
    return KafkaSettings(
        bootstrap_servers=bootstrap,
        events_topic=f"{prefix}.events",
        alerts_topic=f"{prefix}.alerts",
        breakers_topic=f"{prefix}.breakers",
        dlq_topic=f"{prefix}.dlq",
        stats_topic=f"{prefix}.stats",
        consumer_group=f"{prefix}-worker",
        events_partitions=partitions,
    )


@pytest.fixture(scope="session")
def new_kafka_settings() -> Callable[..., KafkaSettings]:
    """``unique_kafka_settings`` for module fixtures and private brokers."""
    return unique_kafka_settings


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    """Topics and group of this test alone (4 partitions on the shared broker)."""
    return unique_kafka_settings(kafka_bootstrap)


@pytest.fixture
def free_port() -> int:
    """A TCP port nobody listens on right now, for a worker's web views."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ALERTMANAGER_INFRA = ROOT / "infra" / "alertmanager"


def _alertmanager_env() -> dict[str, str]:
    """The environment of infra/alertmanager: the repo's own state dir (no TRACEWATCH_*)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TRACEWATCH_")}


@pytest.fixture(scope="session")
def alertmanager_url() -> Iterator[str]:
    """A running Alertmanager: started here if needed, stopped at the end if we started it."""
    env = _alertmanager_env()
    was_running = (
        subprocess.run(
            ["bash", str(ALERTMANAGER_INFRA / "status.sh")], env=env, capture_output=True
        ).returncode
        == 0
    )
    started = subprocess.run(
        ["bash", str(ALERTMANAGER_INFRA / "start.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if started.returncode != 0:
        pytest.fail(f"Alertmanager did not start:\n{started.stdout}\n{started.stderr}")
    host = env.get("ALERTMANAGER_HOST", "127.0.0.1")
    port = env.get("ALERTMANAGER_PORT", "9093")
    yield f"http://{host}:{port}"
    if not was_running:
        subprocess.run(["bash", str(ALERTMANAGER_INFRA / "stop.sh")], env=env, capture_output=True)


class WorkerProcess:
    """``tracewatch run`` as a real subprocess, configured through the environment."""

    def __init__(self, kafka: KafkaSettings, home: Path, port: int, **env: str) -> None:
        self.home = home
        self.url = f"http://127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "TRACEWATCH_HOME": str(home),
            "TRACEWATCH_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "TRACEWATCH_KAFKA_EVENTS_TOPIC": kafka.events_topic,
            "TRACEWATCH_KAFKA_DLQ_TOPIC": kafka.dlq_topic,
            "TRACEWATCH_KAFKA_STATS_TOPIC": kafka.stats_topic,
            "TRACEWATCH_KAFKA_ALERTS_TOPIC": kafka.alerts_topic,
            "TRACEWATCH_KAFKA_BREAKERS_TOPIC": kafka.breakers_topic,
            "TRACEWATCH_KAFKA_CONSUMER_GROUP": kafka.consumer_group,
            "TRACEWATCH_WORKER_APP_ID": f"{kafka.consumer_group}-faust",
            "TRACEWATCH_WORKER_WEB_PORT": str(port),
            "TRACEWATCH_WORKER_IDLE_PARTITION_S": "2",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        tracewatch = str(Path(sys.executable).with_name("tracewatch"))
        with (self.home / f"worker-{self.runs}.log").open("w") as log:
            self.proc = subprocess.Popen(
                [tracewatch, "run"], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def token(self) -> str | None:
        """The running worker's token, read as the CLI reads it (None before it is written)."""
        return worker_token(self.home)

    def auth(self) -> dict[str, str]:
        """``Authorization: Bearer <token>``, as the CLI sends it to the worker's views."""
        return authorization_header(self.token())

    def request(self, path: str, payload: Any = None) -> urllib.request.Request:
        """A GET of ``path`` (a JSON POST with ``payload``) carrying the worker's token."""
        headers = self.auth()
        if payload is None:
            return urllib.request.Request(f"{self.url}{path}", headers=headers)
        headers["Content-Type"] = "application/json"
        body = json.dumps(payload).encode()
        return urllib.request.Request(f"{self.url}{path}", body, headers, method="POST")

    def get(self, path: str, timeout: float = 10) -> Any:
        """``path``'s JSON answer, with the token."""
        with urllib.request.urlopen(self.request(path), timeout=timeout) as response:
            return json.loads(response.read())

    def status(self) -> dict[str, Any] | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = (self.home / f"worker-{self.runs}.log").read_text()[-3000:]
            pytest.fail(f"worker exited with {self.proc.returncode}:\n{log}")
        try:
            body: dict[str, Any] = self.get("/status", timeout=5)
        except OSError:
            return None
        return body

    def wait_for(self, done: Any, timeout: float = 240) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        body: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            body = self.status()
            if body is not None and done(body):
                return body
            time.sleep(0.2)
        pytest.fail(f"worker did not get there in {timeout}s: {body}")

    def kill(self) -> None:
        """Leave nothing running after a failed test."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail("worker did not stop within 60 s of SIGTERM")


def worker_token(home: Path) -> str | None:
    """The token of the worker that owns ``home``, from its token file as the CLI reads it."""
    return read_token(home)


def _worker_factory() -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def make(kafka: KafkaSettings, home: Path, port: int, **env: str) -> WorkerProcess:
        worker = WorkerProcess(kafka, home, port, **env)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.kill()


@pytest.fixture
def make_worker() -> Iterator[Callable[..., WorkerProcess]]:
    """``make_worker(kafka, home, port, **env)``: a ``tracewatch run`` subprocess (killed after)."""
    yield from _worker_factory()


@pytest.fixture(scope="module")
def make_module_worker() -> Iterator[Callable[..., WorkerProcess]]:
    """``make_worker`` for one worker that serves every test of a module (killed after it)."""
    yield from _worker_factory()


def unused_port() -> int:
    """A TCP port nobody listens on right now (for fixtures wider than one test)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateKafka:
    """A broker of its own (state dir, ports) that a test may stop, kill and start again.

    The shared broker on 9092 serves every other test and must never go down, so
    fault tests get this one: infra/kafka's own scripts, pointed elsewhere with
    ``KAFKA_STATE_DIR``/``KAFKA_PORT``/``KAFKA_CONTROLLER_PORT`` and sharing the
    shared broker's jars through ``KAFKA_LIB_DIR``.
    """

    def __init__(self, state_dir: Path, lib_dir: str) -> None:
        self.state_dir = state_dir
        self.port = unused_port()
        self.controller_port = unused_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.env = {
            **_kafka_env(),
            "KAFKA_STATE_DIR": str(state_dir),
            "KAFKA_LIB_DIR": lib_dir,
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "KAFKA_CDS": "0",  # no class archive of its own: its first stop stays fast
        }

    def script(self, name: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(KAFKA_INFRA / name)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self) -> None:
        done = self.script("start.sh")
        if done.returncode != 0:
            pytest.fail(f"the private Kafka broker did not start:\n{done.stdout}\n{done.stderr}")

    def stop(self) -> None:
        """A clean shutdown (SIGTERM, as an operator's restart does)."""
        done = self.script("stop.sh")
        if done.returncode != 0:
            pytest.fail(f"the private Kafka broker did not stop:\n{done.stdout}\n{done.stderr}")

    def kill(self) -> None:
        """kill -9 of the broker's JVM: no shutdown, the log is recovered at the next start."""
        pid = int((self.state_dir / "kafka.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def running(self) -> bool:
        return self.script("status.sh", timeout=30).returncode == 0


@pytest.fixture(scope="module")
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateKafka]:
    """A second broker on free ports with its own data dir, stopped after the module."""
    env = _kafka_env()
    setup = subprocess.run(
        ["bash", str(KAFKA_INFRA / "setup.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if setup.returncode != 0:
        pytest.fail(f"infra/kafka/setup.sh failed:\n{setup.stdout}\n{setup.stderr}")
    lib_dir = subprocess.run(
        ["bash", "-c", f'source "{KAFKA_INFRA / "env.sh"}" && printf %s "$KAFKA_LIB_DIR"'],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    broker = PrivateKafka(tmp_path_factory.mktemp("private-kafka") / "kafka", lib_dir)
    broker.start()
    try:
        yield broker
    finally:
        broker.script("stop.sh")


class PrivateAlertmanager:
    """An Alertmanager of one test: its own port and state dir, through the infra scripts.

    ``stop`` and ``start`` simulate an outage without touching the shared instance.
    """

    def __init__(self, home: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = home / "alertmanager"
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("TRACEWATCH_", "ALERT"))}
        self.env = {
            **keep,
            "TRACEWATCH_HOME": str(home),
            "ALERTMANAGER_HOST": "127.0.0.1",
            "ALERTMANAGER_PORT": str(self.port),
            "ALERTMANAGER_CLUSTER": "",  # no gossip port to collide with the shared one
        }

    def _run(self, script: str) -> None:
        done = subprocess.run(
            ["bash", str(ALERTMANAGER_INFRA / script)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            pytest.fail(f"{script} of the test's Alertmanager failed:\n{done.stdout}{done.stderr}")

    def start(self) -> None:
        self._run("start.sh")

    def stop(self, forget: bool = False) -> None:
        """Stop it; ``forget`` also removes its data dir so it comes back empty."""
        self._run("stop.sh")
        if forget:
            shutil.rmtree(self.state / "data", ignore_errors=True)


@pytest.fixture
def private_alertmanager(tmp_path: Path) -> Iterator[PrivateAlertmanager]:
    """A running Alertmanager on a free port of its own (stopped after the test)."""
    home = tmp_path / "am"
    home.mkdir()
    instance = PrivateAlertmanager(home)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


class Sender(threading.Thread):
    """Sends events at a steady wall-clock rate until told to stop, like an app would."""

    def __init__(self, kafka: KafkaSettings, events: list[dict[str, Any]], rate: float) -> None:
        super().__init__(name="sender", daemon=True)
        self.producer = TraceProducer(settings=kafka)
        self.events = events
        self.rate = rate
        self.ids: list[str] = []
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            start = time.monotonic()
            for i, event in enumerate(self.events):
                if self.halt.is_set():
                    return
                wait = start + i / self.rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self.producer.send(event)  # queues; serves delivery reports too
                self.ids.append(str(event["event_id"]))
        except BaseException as exc:  # surfaced by the test thread
            self.error = exc


@pytest.fixture
def make_sender() -> Callable[[KafkaSettings, list[dict[str, Any]], float], Sender]:
    """``make_sender(kafka, events, rate)``: a ``Sender`` thread, not started."""
    return Sender


@contextlib.contextmanager
def otlp_receiver(kafka: KafkaSettings, port: int, home: Path, **env: str) -> Iterator[str]:
    """``tracewatch otlp`` (a subprocess) on ``port``, producing to ``kafka``'s events topic;
    yields the traces URL. Its log is ``home/otlp.log``; a clean stop (Ctrl-C, exit 0) is
    part of the test. ``env``: more ``TRACEWATCH_*`` settings."""
    ensure_topics(kafka)
    full_env = {
        **os.environ,
        "TRACEWATCH_HOME": str(home),
        "TRACEWATCH_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "TRACEWATCH_KAFKA_EVENTS_TOPIC": kafka.events_topic,
        **env,
    }
    log_path = home / "otlp.log"
    tracewatch = str(Path(sys.executable).with_name("tracewatch"))
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [tracewatch, "otlp", "--port", str(port)],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    (home / "otlp.pid").write_text(str(proc.pid))  # for tests that watch its memory
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"tracewatch otlp exited: {log_path.read_text()[-3000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"tracewatch otlp did not listen: {log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1/traces"
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
        assert proc.wait(30) == 0, log_path.read_text()[-3000:]
        assert "otlp receiver stopped" in log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


@pytest.fixture
def start_otlp() -> Callable[..., contextlib.AbstractContextManager[str]]:
    """``with start_otlp(kafka, home, **env) as url``: ``tracewatch otlp`` on a free port."""

    def start(
        kafka: KafkaSettings, home: Path, **env: str
    ) -> contextlib.AbstractContextManager[str]:
        return otlp_receiver(kafka, unused_port(), home, **env)

    return start


@pytest.fixture
def receiver_url(kafka_settings: KafkaSettings, free_port: int, tmp_path: Path) -> Iterator[str]:
    """``tracewatch otlp`` on a free port, producing to this test's events topic."""
    with otlp_receiver(kafka_settings, free_port, tmp_path) as url:
        yield url
