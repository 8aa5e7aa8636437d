"""The breaker client: what a check answers, and how the topic becomes that state, no broker.

``BreakerState`` holds the rules with the time passed in, so expiry, half-open
probing and fail-open/fail-closed are pinned without sleeping. The client's
thread is driven by ``FakeConsumer`` (real confluent ``Message`` and
``KafkaError`` objects, scripted ``poll`` results).
"""

from __future__ import annotations

import json
import logging
import queue
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

import tracewatch.sdk.breakers as breakers_module
from tracewatch.config import KafkaSettings
from tracewatch.errors import ConfigError, TracewatchError
from tracewatch.schemas.breaker import BreakerSignal
from tracewatch.sdk import BreakerClient, BreakerOpen
from tracewatch.sdk.breakers import BreakerState, Decision
from tracewatch.sinks.kafka_breakers import breaker_key, breaker_value

CONTRACT_EXAMPLE = """
{"scope": "trace:4bf92f3577b34da6", "state": "open", "reason": "loop_depth 26 > 25",
 "opened_at": "2026-11-22T10:04:01Z", "ttl_s": 600}
"""
OPENED = datetime(2026, 11, 22, 10, 4, 1, tzinfo=UTC)
T0 = OPENED.timestamp()
UNREACHABLE_OPEN = "monitor unreachable (fail-open)"
UNREACHABLE_CLOSED = "monitor unreachable (fail-closed)"


def signal(scope: str, state: str = "open", ttl_s: float | None = 60, **more: Any) -> BreakerSignal:
    fields: dict[str, Any] = {"reason": f"{scope} misbehaves", "opened_at": OPENED, **more}
    return BreakerSignal(scope=scope, state=state, ttl_s=ttl_s, **fields)  # type: ignore[arg-type]


def live_state(*signals: BreakerSignal, **kwargs: Any) -> BreakerState:
    """A state that has caught up and heard from the monitor at T0."""
    state = BreakerState(**kwargs)
    for s in signals:
        state.apply(s)
    state.mark_ready()
    state.contact(T0)
    return state


# -- the wire form -------------------------------------------------------------------------


def test_contract_example_round_trips_keyed_by_scope() -> None:
    example = BreakerSignal.model_validate_json(CONTRACT_EXAMPLE)
    assert breaker_key(example) == b"trace:4bf92f3577b34da6"
    wire = json.loads(breaker_value(example))
    assert wire == {**json.loads(CONTRACT_EXAMPLE), "ttl_s": 600.0}
    assert wire["opened_at"] == "2026-11-22T10:04:01Z"
    assert BreakerSignal.model_validate_json(breaker_value(example)) == example


# -- trace breakers ------------------------------------------------------------------------


def test_open_trace_is_refused_with_its_reason_until_it_expires() -> None:
    state = live_state(BreakerSignal.model_validate_json(CONTRACT_EXAMPLE))
    refused = state.check("4bf92f3577b34da6", "refund/primary", now=T0 + 1)
    assert refused == Decision(False, "trace:4bf92f3577b34da6", "loop_depth 26 > 25")
    assert refused.signal is not None and refused.signal.ttl_s == 600
    assert not state.check("4bf92f3577b34da6", now=T0 + 599.9).allowed
    state.contact(T0 + 600)
    assert state.check("4bf92f3577b34da6", now=T0 + 600) == Decision(True)


def test_other_traces_and_routes_are_allowed() -> None:
    state = live_state(signal("trace:abc"))
    assert state.check("xyz", "refund/primary", now=T0) == Decision(True)
    assert state.check(now=T0).allowed


def test_trace_without_ttl_or_opened_at_stays_open_until_closed() -> None:
    state = live_state(signal("trace:a", ttl_s=None), signal("trace:b", opened_at=None))
    state.contact(T0 + 1e6)
    assert not state.check("a", now=T0 + 1e6).allowed
    assert not state.check("b", now=T0 + 1e6).allowed
    state.apply(signal("trace:a", "closed"))
    assert state.check("a", now=T0 + 1e6).allowed


def test_naive_opened_at_is_utc() -> None:
    naive = signal("trace:a", ttl_s=10, opened_at=OPENED.replace(tzinfo=None))
    state = live_state(naive)
    assert not state.check("a", now=T0 + 9).allowed
    assert state.check("a", now=T0 + 10).allowed


