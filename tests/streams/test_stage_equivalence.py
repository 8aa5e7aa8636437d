"""The worker's loop and ``tracewatch replay`` drive one ``Stage``: same messages in,
same alerts, breaker transitions and minutes out, however the batches are cut."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from scripted_kafka import FakeBreakers, FakeDeadLetters, FakeStore, ScriptedConsumer

from tracewatch.config import DetectSettings, Settings, WorkerSettings
from tracewatch.detectors.buckets import ClosedBucket
from tracewatch.detectors.engine import Transition
from tracewatch.detectors.judges import load_judges
from tracewatch.replay import replay_file
from tracewatch.schemas.alert import Alert
from tracewatch.streams.ingest import IngestLoop
from tracewatch.streams.retry import SinkRetry

T0 = 1_795_341_600.0
RULES = """
rules:
  - name: CostHigh
    metric: cost_usd
    stat: p95
    above: 0.05
    for: 1m
"""


def stream() -> list[dict[str, Any]]:
    """25 minutes of one route with a cost step in minutes 5-8, a runaway agent in
    minute 3 and an error burst on a second route in minute 12, in time order."""
    events: list[dict[str, Any]] = []
    for minute in range(25):
        cost = 0.2 if 5 <= minute <= 8 else 0.01
        for i in range(30):
            ts = T0 + 60 * minute + 2 * i
            events.append({"event_id": f"r-{minute}-{i}", "trace_id": f"t-{minute}-{i % 6}",
                           "ts": ts, "kind": "llm", "route": "shop", "cost_usd": cost})  # fmt: skip
    for step in range(30):
        events.append({"event_id": f"loop-{step}", "trace_id": "runaway", "ts": T0 + 180 + step,
                       "kind": "agent_step", "route": "agent", "loop_depth": step})  # fmt: skip
    for i in range(40):
        events.append({"event_id": f"err-{i}", "trace_id": f"e-{i}", "ts": T0 + 720 + i,
                       "kind": "llm", "route": "refund", "status": "error"})  # fmt: skip
    return sorted(events, key=lambda e: (e["ts"], e["event_id"]))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    return Settings(detect=DetectSettings(rules_file=rules), worker=WorkerSettings())


class MinutesOnly:
    """Replay's sink: the closed minutes."""

    def __init__(self) -> None:
        self.minutes: list[ClosedBucket] = []

    def write_stats(self, buckets: Sequence[ClosedBucket], token: str | None = None) -> None:
        self.minutes += buckets


def run_worker(settings: Settings, lines: list[bytes], batch: int) -> dict[str, Any]:
    """The worker's loop over one partition, ``batch`` messages a poll."""
    settings = Settings(
        detect=settings.detect,
        worker=WorkerSettings(batch_max_events=batch, poll_timeout_s=0.01),
    )
    judges = load_judges(settings.detect)
    consumer, store, breakers = ScriptedConsumer(), FakeStore(), FakeBreakers()
    alerts: list[Alert] = []
    loop = IngestLoop(
        settings, store, engine=judges.engine, on_alerts=alerts.extend, board=judges.board,
        breakers=breakers, dlq=FakeDeadLetters(), retry=SinkRetry(first_delay_s=0.0),
        consumer_factory=lambda: consumer,  # type: ignore[arg-type,return-value]
    )  # fmt: skip
    loop.start()
    try:
        consumer.assign(0)
        consumer.append(0, *lines)
        while loop.step():
            pass
        loop.drain()
    finally:
        loop.close()
    return {"alerts": alerts, "breakers": breakers.published, "minutes": store.minutes}


def test_the_worker_and_replay_give_the_same_alerts_breakers_and_minutes(
    settings: Settings, tmp_path: Path
) -> None:
    lines = [json.dumps(e).encode() for e in stream()]
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"\n".join(lines) + b"\n")
    transitions: list[Transition] = []
    minutes = MinutesOnly()
    report = replay_file(
        events_file, tmp_path / "alerts.jsonl", tmp_path / "breakers.jsonl", settings,
        sink=minutes, on_transition=transitions.append,  # type: ignore[arg-type]
    )  # fmt: skip
    replayed_breakers = (tmp_path / "breakers.jsonl").read_text().splitlines()
    assert report.alerts >= 2 and {t.alert.status for t in transitions} == {"firing", "resolved"}
    assert any("trace:runaway" in b for b in replayed_breakers)
    assert any("route:refund" in b for b in replayed_breakers)

    for batch in (1000, 37):  # batches cut anywhere: the same answers
        worker = run_worker(settings, lines, batch)
        # the worker leaves the newest minutes open (replay's end closes them): compare
        # what both closed; nothing was decided in those last minutes
        assert [t.alert for t in transitions] == worker["alerts"]
        assert [b.model_dump_json() for b in worker["breakers"]] == replayed_breakers
        closed = worker["minutes"]
        assert len(closed) < len(minutes.minutes)
        assert summaries(closed) == summaries(minutes.minutes, approx=True)[: len(closed)]


def summaries(
    minutes: list[ClosedBucket], approx: bool = False
) -> list[tuple[float, Any, dict[str, Any]]]:
    """Minutes in time order (how they are cut into close calls depends on the batches);
    with ``approx``, sums to 1e-12 (a batch's sum is added in a different order)."""
    out = []
    for m in sorted(minutes, key=lambda m: (m.start, m.key)):
        summary = {k: pytest.approx(v, rel=1e-12) if approx and isinstance(v, float) else v
                   for k, v in m.stats.summary().items()}  # fmt: skip
        out.append((m.start, m.key, summary))
    return out
