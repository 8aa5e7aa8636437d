"""The demo's injected incidents change only their route, only from their start."""

from __future__ import annotations

import pytest

from tracewatch.demo.runner import INCIDENTS, Incident
from tracewatch.demo.traffic import DemoTraffic

T0 = 1_795_341_600.0


def test_a_cost_incident_triples_cost_on_its_route_from_its_start() -> None:
    events = list(DemoTraffic(seed=3).events(T0, 5, 600))
    changed = list(Incident("cost", "support/chat", T0 + 300).apply(iter(events)))
    assert len(changed) == len(events)
    hit = 0
    for before, after in zip(events, changed, strict=True):
        affected = before["route"] == "support/chat" and float(before["ts"]) >= T0 + 300  # type: ignore[arg-type]
        if affected and isinstance(before.get("cost_usd"), float):
            assert after["cost_usd"] == pytest.approx(3 * before["cost_usd"])  # type: ignore[operator]
            hit += 1
        else:
            assert after == before
    assert hit > 50


def test_the_error_incident_fails_about_three_in_ten_llm_calls() -> None:
    events = DemoTraffic(seed=4).events(T0, 10, 600)
    changed = [
        e for e in Incident("errors", "support/chat", T0).apply(events)
        if e["route"] == "support/chat" and e["kind"] == "llm"
    ]  # fmt: skip
    failed = sum(e["status"] == "error" for e in changed) / len(changed)
    assert 0.25 < failed < 0.4


def test_unknown_incidents_are_refused() -> None:
    with pytest.raises(ValueError, match="one of"):
        Incident("meteor", "r", T0)
    assert set(INCIDENTS) == {"cost", "latency", "errors", "quality"}
