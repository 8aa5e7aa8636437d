"""A runaway agent is stopped by its breaker check; normal traffic runs through.

A real worker process consumes demo traffic (agent routes included) while a
scripted agent, using the SDK like an app would, checks its breaker before each
step and produces one agent step per iteration with a climbing ``loop_depth``.
The default limit is 25: the run must stop within a couple of steps of it.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from tracewatch.config import KafkaSettings
from tracewatch.demo.traffic import DemoTraffic
from tracewatch.detectors.breakers import DEFAULT_LIMITS
from tracewatch.schemas.breaker import BreakerSignal
from tracewatch.sdk import BreakerClient, BreakerOpen, TraceProducer
from tracewatch.streams.topics import ensure_topics

pytestmark = pytest.mark.integration

LIMIT = DEFAULT_LIMITS.trace.max_loop_depth


def background(kafka: KafkaSettings, stop: threading.Event, sent: list[int]) -> None:
    """Normal demo traffic at about 300 events/s, live (event time = now)."""
    stream = DemoTraffic(seed=5).events(time.time(), 80.0, 3600.0)
    with TraceProducer(settings=kafka) as producer:
        for event in stream:
            if stop.is_set():
                break
            delay = float(event["ts"]) - time.time()  # type: ignore[arg-type]
            if delay > 0:
                time.sleep(delay)
            producer.send(event)
            sent[0] += 1


def breaker_signals(kafka: KafkaSettings) -> list[BreakerSignal]:
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"check-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([kafka.breakers_topic])
    signals: list[BreakerSignal] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            signals.append(BreakerSignal.model_validate_json(message.value() or b""))
            deadline = min(deadline, time.monotonic() + 2)
    consumer.close()
    return signals


def test_a_runaway_agent_is_stopped_within_two_steps_of_its_limit(
    kafka_settings: KafkaSettings, tmp_path: Path, free_port: int, make_worker: Any
) -> None:
    ensure_topics(kafka_settings)
    worker = make_worker(kafka_settings, tmp_path, free_port)
    worker.start()
    worker.wait_for(lambda body: body is not None, timeout=60)
    stop, sent = threading.Event(), [0]
    load = threading.Thread(target=background, args=(kafka_settings, stop, sent), daemon=True)
    load.start()
    worker.wait_for(lambda body: body["received"] > 500)

    trace_id, route = f"runaway-{uuid.uuid4().hex[:8]}", "agent/coder"
    steps, sent_before = 0, sent[0]
    with BreakerClient(kafka_settings) as breakers, TraceProducer(settings=kafka_settings) as app:
        assert breakers.wait_ready(10)
        try:
            for depth in range(200):
                with breakers.guard(trace_id=trace_id, route=route):
                    app.send(
                        {
                            "event_id": f"{trace_id}-{depth}",
                            "trace_id": trace_id,
                            "ts": time.time(),
                            "kind": "agent_step",
                            "route": route,
                            "model": "gpt-4o",
                            "loop_depth": depth,
                            "cost_usd": 0.002,
                            "latency_ms": 900.0,
                        }
                    )
                    app.flush()
                    steps += 1
                time.sleep(0.1)  # an agent step takes a while
            pytest.fail(f"the runaway agent ran all {steps} steps")
        except BreakerOpen as stopped:
            reason = str(stopped)
    stop.set()
    load.join(10)
    # the step with loop_depth LIMIT + 1 trips it; one or two more may start meanwhile
    assert LIMIT + 2 <= steps <= LIMIT + 4, (steps, reason)
    assert f"loop_depth {LIMIT + 1} > {LIMIT}" in reason

    signals = breaker_signals(kafka_settings)
    assert [s.scope for s in signals if s.state == "open"] == [f"trace:{trace_id}"]
    # normal traces ran alongside the agent (a few hundred events a second) and tripped nothing
    assert sent[0] - sent_before > 100, (sent_before, sent[0])
    status = worker.status()
    assert status is not None and status["breakers_open"] == 1
    worker.stop()


def test_trace_state_survives_a_kill_9(
    kafka_settings: KafkaSettings, tmp_path: Path, free_port: int, make_worker: Any
) -> None:
    """Four identical tool calls before the crash, two after: the sixth trips the breaker
    only if the restarted worker remembers the first four (it reads them back from
    ClickHouse), since a fresh board would count two."""
    ensure_topics(kafka_settings)
    worker = make_worker(kafka_settings, tmp_path, free_port)
    worker.start()
    trace_id = f"repeat-{uuid.uuid4().hex[:8]}"
    limit = DEFAULT_LIMITS.trace.max_same_tool_calls

    def call(i: int) -> dict[str, object]:
        return {
            "event_id": f"{trace_id}-{i}", "trace_id": trace_id, "ts": time.time(),
            "kind": "tool", "route": "agent/coder", "tool_name": "search",
            "tool_args_hash": "same-args", "cost_usd": 0.001,
        }  # fmt: skip

    with TraceProducer(settings=kafka_settings) as app:
        for i in range(limit - 1):
            app.send(call(i))
        app.flush()
        worker.wait_for(lambda body: body["stored_events"] >= limit - 1 and body["flushes"] > 0)
        worker.stop(signal.SIGKILL)
        worker.start()
        worker.wait_for(lambda body: body is not None, timeout=60)
        for i in range(limit - 1, limit + 1):
            app.send(call(i))
        app.flush()
    with BreakerClient(kafka_settings) as breakers:
        assert breakers.wait_ready(10)
        deadline = time.monotonic() + 60
        while breakers.check(trace_id=trace_id).allowed and time.monotonic() < deadline:
            time.sleep(0.05)
        decision = breakers.check(trace_id=trace_id)
    assert not decision.allowed, "the restarted worker forgot the trace's earlier calls"
    assert f"called {limit + 1} times with the same arguments" in decision.reason
    worker.stop()