def test_trace_breaker_is_reported_before_the_route_breaker() -> None:
    state = live_state(signal("trace:a"), signal("route:r"))
    assert state.check("a", "r", now=T0).scope == "trace:a"
    assert state.check("b", "r", now=T0).scope == "route:r"


def test_prune_drops_expired_traces_and_keeps_routes() -> None:
    state = live_state(signal("trace:old", ttl_s=10), signal("trace:new", ttl_s=100))
    state.apply(signal("route:r", ttl_s=10))
    assert state.prune(T0 + 50) == 1
    assert state.get("trace:old") is None
    assert state.get("trace:new") is not None
    assert state.get("route:r") is not None  # half-open, waits for a signal
    assert len(state) == 2


# -- route breakers: open, half-open, closed ------------------------------------------------


def test_open_route_is_refused_then_half_open_lets_one_probe_in_n_through() -> None:
    state = live_state(signal("route:refund/primary", ttl_s=30), probe_every=3)
    refused = state.check(route="refund/primary", now=T0 + 29)
    assert refused.reason == "route:refund/primary misbehaves"
    state.contact(T0 + 30)
    decisions = [state.check(route="refund/primary", now=T0 + 30) for _ in range(7)]
    assert [d.allowed for d in decisions] == [True, False, False, True, False, False, True]
    assert [d.probe for d in decisions] == [d.allowed for d in decisions]
    assert decisions[0].reason == "route:refund/primary misbehaves (half-open probe)"
    assert decisions[1].reason == "route:refund/primary misbehaves (half-open)"


def test_a_new_open_signal_ends_half_open_and_a_closed_one_allows() -> None:
    state = live_state(signal("route:r", ttl_s=30), probe_every=1)
    state.contact(T0 + 40)
    assert state.check(route="r", now=T0 + 40).probe
    state.apply(signal("route:r", ttl_s=30, opened_at=datetime.fromtimestamp(T0 + 35, UTC)))
    assert state.check(route="r", now=T0 + 40) == Decision(False, "route:r", "route:r misbehaves")
    state.apply(signal("route:r", "closed"))
    assert state.check(route="r", now=T0 + 40) == Decision(True)
    assert len(state) == 0


def test_route_without_ttl_never_goes_half_open() -> None:
    state = live_state(signal("route:r", ttl_s=None), probe_every=1)
    state.contact(T0 + 1e6)
    assert not state.check(route="r", now=T0 + 1e6).allowed


def test_closed_for_an_unknown_scope_and_tombstones_are_harmless() -> None:
    state = live_state(signal("route:r"))
    state.apply(signal("trace:never-opened", "closed"))
    state.remove("route:r")
    state.remove("route:unknown")
    assert len(state) == 0


# -- fail-open / fail-closed ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fail_open", "reason"), [(True, UNREACHABLE_OPEN), (False, UNREACHABLE_CLOSED)]
)
def test_before_catching_up_the_answer_is_fail_open_or_fail_closed(
    fail_open: bool, reason: str
) -> None:
    state = BreakerState(fail_open=fail_open)
    state.contact(T0)
    assert state.check("a", "r", now=T0) == Decision(fail_open, None, reason)
    state.mark_ready()
    assert state.check("a", "r", now=T0) == Decision(True)


@pytest.mark.parametrize(
    ("fail_open", "reason"), [(True, UNREACHABLE_OPEN), (False, UNREACHABLE_CLOSED)]
)
def test_silence_longer_than_stale_after_s_is_fail_open_or_fail_closed(
    fail_open: bool, reason: str
) -> None:
    state = live_state(fail_open=fail_open, stale_after_s=5)
    assert state.check("a", now=T0 + 5) == Decision(True)
    assert state.check("a", now=T0 + 5.01) == Decision(fail_open, None, reason)
    state.contact(T0 + 6)
    assert state.check("a", now=T0 + 6) == Decision(True)
    state.lose_contact()
    assert state.check("a", now=T0 + 6) == Decision(fail_open, None, reason)


def test_a_known_open_breaker_still_refuses_while_the_monitor_is_unreachable() -> None:
    state = live_state(signal("trace:a"), fail_open=True, stale_after_s=5)
    assert state.check("a", now=T0 + 10).reason == "trace:a misbehaves"
    assert state.check("b", now=T0 + 10).reason == UNREACHABLE_OPEN


