"""``tracewatch replay``: the worker's pipeline over a JSON-lines file, in-process.

Same validation, buckets and watermark as ``tracewatch run`` (the pure
``Pipeline``), with the file as a single source read in order; no Kafka. The
closed minutes go to the configured ClickHouse; every alert and breaker
transition goes, in the order produced, to the output files (the detectors and
breakers that produce them are wired in by later work, so today they are empty).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tracewatch.config import Settings
from tracewatch.detectors.buckets import ClosedBucket
from tracewatch.errors import ConfigError
from tracewatch.pipeline import Pipeline, PipelineCounters, RawMessage, Rejected
from tracewatch.sinks.clickhouse import ClickHouseSink

__all__ = ["ReplayReport", "replay_file"]

BATCH_LINES = 5000


@dataclass
class ReplayReport:
    counters: PipelineCounters
    minutes_written: int = 0
    alerts: int = 0
    breakers: int = 0
    seconds: float = 0.0
    first_errors: list[str] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return self.counters.received / self.seconds if self.seconds else 0.0


def replay_file(
    events_path: Path,
    alerts_out: Path,
    breakers_out: Path | None,
    settings: Settings,
    sink: ClickHouseSink | None = None,
) -> ReplayReport:
    """Run the pipeline over ``events_path``; invalid lines are counted, not fatal."""
    if not events_path.is_file():
        raise ConfigError(f"{events_path}: no such file (give a JSON-lines file of trace events)")
    pipeline = Pipeline.from_settings(settings.worker)
    report = ReplayReport(pipeline.counters)
    started = time.perf_counter()
    for out in (alerts_out, breakers_out):
        _create_empty(out)  # every transition goes here once detectors are wired in
    own_sink = sink is None
    sink = sink or ClickHouseSink(settings.clickhouse).connect()
    try:
        for batch in _batches(events_path):
            result = pipeline.process(batch)
            _keep_errors(report, result.rejected)
            _write(sink, result.closed, report)
        _write(sink, pipeline.finish(), report)
    finally:
        if own_sink:
            sink.close()
    report.seconds = time.perf_counter() - started
    return report


def _batches(path: Path) -> Iterator[list[RawMessage]]:
    batch: list[RawMessage] = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            value = line.rstrip(b"\r\n")
            if not value.strip():
                continue  # blank lines are layout, not events
            batch.append(RawMessage(value, None, 0, number))
            if len(batch) >= BATCH_LINES:
                yield batch
                batch = []
    if batch:
        yield batch


def _write(sink: ClickHouseSink, closed: list[ClosedBucket], report: ReplayReport) -> None:
    if closed:
        sink.write_stats(closed)
        report.minutes_written += len(closed)


def _keep_errors(report: ReplayReport, rejected: list[Rejected]) -> None:
    for item in rejected[: max(0, 10 - len(report.first_errors))]:
        report.first_errors.append(f"line {item.message.offset}: {item.error}")


def _create_empty(path: Path | None) -> None:
    if path is None:
        return
    try:
        path.write_text("", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
