"""``tracewatch demo``: send demo traffic through the SDK, with progress.

First a backfill (event time from ``now - backfill`` to now, sent as fast as
the broker takes it) so statistics exist within seconds, then live traffic in
one-second slices of event time until ``duration`` has passed. An optional
incident (``Incident``) changes one route from a point in event time on, so the
detectors have something to find.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from rich.console import Console

from tracewatch.config import KafkaSettings
from tracewatch.demo.traffic import DEFAULT_ROUTES, DemoTraffic, invalid_events
from tracewatch.sdk.producer import TraceProducer

__all__ = ["INCIDENTS", "Incident", "run_demo"]

#: what each incident kind does to the events of its route
INCIDENTS = {
    "cost": "cost per call x3 (a model swap)",
    "latency": "latency x3 (a slow provider)",
    "errors": "30 % of calls fail (an outage)",
    "quality": "groundedness drops to about 0.5 with a new prompt version",
}


@dataclass(frozen=True)
class Incident:
    """``kind`` (one of ``INCIDENTS``) on ``route`` for events at or after ``start`` (unix s)."""

    kind: str
    route: str
    start: float

    def __post_init__(self) -> None:
        if self.kind not in INCIDENTS:
            raise ValueError(f"incident must be one of {', '.join(INCIDENTS)}, got {self.kind!r}")

    def apply(self, events: Iterator[dict[str, object]]) -> Iterator[dict[str, object]]:
        rng = np.random.default_rng(17)
        for event in events:
            if event["route"] == self.route and float(event["ts"]) >= self.start:  # type: ignore[arg-type]
                event = dict(event)
                self._change(event, rng)
            yield event

    def _change(self, event: dict[str, object], rng: np.random.Generator) -> None:
        if self.kind == "cost" and isinstance(event.get("cost_usd"), float):
            event["cost_usd"] = 3 * event["cost_usd"]  # type: ignore[operator]
        elif self.kind == "latency" and isinstance(event.get("latency_ms"), float):
            event["latency_ms"] = 3 * event["latency_ms"]  # type: ignore[operator]
        elif self.kind == "errors" and event.get("kind") == "llm" and rng.random() < 0.3:
            event["status"] = "error"
            event["error_type"] = "provider_unavailable"
        elif self.kind == "quality":
            event["prompt_version"] = "v-new"
            scores = event.get("scores")
            if isinstance(scores, dict) and "groundedness" in scores:
                event["scores"] = {**scores, "groundedness": float(rng.beta(5, 5))}


class _Mixer:
    """Interleaves one invalid message per ``every`` valid ones, so the DLQ has examples."""

    def __init__(self, producer: TraceProducer, every: int, seed: int) -> None:
        self.producer = producer
        self.every = every
        self.rng = np.random.default_rng(seed + 1)
        self.sent: Counter[str] = Counter()

    def send(self, event: dict[str, object]) -> None:
        self.producer.send(event)
        self.sent["valid"] += 1
        if self.every and self.sent["valid"] % self.every == 0:
            label, value = invalid_events(self.rng, 1)[0]
            self.producer.send_raw(value, b"demo-invalid")
            self.sent[f"invalid:{label}"] += 1


def run_demo(
    kafka: KafkaSettings,
    duration_s: float,
    rate: float,
    backfill_s: float,
    invalid_every: int,
    seed: int,
    console: Console,
    incident: Incident | None = None,
    runaway_rate: float = 0.0,
) -> Counter[str]:
    """Send one continuous stream: the backfill at once, then each event when its ``ts`` comes.

    An event's ``ts`` is when its span ended, so a live event is sent at that
    moment, as an instrumented app would: the stream reaches Kafka in event-time
    order, and what the worker counts as late is really late.
    """
    started = time.time()
    routes = [
        dataclasses.replace(r, runaway_rate=runaway_rate) if r.workload == "agent" else r
        for r in DEFAULT_ROUTES
    ]
    traffic = DemoTraffic(seed=seed, routes=routes)
    stream = traffic.events(started - backfill_s, rate, backfill_s + duration_s)
    if runaway_rate > 0:
        console.print(
            f"runaway agents: {runaway_rate:.0%} of agent runs repeat one tool call "
            "until a breaker stops them"
        )
    if incident is not None:
        stream = incident.apply(stream)
        ago = started - incident.start
        console.print(
            f"incident: {INCIDENTS[incident.kind]} on {incident.route}, "
            + (f"from {ago / 60:.0f} min ago" if ago >= 0 else f"in {-ago:.0f}s")
        )
    with TraceProducer(settings=kafka) as producer:
        mixer = _Mixer(producer, invalid_every, seed)
        if backfill_s > 0:
            console.print(f"backfilling {backfill_s:.0f}s of event time at {rate:g} traces/s …")
        live, last_report = False, time.time()
        try:
            for event in stream:
                ts = float(event["ts"])  # type: ignore[arg-type]
                if not live and ts > started:
                    producer.flush()
                    console.print(
                        f"  backfill: {mixer.sent['valid']} events "
                        f"in {time.time() - started:.1f}s\n"
                        f"live traffic for {duration_s:.0f}s at {rate:g} traces/s (Ctrl-C stops)"
                    )
                    live = True
                if ts > time.time():
                    time.sleep(ts - time.time())
                mixer.send(event)
                if time.time() - last_report >= 10:
                    last_report = time.time()
                    console.print(
                        f"  {time.time() - started:5.0f}s  valid {mixer.sent['valid']}, "
                        f"invalid {_invalid(mixer.sent)}, delivered {producer.delivered}"
                    )
        except KeyboardInterrupt:
            console.print("stopped by Ctrl-C")
    console.print(
        f"done: {mixer.sent['valid']} valid and {_invalid(mixer.sent)} invalid events sent "
        f"in {time.time() - started:.0f}s; all delivered"
    )
    return mixer.sent


def _invalid(sent: Counter[str]) -> int:
    return sum(n for label, n in sent.items() if label.startswith("invalid:"))