@pytest.mark.parametrize("kwargs", [{"probe_every": 0}, {"stale_after_s": 0}])
def test_nonsense_parameters_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BreakerState(**kwargs)


# -- guard and protect ----------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def offline_client(*signals: BreakerSignal, **kwargs: Any) -> BreakerClient:
    """A client that never connects; its state is fed by the test and its clock is T0."""
    client = BreakerClient(start=False, clock=Clock(), **kwargs)
    for s in signals:
        client.state.apply(s)
    client.state.mark_ready()
    client.state.contact(T0)
    return client


def test_guard_raises_breaker_open_with_scope_reason_and_signal() -> None:
    client = offline_client(signal("trace:abc", reason="loop_depth 26 > 25"))
    steps: list[int] = []
    with pytest.raises(BreakerOpen) as stop:
        for step in range(3):
            with client.guard(trace_id="xyz" if step < 2 else "abc", route="r"):
                steps.append(step)
    assert steps == [0, 1]
    assert str(stop.value) == "breaker open for trace:abc: loop_depth 26 > 25"
    assert stop.value.scope == "trace:abc"
    assert stop.value.signal is not None and stop.value.signal.state == "open"
    assert isinstance(stop.value, TracewatchError)


def test_guard_yields_the_decision_of_a_probe() -> None:
    client = offline_client(signal("route:r", ttl_s=0), probe_every=2)
    with client.guard(route="r") as decision:
        assert decision.probe
    with pytest.raises(BreakerOpen, match=r"route:r: route:r misbehaves \(half-open\)"):
        client.guard(route="r").__enter__()


def test_fail_closed_guard_raises_without_a_signal() -> None:
    client = BreakerClient(start=False, fail_open=False)
    with pytest.raises(BreakerOpen, match="step refused: monitor unreachable") as stop:
        client.guard("a").__enter__()
    assert stop.value.signal is None and stop.value.scope is None


def test_protect_runs_the_step_falls_back_or_stops() -> None:
    client = offline_client(signal("route:search"), signal("trace:t1"))

    def cached(query: str, trace: str) -> str:
        return f"cached {query}"

    @client.protect(route="search", fallback=cached)
    def search(query: str, trace: str) -> str:
        return f"fresh {query}"

    @client.protect(route="plan", trace_id=lambda query, trace: trace)
    def plan(query: str, trace: str) -> str:
        return f"plan {query}"

    assert search("q", "t0") == "cached q"
    assert plan("q", "t0") == "plan q"
    with pytest.raises(BreakerOpen, match="trace:t1"):
        plan("q", trace="t1")
    assert plan.__name__ == "plan"
    client.state.apply(signal("route:search", "closed"))
    assert search("q", "t0") == "fresh q"


def test_checks_follow_the_clock() -> None:
    clock = Clock()
    client = BreakerClient(start=False, clock=clock, stale_after_s=5)
    client.state.apply(signal("trace:a", ttl_s=3))
    client.state.mark_ready()
    client.state.contact(T0)
    assert client.healthy
    assert not client.check("a").allowed
    clock.now = T0 + 4
    assert client.check("a").allowed
    clock.now = T0 + 6
    assert not client.healthy
    assert client.check("a").reason == UNREACHABLE_OPEN


# -- the client's thread --------------------------------------------------------------------

Item = Message | KafkaError | str | Exception


class FakeConsumer:
    """Stands in for ``confluent_kafka.Consumer``: ``feed`` what successive polls serve.

    A ``KafkaError`` goes to ``error_cb``, a ``str`` to ``stats_cb``, an exception is raised.
    """

    instances: ClassVar[list[FakeConsumer]] = []
    watermarks: ClassVar[dict[int, tuple[int, int]]] = {0: (0, 0)}

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.items: queue.Queue[Item] = queue.Queue()
        self.assigned: list[TopicPartition] = []
        self.unreachable = False
        self.closed = False
        FakeConsumer.instances.append(self)

    def feed(self, *items: Item) -> None:
        for item in items:
            self.items.put(item)

    def list_topics(self, topic: str, timeout: float) -> Any:
        if self.unreachable:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata"))
        meta = type("TopicMetadata", (), {"error": None, "partitions": dict(self.watermarks)})
        return type("ClusterMetadata", (), {"topics": {topic: meta()}})()

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        return self.watermarks[tp.partition]

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions

    def poll(self, timeout: float) -> Message | None:
        assert not self.closed, "poll after close"
        try:
            item = self.items.get(timeout=min(timeout, 0.01))
        except queue.Empty:
            return None
        if isinstance(item, KafkaError):
            self.config["error_cb"](item)
            return None
        if isinstance(item, str):
            self.config["stats_cb"](item)
            return None
        if isinstance(item, Exception):
            raise item
        return item

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        """Only the messages already queued, as librdkafka does with timeout 0."""
        taken: list[Message] = []
        while len(taken) < num_messages and not self.items.empty():
            head = self.items.queue[0]
            if not isinstance(head, Message):
                break
            taken.append(head)
            self.items.get()
        return taken

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeConsumer]]:
    FakeConsumer.instances = []
    FakeConsumer.watermarks = {0: (0, 0)}
    monkeypatch.setattr(breakers_module, "Consumer", FakeConsumer)
    monkeypatch.setattr(breakers_module, "_RETRY_S", 0.01)
    yield FakeConsumer


