"""Alertmanager payloads and the delivery outbox: pure, no network, no clock."""

from __future__ import annotations

import asyncio
import socket
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tracewatch.config import AlertmanagerSettings
from tracewatch.errors import ConfigError, ServiceUnavailable
from tracewatch.schemas.alert import Alert
from tracewatch.sinks.alertmanager import (
    AlertmanagerClient,
    AlertmanagerOutbox,
    AlertmanagerService,
    to_postable,
)

NOW = 1_795_341_600.0  # 2026-11-22T10:00:00Z: the wall clock of these tests
NOW_DT = datetime.fromtimestamp(NOW, UTC)
KEEP_S = 4 * 60.0  # ends_at_intervals * resend_interval_s


def settings(**overrides: Any) -> AlertmanagerSettings:
    values: dict[str, Any] = {
        "url": "http://127.0.0.1:9093",
        "resend_interval_s": 60.0,
        "ends_at_intervals": 4.0,
        "backoff_initial_s": 1.0,
        "backoff_max_s": 8.0,
        "max_pending": 100,
    }
    return AlertmanagerSettings(**{**values, **overrides})


def alert(
    fingerprint: str = "fp-1",
    status: str = "firing",
    starts_at: datetime = NOW_DT - timedelta(minutes=5),
    ends_at: datetime | None = None,
    **fields: Any,
) -> Alert:
    return Alert.model_validate({
        "fingerprint": fingerprint, "status": status, "alertname": "CostP95High",
        "labels": {"route": "refund/primary", "metric": "cost_usd", "severity": "warning"},
        "value": 0.031, "baseline": 0.009, "threshold": 0.02,
        "starts_at": starts_at, "ends_at": ends_at, "summary": "p95 cost is 3.4x its baseline",
        **fields,
    })  # fmt: skip


def resolved(fingerprint: str = "fp-1", **fields: Any) -> Alert:
    return alert(fingerprint, "resolved", ends_at=NOW_DT - timedelta(minutes=1), **fields)


