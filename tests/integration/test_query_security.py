"""The worker's query path cannot change, read files, write files, stall or starve ingestion.

Issue 12, probed as an outsider would against a real ``tracewatch run``: every
request goes through ``QueryClient`` (the worker's ``/query`` view, as
``tracewatch query`` sends it). One worker serves the whole module; its query
time limit is lowered to ``TIME_LIMIT_S`` so the runaway query is cut quickly.
Each test ends by checking that events produced after the attack are stored:
ingestion must never depend on what a query did.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tracewatch.config import KafkaSettings, Settings
from tracewatch.errors import TracewatchError
from tracewatch.queries import QueryClient
from tracewatch.sdk import TraceProducer
from tracewatch.sinks.clickhouse import QueryResult
from tracewatch.streams.topics import ensure_topics

pytestmark = pytest.mark.integration

TIME_LIMIT_S = 3.0
CANARY = f"canary-{uuid.uuid4().hex}"  # in the worker's environment: /proc/self/environ
#: an aggregate over 10^10 rows: minutes of CPU without a limit
RUNAWAY = "SELECT count() FROM numbers(10000000000) WHERE modulo(sipHash64(number), 7) = 3"


def integration_conftest(config: pytest.Config) -> Any:
    """tests/integration/conftest.py as pytest loaded it (its WorkerProcess and Sender),
    for a worker shared by the module: its own fixtures are per test."""
    return config.pluginmanager.getplugin(str(Path(__file__).with_name("conftest.py")))


class Running:
    def __init__(self, worker: Any, kafka: KafkaSettings, sender: Any) -> None:
        self.sender_class = sender
        self.worker = worker
        self.kafka = kafka
        self.producer = TraceProducer(settings=kafka)
        self.sent = 0

    def ask(self, sql: str, **parameters: Any) -> QueryResult:
        """Run ``sql`` as ``tracewatch query sql`` does (through the worker's /query)."""
        settings = Settings()
        settings.home = self.worker.home
        client = QueryClient(settings)
        try:
            return client.run(sql, parameters)
        finally:
            client.close()

    def refused(self, sql: str, **parameters: Any) -> str:
        """The error text of a query that must not run."""
        with pytest.raises(TracewatchError) as caught:
            result = self.ask(sql, **parameters)
            pytest.fail(f"ran: {sql!r} -> {result.rows[:3]}")
        return str(caught.value)

    def stored(self) -> int:
        return int(self.worker.wait_for(lambda b: True)["stored_events"])

    def produce(self, n: int) -> None:
        now = time.time()
        for i in range(n):
            self.sent += 1
            self.producer.send(
                {
                    "event_id": f"qsec-{uuid.uuid4().hex}",
                    "trace_id": f"t-{self.sent}",
                    "ts": now - 60 + i * 0.001,
                    "kind": "llm",
                    "route": "qsec/route",
                    "latency_ms": 10.0,
                }
            )
        self.producer.flush(30)

    def assert_ingesting(self) -> None:
        """Events produced now are stored (the writer's session is untouched)."""
        self.produce(50)
        self.worker.wait_for(lambda b: b["stored_events"] >= self.sent, timeout=60)


@pytest.fixture(scope="module")
def running(
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    new_kafka_settings: Any,
) -> Iterator[Running]:
    shared = integration_conftest(request.config)
    kafka = new_kafka_settings(kafka_bootstrap, 2, "qsec")
    ensure_topics(kafka)
    home = tmp_path_factory.mktemp("query-security")
    worker = shared.WorkerProcess(
        kafka,
        home,
        shared.unused_port(),
        TRACEWATCH_QUERY_MAX_EXECUTION_TIME_S=str(TIME_LIMIT_S),
        QSEC_CANARY=CANARY,
    )
    worker.start()
    try:
        worker.wait_for(lambda b: True, timeout=180)
        run = Running(worker, kafka, shared.Sender)
        run.assert_ingesting()
        yield run
    finally:
        worker.kill()


def test_documented_queries_still_work(running: Running) -> None:
    readme = "SELECT route, sum(count) FROM {db:Identifier}.stats_1m GROUP BY route"
    running.ask(readme)  # no minute has closed yet: no rows, but no error
    routes = running.ask(
        "SELECT route, count() AS n FROM {db:Identifier}.events WHERE route = {r:String} "
        "GROUP BY route",
        r="qsec/route",
    )
    assert routes.rows and routes.rows[0][0] == "qsec/route"
    union = "SELECT x FROM (SELECT 1 AS x UNION ALL SELECT 2 AS x) ORDER BY x"
    assert running.ask(union).rows == [(1,), (2,)]
    assert running.ask("SELECT count() FROM numbers(10) WHERE number % 2 = 0").rows == [(5,)]


def test_several_statements_run_none(running: Running) -> None:
    for sql in (
        "SELECT 1; CREATE TABLE {db:Identifier}.pwned (x UInt8) ENGINE = Memory; SELECT 1",
        "SELECT 1;\nCREATE TABLE tracewatch.pwned (x UInt8) ENGINE = Memory",
        "SELECT 1 /* ; */ ; CREATE TABLE tracewatch.pwned (x UInt8) ENGINE = Memory;",
    ):
        assert "one SELECT" in running.refused(sql)
    error = running.refused("SELECT count() FROM {db:Identifier}.pwned")
    assert "pwned" in error  # unknown table: nothing was created
    running.assert_ingesting()


def test_files_cannot_be_read(running: Running) -> None:
    for sql in (
        "SELECT file('/etc/passwd')",
        "SELECT FILE('/proc/self/environ')",
        "SELECT * FROM file('/proc/self/environ', 'RawBLOB')",
        "SELECT x FROM (SELECT file('/proc/self/environ') AS x)",
        "SELECT 1 WHERE 'a' IN (SELECT file('/proc/self/environ'))",
        "SELECT * FROM numbers(1) AS n JOIN file('/etc/passwd', 'LineAsString') AS f ON 1",
        "SELECT * FROM system.processes",
    ):
        error = running.refused(sql)
        assert CANARY not in error and "root:" not in error, sql
    running.assert_ingesting()


def test_files_cannot_be_written(running: Running, tmp_path: Path) -> None:
    target = tmp_path / "owned.pth"
    for sql in (
        f"SELECT 'import os' INTO OUTFILE '{target}' TRUNCATE",
        f"SELECT 'import os' INTO OUTFILE '{target}' TRUNCATE FORMAT TSVRaw",
        f"INSERT INTO FUNCTION file('{target}', 'TSVRaw', 'x String') SELECT 'import os'",
        f"SELECT 1; INSERT INTO FUNCTION file('{target}', 'TSVRaw', 'x String') SELECT 'x'",
    ):
        running.refused(sql)
        assert not target.exists(), sql
    running.assert_ingesting()


def test_refused_statements_leave_ingestion_running(running: Running) -> None:
    for sql in (
        "SET max_threads = 1",
        "SET readonly = 1",
        "CREATE TABLE {db:Identifier}.pwned (x UInt8) ENGINE = Memory",
        "DROP TABLE {db:Identifier}.events",
        "SELECT 1 SETTINGS readonly = 1",
        "SELECT 1 SETTINGS max_execution_time = 0",
        "USE system",
    ):
        running.refused(sql)
        running.assert_ingesting()
    assert running.ask("SELECT count() FROM {db:Identifier}.events").rows[0][0] >= running.sent


def test_a_runaway_query_is_cut_off_and_ingestion_goes_on(running: Running) -> None:
    before = running.stored()
    sender = running.sender_class(
        running.kafka,
        [
            {"event_id": f"run-{uuid.uuid4().hex}", "trace_id": f"r{i}", "ts": time.time() - 30,
             "kind": "llm", "route": "qsec/runaway"}
            for i in range(4000)
        ],
        rate=200.0,
    )  # fmt: skip
    outcome: dict[str, Any] = {}

    def heavy() -> None:
        started = time.monotonic()
        try:
            running.ask(RUNAWAY)
            outcome["error"] = None
        except TracewatchError as exc:
            outcome["error"] = str(exc)
        outcome["took"] = time.monotonic() - started

    sender.start()
    try:
        time.sleep(1.0)
        query = threading.Thread(target=heavy, daemon=True)
        query.start()
        samples = []
        while query.is_alive() and len(samples) < 40:
            samples.append(running.stored())
            time.sleep(0.5)
        query.join(0.1)
    finally:
        sender.halt.set()
        sender.join(30)
    assert not query.is_alive(), f"still running after 20 s; stored meanwhile: {samples}"
    assert outcome["error"] is not None, "the runaway query finished instead of being cut"
    assert "TRACEWATCH_QUERY_MAX_EXECUTION_TIME_S" in outcome["error"], outcome["error"]
    assert outcome["took"] < TIME_LIMIT_S + 5, outcome
    stored_meanwhile = samples[-1] - samples[0]
    print(f"\nrunaway query cut after {outcome['took']:.1f} s; {stored_meanwhile} events stored "
          f"meanwhile ({before} before)")  # fmt: skip
    assert stored_meanwhile > 0, f"nothing stored while the query ran: {samples}"
    running.assert_ingesting()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_a_huge_result_is_refused_by_the_row_limit(running: Running) -> None:
    """20 million rows once took the worker 2.3 GB and blocked its event loop ~7 s."""
    pid = running.worker.proc.pid
    before, started = rss_mb(pid), time.monotonic()
    error = running.refused("SELECT number FROM numbers(20000000)")
    took, grown = time.monotonic() - started, rss_mb(pid) - before
    assert "TRACEWATCH_QUERY_MAX_RESULT_ROWS" in error, error
    print(f"\n20 million rows refused after {took:.2f} s, worker RSS +{grown:.0f} MB")
    assert took < 5 and grown < 300, (took, grown)
    assert len(running.ask("SELECT number FROM numbers(1000)").rows) == 1000
    running.assert_ingesting()
