"""The worker's metrics and health verdict, from fake readings: no broker, no faust."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tracewatch.streams.metrics import (
    IngestReading,
    WorkerMetrics,
    judge_health,
    reading_from,
    service_health,
)

READING = IngestReading(
    received=120,
    valid=100,
    late=3,
    rejected={"invalid_json": 12, "duplicate_event_id": 8},
    stored_events=97,
    flushes=5,
    sink_errors=2,
    alerts_fired={("CostP95High", "firing"): 2, ("CostP95High", "resolved"): 1},
    alerts_firing=1,
    breakers_opened={"trace": 4, "route": 1},
    breakers_open=2,
    consumer_lag={0: 10, 2: 0},
    outbox_pending=3,
)


def samples(metrics: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """sample name and sorted labels → value, as Prometheus would read the scrape."""
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_come_from_the_reading() -> None:
    got = samples(WorkerMetrics(lambda: READING))
    assert got["tracewatch_events_consumed_total", ()] == 120
    assert got["tracewatch_events_valid_total", ()] == 100
    assert got["tracewatch_events_late_total", ()] == 3
    assert got["tracewatch_events_rejected_total", (("reason", "invalid_json"),)] == 12
    assert got["tracewatch_events_rejected_total", (("reason", "duplicate_event_id"),)] == 8
    assert got["tracewatch_events_duplicate_total", ()] == 8
    assert got["tracewatch_events_stored_total", ()] == 97
    assert got["tracewatch_flushes_total", ()] == 5
    assert got["tracewatch_sink_errors_total", ()] == 2


def test_lag_alerts_breakers_and_outbox() -> None:
    got = samples(WorkerMetrics(lambda: READING))
    assert got["tracewatch_consumer_lag", (("partition", "0"),)] == 10
    assert got["tracewatch_consumer_lag", (("partition", "2"),)] == 0
    fired = (("alertname", "CostP95High"), ("status", "resolved"))
    assert got["tracewatch_alerts_fired_total", fired] == 1
    assert got["tracewatch_alerts_firing", ()] == 1
    assert got["tracewatch_breakers_opened_total", (("kind", "trace"),)] == 4
    assert got["tracewatch_breakers_opened_total", (("kind", "route"),)] == 1
    assert got["tracewatch_breakers_open", ()] == 2
    assert got["tracewatch_alertmanager_outbox_pending", ()] == 3


def test_no_outbox_metric_without_alertmanager() -> None:
    got = samples(WorkerMetrics(lambda: IngestReading()))
    assert not any(name.startswith("tracewatch_alertmanager") for name, _ in got)
    assert got["tracewatch_events_consumed_total", ()] == 0


def test_a_scrape_reads_the_counters_of_that_moment() -> None:
    state = {"received": 1}
    metrics = WorkerMetrics(lambda: IngestReading(received=state["received"]))
    assert samples(metrics)["tracewatch_events_consumed_total", ()] == 1
    state["received"] = 7
    assert samples(metrics)["tracewatch_events_consumed_total", ()] == 7


def test_timings_are_histograms() -> None:
    metrics = WorkerMetrics(IngestReading)
    metrics.batch_seconds.observe(0.003)
    metrics.batch_seconds.observe(0.2)
    metrics.observe_write("events", 0.04)
    got = samples(metrics)
    assert got["tracewatch_batch_processing_seconds_count", ()] == 2
    assert got["tracewatch_batch_processing_seconds_bucket", (("le", "0.005"),)] == 1
    assert got["tracewatch_batch_processing_seconds_sum", ()] == 0.203
    assert got["tracewatch_sink_write_seconds_count", (("table", "events"),)] == 1


def test_workers_in_one_process_do_not_collide() -> None:
    first, second = WorkerMetrics(lambda: READING), WorkerMetrics(IngestReading)
    first.batch_seconds.observe(1.0)
    assert samples(second)["tracewatch_batch_processing_seconds_count", ()] == 0
    assert REGISTRY.get_sample_value("tracewatch_batch_processing_seconds_count") is None


def test_reading_from_the_status_dict() -> None:
    status: dict[str, Any] = {
        "received": 5,
        "valid": 4,
        "late": 0,
        "rejected": {"schema": 1},
        "stored_events": 4,
        "flushes": 1,
        "alerts_firing": 0,
        "breakers_open": 0,
        "uptime_s": 3.0,
    }
    reading = reading_from(status, sink_errors=2, consumer_lag={1: 9})
    assert (reading.received, reading.valid, dict(reading.rejected)) == (5, 4, {"schema": 1})
    assert (reading.sink_errors, dict(reading.consumer_lag)) == (2, {1: 9})


def test_health_verdicts() -> None:
    assert judge_health(ingest_alive=True).body() == {"status": "ok"}
    stopped = judge_health(ingest_alive=False)
    assert not stopped.ok and "not running" in stopped.reason
    crashed = judge_health(ingest_alive=False, ingest_error="RuntimeError('x')")
    assert "ingest thread failed: RuntimeError('x')" in crashed.body()["reason"]
    writer = judge_health(ingest_alive=True, writer_error="KeyError('k')")
    assert writer.body()["status"] == "failing" and "writer" in writer.reason


def test_a_sink_error_is_tolerated_for_a_while() -> None:
    young = judge_health(
        ingest_alive=True, sink_error="refused", sink_error_for_s=5, max_sink_error_s=60
    )
    assert young.ok
    old = judge_health(
        ingest_alive=True, sink_error="refused", sink_error_for_s=61, max_sink_error_s=60
    )
    assert not old.ok and "failing for 61s: refused" in old.reason


def fake_service(**ingest: Any) -> SimpleNamespace:
    loop = SimpleNamespace(writer_failed=None, last_error=None, last_error_since=0.0, **ingest)
    return SimpleNamespace(ingest=loop, alive=True, failed=None)


def test_service_health_ages_the_sink_error() -> None:
    service = fake_service()
    assert service_health(service, 30.0, now=1000.0).ok
    service.ingest.last_error, service.ingest.last_error_since = "ClickHouse down", 900.0
    assert not service_health(service, 30.0, now=1000.0).ok
    assert service_health(service, 30.0, now=910.0).ok
    service.ingest.last_error = None
    service.ingest.writer_failed = OSError("disk full")
    assert "disk full" in service_health(service, 30.0, now=1000.0).reason


def test_state_overflow_is_counted_by_kind() -> None:
    """Issue 16: what the state caps turn away is counted, never silent."""
    status = {
        "received": 5, "valid": 5, "late": 0, "rejected": {}, "stored_events": 5, "flushes": 1,
        "alerts_firing": 0, "breakers_open": 0,
        "overflow": {"bucket_key": 7, "bucket_route": 2, "breaker_trace_shed": 3},
    }  # fmt: skip
    got = samples(WorkerMetrics(lambda: reading_from(status)))
    assert got["tracewatch_state_overflow_total", (("kind", "bucket_key"),)] == 7
    assert got["tracewatch_state_overflow_total", (("kind", "bucket_route"),)] == 2
    assert got["tracewatch_state_overflow_total", (("kind", "breaker_trace_shed"),)] == 3