@pytest.fixture
def clients() -> Iterator[list[BreakerClient]]:
    made: list[BreakerClient] = []
    yield made
    for client in made:
        client.close()


def start(clients: list[BreakerClient], **kwargs: Any) -> BreakerClient:
    settings = KafkaSettings(breakers_topic="breakers")
    client = BreakerClient(settings, **{"clock": Clock(), **kwargs})
    clients.append(client)
    return client


def msg(s: BreakerSignal | bytes | None, offset: int, partition: int = 0) -> Message:
    value = breaker_value(s) if isinstance(s, BreakerSignal) else s
    key = s.scope.encode() if isinstance(s, BreakerSignal) else b"route:r"
    return Message(topic="breakers", partition=partition, offset=offset, key=key, value=value)


def eof(partition: int, offset: int) -> Message:
    error = KafkaError(KafkaError._PARTITION_EOF, "end of partition")
    return Message(topic="breakers", partition=partition, offset=offset, error=error)


def eventually(condition: Callable[[], bool], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.002)


def test_consumer_reads_every_partition_from_the_start_fast_and_commits_nothing(
    fake: type[FakeConsumer], clients: list[BreakerClient]
) -> None:
    fake.watermarks = {0: (0, 0), 1: (3, 3), 2: (0, 0)}
    start(clients, config={"fetch.wait.max.ms": 5})
    consumer = fake.instances[0]
    eventually(lambda: len(consumer.assigned) == 3)
    assert [(tp.topic, tp.partition, tp.offset) for tp in consumer.assigned] == [
        ("breakers", p, OFFSET_BEGINNING) for p in (0, 1, 2)
    ]
    assert consumer.config["enable.auto.commit"] is False
    assert consumer.config["enable.partition.eof"] is True
    assert consumer.config["fetch.wait.max.ms"] == 5  # overrides win
    assert consumer.config["bootstrap.servers"] == "127.0.0.1:9092"


def test_ready_once_caught_up_to_the_watermarks_seen_at_start(
    fake: type[FakeConsumer], clients: list[BreakerClient]
) -> None:
    fake.watermarks = {0: (0, 3), 1: (0, 0)}
    client = start(clients, fail_open=False)
    consumer = fake.instances[0]
    consumer.feed(msg(signal("route:r"), 0), msg(signal("trace:a"), 1))
    eventually(lambda: client.received == 2)
    assert not client.wait_ready(0.05)
    assert client.check("b", "other").reason == UNREACHABLE_CLOSED  # not caught up yet
    consumer.feed(msg(signal("route:r", "closed"), 2))
    assert client.wait_ready(2)
    assert client.ready and client.healthy
    assert client.check("b", "r") == Decision(True)
    assert client.check("a", "r").scope == "trace:a"


def test_end_of_partition_also_means_caught_up(
    fake: type[FakeConsumer], clients: list[BreakerClient]
) -> None:
    fake.watermarks = {0: (0, 5)}  # e.g. the last offsets are transaction markers
    client = start(clients)
    fake.instances[0].feed(msg(signal("route:r"), 0), eof(0, 5))
    assert client.wait_ready(2)
    assert not client.check(route="r").allowed


