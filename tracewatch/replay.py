"""``tracewatch replay``: the worker's pipeline over a JSON-lines file, in-process.

The same pure ``Stage`` as ``tracewatch run`` (validation, buckets and
watermark, then the breaker board, then the detectors, rules and alert
lifecycle), with the file as a single source read in order; no Kafka. The
closed minutes go to the configured ClickHouse; every alert transition goes, in
the order produced, to ``--alerts-out`` as one contract alert per line, and
every breaker transition (the worker's ``BreakerBoard`` over the same events, in
file order) to ``--breakers-out``.

Alerts depend only on event time, so a replay of what the worker consumed
raises the same alerts, as long as the events arrived within the allowed
lateness (an event later than that is counted in a late row either way, but
which events are late can depend on the order the partitions were read in).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, overload

from tracewatch.config import Settings
from tracewatch.detectors.buckets import ClosedBucket
from tracewatch.detectors.engine import Transition
from tracewatch.detectors.judges import load_judges
from tracewatch.detectors.rollout import RolloutJudge
from tracewatch.errors import ConfigError
from tracewatch.pipeline import MessageBatch, PipelineCounters, Rejected
from tracewatch.pricing import PriceTable
from tracewatch.sinks.clickhouse import ClickHouseSink
from tracewatch.stage import Stage, StageOutput

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
    on_transition: Callable[[Transition], None] | None = None,
) -> ReplayReport:
    """Run the pipeline over ``events_path``; invalid lines are counted, not fatal.

    ``on_transition`` also receives every alert transition with the event time
    at which it was decided (the detection benchmark measures delays with it).
    """
    if not events_path.is_file():
        raise ConfigError(f"{events_path}: no such file (give a JSON-lines file of trace events)")
    judges = load_judges(settings.detect, settings.worker.breaker_max_traces)
    stage = Stage.from_settings(
        settings.worker,
        PriceTable.from_settings(settings.pricing),
        judges.engine,
        judges.board,
        RolloutJudge.from_settings(settings),
    )
    report = ReplayReport(stage.counters)
    started = time.perf_counter()
    own_sink = sink is None
    sink = sink or ClickHouseSink(settings.clickhouse).connect()
    try:
        with _open_out(alerts_out) as alerts, _open_out(breakers_out) as breakers:

            def emit(out: StageOutput) -> None:
                _keep_errors(report, out.rejected)
                for signal in out.breakers:
                    if breakers is not None:
                        breakers.write(signal.model_dump_json() + "\n")
                    report.breakers += 1
                _write(sink, out.closed, report)
                for transition in out.transitions:
                    alerts.write(transition.alert.model_dump_json() + "\n")
                    report.alerts += 1
                    if on_transition is not None:
                        on_transition(transition)

            for batch in _batches(events_path):
                emit(stage.process(batch))
            emit(stage.finish())
    finally:
        if own_sink:
            sink.close()
    report.seconds = time.perf_counter() - started
    return report


def _batches(path: Path) -> Iterator[MessageBatch]:
    """Lines as messages of partition 0 whose offset is the line number."""
    values: list[bytes | None] = []
    numbers: list[int] = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            value = line.rstrip(b"\r\n")
            if not value.strip():
                continue  # blank lines are layout, not events
            values.append(value)
            numbers.append(number)
            if len(values) >= BATCH_LINES:
                yield MessageBatch(values, [None] * len(values), [0] * len(values), numbers)
                values, numbers = [], []
    if values:
        yield MessageBatch(values, [None] * len(values), [0] * len(values), numbers)


def _write(sink: ClickHouseSink, closed: list[ClosedBucket], report: ReplayReport) -> None:
    if closed:
        sink.write_stats(closed)
        report.minutes_written += len(closed)


def _keep_errors(report: ReplayReport, rejected: list[Rejected]) -> None:
    for item in rejected[: max(0, 10 - len(report.first_errors))]:
        report.first_errors.append(f"line {item.message.offset}: {item.error}")


@overload
def _open_out(path: Path) -> IO[str]: ...
@overload
def _open_out(path: None) -> contextlib.nullcontext[None]: ...


def _open_out(path: Path | None) -> IO[str] | contextlib.nullcontext[None]:
    if path is None:
        return contextlib.nullcontext()
    try:
        return path.open("w", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
