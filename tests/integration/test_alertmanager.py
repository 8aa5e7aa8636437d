"""Alerts reach a real Alertmanager (infra/alertmanager), also after it was down."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tracewatch.config import AlertmanagerSettings
from tracewatch.schemas.alert import Alert
from tracewatch.sinks.alertmanager import AlertmanagerClient, AlertmanagerService

pytestmark = pytest.mark.integration

INFRA = Path(__file__).resolve().parents[2] / "infra" / "alertmanager"
Alerts = list[dict[str, Any]]


def firing_alert(route: str, starts_at: datetime) -> Alert:
    labels = {"route": route, "model": "gpt-4o-mini", "metric": "cost_usd"}
    labels |= {"detector": "threshold", "severity": "warning"}
    return Alert(
        fingerprint=f"fp-{route}",
        status="firing",
        alertname="TracewatchItCostHigh",
        labels=labels,
        value=0.031,
        baseline=0.009,
        threshold=0.02,
        starts_at=starts_at,
        summary=f"p95 cost per request on {route} is 3.4x its baseline",
    )


def resolved_alert(firing: Alert, ends_at: datetime) -> Alert:
    return firing.model_copy(update={"status": "resolved", "ends_at": ends_at})


async def eventually(
    client: AlertmanagerClient,
    route: str,
    predicate: Callable[[Alerts], bool],
    timeout_s: float,
) -> Alerts:
    """What Alertmanager shows for ``route`` once ``predicate`` holds (polled every 50 ms)."""
    deadline = time.monotonic() + timeout_s
    while True:
        shown = await client.get_alerts([f'route="{route}"'])
        if predicate(shown):
            return shown
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s; Alertmanager shows {shown}")
        await asyncio.sleep(0.05)


def ends_at(shown: Alerts) -> datetime:
    return datetime.fromisoformat(shown[0]["endsAt"])


def test_firing_alert_is_active_in_alertmanager_until_it_resolves(alertmanager_url: str) -> None:
    route = f"it-{uuid.uuid4().hex[:10]}/primary"
    settings = AlertmanagerSettings(url=alertmanager_url, resend_interval_s=1.0)
    firing = firing_alert(route, datetime.now(UTC) - timedelta(hours=2))  # a backfill

    async def scenario() -> dict[str, Any]:
        service = AlertmanagerService(settings, tick_s=0.2)
        await service.start()
        try:
            async with AlertmanagerClient(settings) as client:
                await asyncio.to_thread(service.submit, [firing])  # as the ingest thread does
                shown = await eventually(client, route, lambda a: len(a) == 1, 3.0)
                assert shown[0]["labels"] == {"alertname": "TracewatchItCostHigh", **firing.labels}
                assert shown[0]["annotations"] == {
                    "summary": firing.summary, "tracewatch_fingerprint": firing.fingerprint,
                    "value": "0.031", "baseline": "0.009", "threshold": "0.02",
                }  # fmt: skip
                assert shown[0]["status"]["state"] == "active"
                assert abs(datetime.fromisoformat(shown[0]["startsAt"]) - firing.starts_at) < (
                    timedelta(milliseconds=1)
                )
                # the resend every second pushes endsAt (now + 4 resend intervals) forward
                first_end = ends_at(shown)
                assert first_end > datetime.now(UTC) + timedelta(seconds=2)
                await eventually(client, route, lambda a: bool(a) and ends_at(a) > first_end, 4.0)

                resolved = resolved_alert(firing, datetime.now(UTC))
                await asyncio.to_thread(service.submit, [resolved])
                await eventually(client, route, lambda a: a == [], 3.0)
                return service.status()
        finally:
            await service.stop()

    status = asyncio.run(scenario())
    assert status["sent_total"] >= 3  # first post, at least one resend, the resolved one
    assert (status["pending"], status["firing"], status["failed_total"]) == (0, 0, 0)


class SecondAlertmanager:
    """Another Alertmanager on its own port and state dir, through the same scripts."""

    def __init__(self, home: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("TRACEWATCH_", "ALERT"))}
        self.env = {
            **keep,
            "TRACEWATCH_HOME": str(home),
            "ALERTMANAGER_HOST": "127.0.0.1",
            "ALERTMANAGER_PORT": str(port),
            "ALERTMANAGER_CLUSTER": "",  # no gossip port to collide with the shared one
        }

    def run(self, script: str) -> None:
        done = subprocess.run(
            ["bash", str(INFRA / script)], env=self.env, capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            pytest.fail(f"{script} of the second Alertmanager failed:\n{done.stdout}{done.stderr}")


@pytest.fixture
def second_alertmanager(tmp_path: Path, free_port: int) -> Iterator[SecondAlertmanager]:
    instance = SecondAlertmanager(tmp_path, free_port)
    instance.run("start.sh")
    try:
        yield instance
    finally:
        instance.run("stop.sh")


def test_alert_submitted_during_an_outage_arrives_when_alertmanager_is_back(
    second_alertmanager: SecondAlertmanager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tracewatch.alertmanager")
    am = second_alertmanager
    am.run("stop.sh")
    route = f"it-{uuid.uuid4().hex[:10]}/primary"
    firing = firing_alert(route, datetime.now(UTC) - timedelta(minutes=1))
    settings = AlertmanagerSettings(
        url=am.url, backoff_initial_s=0.1, backoff_max_s=0.4, timeout_s=1.0
    )

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], float]:
        service = AlertmanagerService(settings, tick_s=0.2)
        await service.start()
        try:
            await asyncio.to_thread(service.submit, [firing])
            deadline = time.monotonic() + 5.0
            while service.status()["failed_total"] < 4 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            during = service.status()
            await asyncio.to_thread(am.run, "start.sh")
            back = time.monotonic()
            async with AlertmanagerClient(settings) as client:
                shown = await eventually(client, route, lambda a: len(a) == 1, 5.0)
            caught_up_s = time.monotonic() - back
            assert shown[0]["labels"]["route"] == route
            assert shown[0]["status"]["state"] == "active"
            return during, service.status(), caught_up_s
        finally:
            await service.stop()

    during, after, caught_up_s = asyncio.run(scenario())
    assert during["failed_total"] >= 4 and during["pending"] == 1 and during["sent_total"] == 0
    assert during["outage_since"] is not None
    assert am.url in during["last_error"] and "could not be reached" in during["last_error"]
    assert after["sent_total"] == 1 and after["pending"] == 0
    assert after["consecutive_failures"] == 0 and after["outage_since"] is None
    assert caught_up_s < 2.0  # the backoff is capped at 0.4 s
    ours = [r for r in caplog.records if r.name == "tracewatch.alertmanager"]
    warnings = [r for r in ours if r.levelno == logging.WARNING]
    recoveries = [r for r in ours if r.levelno == logging.INFO and "reachable again" in r.message]
    assert len(warnings) == 1, [r.message for r in warnings]  # once per outage, not per try
    assert len(recoveries) == 1