def test_signals_after_catching_up_are_seen_and_junk_is_skipped(
    fake: type[FakeConsumer], clients: list[BreakerClient], caplog: pytest.LogCaptureFixture
) -> None:
    client = start(clients)
    assert client.wait_ready(2)
    consumer = fake.instances[0]
    consumer.feed(msg(b"not a signal", 0), msg(signal("route:r"), 1), msg(signal("trace:t"), 2))
    eventually(lambda: client.received == 2)
    assert client.skipped == 1
    assert "skipped a message that is not a breaker signal" in caplog.text
    assert not client.check(route="r").allowed
    consumer.feed(msg(None, 3))  # a tombstone for route:r
    eventually(lambda: client.check(route="r").allowed)


def test_an_exception_in_the_thread_is_logged_and_the_consumer_rebuilt_where_it_was(
    fake: type[FakeConsumer], clients: list[BreakerClient], caplog: pytest.LogCaptureFixture
) -> None:
    client = start(clients, fail_open=False)
    assert client.wait_ready(2)
    first = fake.instances[0]
    first.feed(msg(signal("route:r"), 0, partition=0), RuntimeError("boom"))
    eventually(lambda: len(fake.instances) == 2 and bool(fake.instances[1].assigned))
    assert first.closed
    assert "breaker client lost breakers: RuntimeError('boom')" in caplog.text
    assert [tp.offset for tp in fake.instances[1].assigned] == [1]  # no replay of old states
    assert not client.check(route="r").allowed  # the state is kept
    fake.instances[1].feed(eof(0, 1))
    eventually(lambda: client.check("other").allowed)  # heard from the brokers again


def test_a_refusing_broker_is_logged_with_what_to_check_and_retried(
    fake: type[FakeConsumer], clients: list[BreakerClient], caplog: pytest.LogCaptureFixture
) -> None:
    client = start(clients)
    assert client.wait_ready(2)
    fake.instances[0].feed(KafkaError(KafkaError._AUTHENTICATION, "bad password", fatal=True))
    eventually(lambda: len(fake.instances) == 2)
    assert "refused the breaker client" in caplog.text
    assert "TRACEWATCH_KAFKA_*" in caplog.text


def test_unreachable_brokers_are_logged_once_with_the_fix_and_checks_fail_open(
    fake: type[FakeConsumer],
    clients: list[BreakerClient],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_init = FakeConsumer.__init__

    def unreachable(self: FakeConsumer, config: dict[str, Any]) -> None:
        real_init(self, config)
        self.unreachable = True

    monkeypatch.setattr(FakeConsumer, "__init__", unreachable)
    caplog.set_level(logging.WARNING)
    open_client = start(clients)
    closed_client = start(clients, fail_open=False)
    assert not open_client.wait_ready(0.1)
    assert open_client.check("a", "r") == Decision(True, None, UNREACHABLE_OPEN)
    assert closed_client.check("a", "r") == Decision(False, None, UNREACHABLE_CLOSED)
    outage = [r.getMessage() for r in caplog.records if "is unreachable" in r.getMessage()]
    assert len(outage) == 2  # once per client, not once per retry
    assert "bash infra/kafka/start.sh" in outage[0]


def test_broker_statistics_keep_an_idle_client_healthy(
    fake: type[FakeConsumer], clients: list[BreakerClient]
) -> None:
    clock = Clock()
    client = start(clients, clock=clock, stale_after_s=5)
    assert client.wait_ready(2)
    clock.now = T0 + 60
    assert not client.healthy
    stats = {
        "brokers": {
            "127.0.0.1:9092/bootstrap": {"nodeid": -1, "state": "UP", "rxidle": 0},
            "127.0.0.1:9092/1": {"nodeid": 1, "state": "UP", "rxidle": 2_000_000},
            "127.0.0.1:9093/2": {"nodeid": 2, "state": "DOWN", "rxidle": -1},
        }
    }
    fake.instances[0].feed(json.dumps(stats))
    eventually(lambda: client.healthy)
    clock.now = T0 + 60 + 3.1  # last receive was 2 s before the statistics
    assert not client.healthy


def test_close_stops_the_thread_and_closes_the_consumer(
    fake: type[FakeConsumer], clients: list[BreakerClient]
) -> None:
    with start(clients) as client:
        assert client.wait_ready(2)
    assert fake.instances[0].closed
    client.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        client.start()


def test_bad_consumer_settings_fail_at_construction() -> None:
    with pytest.raises(ConfigError, match="breaker client"):
        BreakerClient(KafkaSettings(), config={"fetch.wait.max.ms": "not a number"})