def times(payload: dict[str, Any]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(payload["startsAt"]), datetime.fromisoformat(payload["endsAt"])


def fingerprints(payloads: list[dict[str, Any]]) -> list[str]:
    return [p["annotations"]["tracewatch_fingerprint"] for p in payloads]


# ---------------------------------------------------------------------------- to_postable


def test_postable_carries_alertname_labels_and_annotations() -> None:
    payload = to_postable(alert(threshold=None), NOW, settings())
    assert payload["labels"] == {
        "alertname": "CostP95High", "route": "refund/primary", "metric": "cost_usd",
        "severity": "warning",
    }  # fmt: skip
    assert payload["annotations"] == {
        "summary": "p95 cost is 3.4x its baseline", "tracewatch_fingerprint": "fp-1",
        "value": "0.031", "baseline": "0.009",
    }  # fmt: skip
    assert payload["startsAt"].endswith("Z") and payload["endsAt"].endswith("Z")


def test_firing_with_past_event_time_stays_active_a_few_resends_from_now() -> None:
    starts = NOW_DT - timedelta(hours=3)  # a backfill
    start, end = times(to_postable(alert(starts_at=starts), NOW, settings()))
    assert start == starts
    assert end == NOW_DT + timedelta(seconds=KEEP_S)


def test_firing_with_future_event_time_ends_after_its_start() -> None:
    starts = NOW_DT + timedelta(seconds=30)  # the producer's clock is ahead of ours
    start, end = times(to_postable(alert(starts_at=starts), NOW, settings()))
    assert start == starts
    assert end == starts + timedelta(seconds=KEEP_S)


def test_resolved_ends_at_its_event_time_when_that_is_past() -> None:
    start, end = times(to_postable(resolved(), NOW, settings()))
    assert (start, end) == (NOW_DT - timedelta(minutes=5), NOW_DT - timedelta(minutes=1))


@pytest.mark.parametrize("ends_at", [NOW_DT + timedelta(seconds=20), None])
def test_resolved_never_ends_in_the_future(ends_at: datetime | None) -> None:
    _, end = times(to_postable(alert(status="resolved", ends_at=ends_at), NOW, settings()))
    assert end == NOW_DT


def test_resolved_ending_before_it_started_ends_when_it_started() -> None:
    starts = NOW_DT - timedelta(minutes=5)
    bad = alert(status="resolved", starts_at=starts, ends_at=starts - timedelta(minutes=1))
    assert times(to_postable(bad, NOW, settings())) == (starts, starts)


def test_resolved_with_future_start_is_moved_to_now_so_it_does_not_look_active() -> None:
    ahead = NOW_DT + timedelta(seconds=30)
    start, end = times(to_postable(alert("fp", "resolved", ahead, ahead), NOW, settings()))
    assert start == end == NOW_DT


@pytest.mark.parametrize("status", ["firing", "resolved"])
@pytest.mark.parametrize("start_offset", [-86_400.0, -60.0, 0.0, 0.5, 90.0])
@pytest.mark.parametrize("end_offset", [None, -3_600.0, -1.0, 0.0, 1.0, 600.0])
def test_ends_at_is_never_before_starts_at(
    status: str, start_offset: float, end_offset: float | None
) -> None:
    starts = NOW_DT + timedelta(seconds=start_offset)
    ends = None if end_offset is None else starts + timedelta(seconds=end_offset)
    start, end = times(to_postable(alert("fp", status, starts, ends), NOW, settings()))
    assert end >= start
    if status == "resolved":
        assert end <= NOW_DT
    else:
        assert end >= NOW_DT + timedelta(seconds=KEEP_S)


def test_naive_event_times_are_taken_as_utc() -> None:
    naive = datetime(2026, 11, 22, 9, 0, 0)
    assert to_postable(alert(starts_at=naive), NOW, settings())["startsAt"] == (
        "2026-11-22T09:00:00Z"
    )


def test_label_names_alertmanager_would_refuse_are_rewritten() -> None:
    odd = alert(labels={"route": "r", "k8s.pod": "p", "2xx": "x", "": "e"})
    assert set(to_postable(odd, NOW, settings())["labels"]) == {
        "alertname", "route", "k8s_pod", "_2xx", "_",
    }  # fmt: skip


# ---------------------------------------------------------------------------- outbox


def test_new_alert_is_due_once_then_resent_every_interval() -> None:
    box = AlertmanagerOutbox(settings())
    box.submit([alert()], NOW)
    first = box.due(NOW)
    assert fingerprints(first) == ["fp-1"]
    box.sent(NOW)
    assert box.due(NOW + 1) == []
    assert box.due(NOW + 59.9) == []
    resend = box.due(NOW + 60)
    assert fingerprints(resend) == ["fp-1"]
    assert times(resend[0])[1] == NOW_DT + timedelta(seconds=60 + KEEP_S)
    box.sent(NOW + 60)
    assert box.due(NOW + 119) == []
    assert box.status()["sent_total"] == 2


def test_resolved_replaces_firing_and_is_forgotten_once_sent() -> None:
    box = AlertmanagerOutbox(settings())
    box.submit([alert()], NOW)
    box.due(NOW)
    box.sent(NOW)
    box.submit([resolved()], NOW + 5)
    payloads = box.due(NOW + 5)
    assert len(payloads) == 1
    assert times(payloads[0])[1] <= NOW_DT + timedelta(seconds=5)
    box.sent(NOW + 5)
    assert len(box) == 0
    assert box.due(NOW + 3600) == []
    assert box.status()["firing"] == 0


def test_unsent_firing_replaced_by_resolved_is_never_posted() -> None:
    box = AlertmanagerOutbox(settings())
    box.submit([alert(), resolved()], NOW)
    payloads = box.due(NOW)
    assert len(payloads) == 1 and times(payloads[0])[1] <= NOW_DT


def test_alert_replaced_while_in_flight_stays_due() -> None:
    box = AlertmanagerOutbox(settings())
    box.submit([alert()], NOW)
    box.due(NOW)  # the firing version is on its way ...
    box.submit([resolved()], NOW + 0.1)  # ... when it resolves
    box.sent(NOW + 0.2)
    payloads = box.due(NOW + 0.3)
    assert times(payloads[0])[1] <= NOW_DT + timedelta(seconds=0.3)
    box.sent(NOW + 0.3)
    assert len(box) == 0


def test_alert_submitted_while_in_flight_is_not_marked_sent() -> None:
    box = AlertmanagerOutbox(settings())
    box.submit([alert("a")], NOW)
    assert fingerprints(box.due(NOW)) == ["a"]
    box.submit([alert("b")], NOW + 0.1)
    box.sent(NOW + 0.2)
    assert fingerprints(box.due(NOW + 0.3)) == ["b"]
    assert box.status()["sent_total"] == 1


def test_alert_submitted_while_in_flight_survives_a_failure() -> None:
    box = AlertmanagerOutbox(settings())
    box.submit([alert("a")], NOW)
    box.due(NOW)
    box.submit([alert("b")], NOW + 0.1)
    box.failed(NOW + 0.2, "down")
    assert sorted(fingerprints(box.due(NOW + 1.2))) == ["a", "b"]


def test_unchanged_resubmission_keeps_its_schedule_a_changed_one_goes_now() -> None:
    box = AlertmanagerOutbox(settings())
    box.submit([alert()], NOW)
    box.due(NOW)
    box.sent(NOW)
    box.submit([alert()], NOW + 10)
    assert box.due(NOW + 10) == []
    box.submit([alert(value=0.05)], NOW + 11)
    assert [p["annotations"]["value"] for p in box.due(NOW + 11)] == ["0.05"]


def test_backoff_doubles_up_to_the_cap_and_resets_after_a_success() -> None:
    box = AlertmanagerOutbox(settings(backoff_initial_s=1.0, backoff_max_s=8.0))
    box.submit([alert()], NOW)
    now, delays = NOW, []
    for _ in range(6):
        assert box.due(now)
        box.failed(now, ServiceUnavailable("Alertmanager at http://x could not be reached"))
        assert box.backoff_until is not None
        delays.append(box.backoff_until - now)
        assert box.due(box.backoff_until - 0.01) == []
        now = box.backoff_until
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    status = box.status()
    assert status["failed_total"] == 6 and status["consecutive_failures"] == 6
    assert status["last_error"] == "Alertmanager at http://x could not be reached"
    assert status["pending"] == 1
    assert box.due(now)
    box.sent(now)
    assert box.status()["backoff_until"] is None and box.status()["pending"] == 0
    box.submit([alert("other")], now)
    box.due(now)
    box.failed(now, "down again")
    assert box.backoff_until == now + 1.0


def test_a_failed_resend_is_retried_after_the_backoff() -> None:
    box = AlertmanagerOutbox(settings())
    box.submit([alert()], NOW)
    box.due(NOW)
    box.sent(NOW)
    assert box.due(NOW + 60)
    box.failed(NOW + 60, "down")
    assert box.due(NOW + 60.5) == []
    assert fingerprints(box.due(NOW + 61)) == ["fp-1"]


def test_huge_failure_counts_do_not_overflow() -> None:
    box = AlertmanagerOutbox(settings(backoff_max_s=60.0))
    for i in range(2000):
        box.failed(NOW + i, "down")
    assert box.backoff_delay() == 60.0


def test_ignore_backoff_is_for_the_last_flush_on_stop() -> None:
    box = AlertmanagerOutbox(settings())
    box.submit([alert()], NOW)
    box.due(NOW)
    box.failed(NOW, "down")
    assert box.due(NOW) == []
    assert fingerprints(box.due(NOW, ignore_backoff=True)) == ["fp-1"]


def test_bound_drops_oldest_unsent_resolved_first_then_oldest_firing() -> None:
    box = AlertmanagerOutbox(settings(max_pending=3))
    box.submit([alert("f1"), alert("f2")], NOW)
    box.submit([resolved("r1")], NOW + 1)
    box.submit([alert("f3")], NOW + 2)  # 4 > 3: r1 goes although f1 is older
    assert sorted(fingerprints(box.due(NOW + 2))) == ["f1", "f2", "f3"]
    box.submit([alert("f4")], NOW + 3)  # now the oldest firing one
    assert sorted(fingerprints(box.due(NOW + 3))) == ["f2", "f3", "f4"]
    assert box.status()["dropped"] == 2
    assert len(box) == 3


def test_alert_dropped_while_in_flight_is_simply_gone() -> None:
    box = AlertmanagerOutbox(settings(max_pending=1))
    box.submit([alert("a")], NOW)
    box.due(NOW)
    box.submit([alert("b")], NOW + 0.1)
    box.sent(NOW + 0.2)
    assert fingerprints(box.due(NOW + 0.3)) == ["b"]


def test_batches_are_capped_and_unsent_resolved_go_first() -> None:
    box = AlertmanagerOutbox(settings(), max_batch=2)
    box.submit([alert("f1"), alert("f2"), resolved("r1"), alert("f3"), alert("f4")], NOW)
    seen = []
    for _ in range(3):
        batch = fingerprints(box.due(NOW))
        box.sent(NOW)
        seen.append(batch)
    assert seen == [["r1", "f1"], ["f2", "f3"], ["f4"]]
    assert box.due(NOW + 1) == []


def test_status_has_the_counters_the_worker_shows() -> None:
    box = AlertmanagerOutbox(settings())
    box.submit([alert("a"), resolved("b")], NOW)
    assert box.status() == {
        "pending": 2, "oldest_unsent_at": NOW, "firing": 1, "sent_total": 0, "failed_total": 0,
        "consecutive_failures": 0, "dropped": 0, "last_error": None, "backoff_until": None,
    }  # fmt: skip


# ---------------------------------------------------------------------------- client, service


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_client_without_url_says_how_to_set_it() -> None:
    with pytest.raises(ConfigError, match="TRACEWATCH_ALERTMANAGER_URL"):
        AlertmanagerClient(AlertmanagerSettings())


def test_unreachable_alertmanager_is_named_without_credentials() -> None:
    url = f"http://tw:s3cret@127.0.0.1:{_closed_port()}"

    async def post() -> None:
        async with AlertmanagerClient(settings(url=url, timeout_s=2.0)) as client:
            await client.post([to_postable(alert(), NOW, settings())])

    with pytest.raises(ServiceUnavailable) as caught:
        asyncio.run(post())
    message = str(caught.value)
    assert "s3cret" not in message
    assert f"tw:***@{url.rpartition('@')[2]}" in message  # as every URL is shown (redact.py)
    assert "infra/alertmanager/start.sh" in message


def test_service_submit_is_safe_from_many_threads_before_it_starts() -> None:
    service = AlertmanagerService(settings(max_pending=10_000))

    def submit(thread: int) -> None:
        for i in range(200):
            service.submit([alert(f"t{thread}-{i}")])

    threads = [threading.Thread(target=submit, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    status = service.status()
    assert (status["pending"], status["firing"]) == (800, 800)
    assert status["url"] == "http://127.0.0.1:9093"
