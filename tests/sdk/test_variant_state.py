"""``variant_state``: a router's view of the rollout verdicts on the breakers topic."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tracewatch.schemas.breaker import BreakerSignal, VariantSignal
from tracewatch.sdk import VariantDecision
from tracewatch.sdk.breakers import BreakerState

T0 = datetime(2026, 11, 22, 10, 4, 1, tzinfo=UTC).timestamp()


def variant(value: str, verdict: str, field: str = "prompt_version", **more: Any) -> VariantSignal:
    fields: dict[str, Any] = {
        "scope": f"variant:refund/primary:{field}={value}",
        "state": "open" if verdict == "rollback" else "closed",
        "reason": f"{verdict}: evidence",
        "opened_at": datetime.fromtimestamp(T0, UTC),
        "verdict": verdict,
        "weight": 0.0 if verdict == "rollback" else 0.2,
        "route": "refund/primary",
        "variant": f"{field}={value}",
        "incumbent": f"{field}=v20",
        "share": 0.1,
        **more,
    }
    return VariantSignal(**fields)


def live(*signals: BreakerSignal) -> BreakerState:
    state = BreakerState()
    for s in signals:
        # as the client reads it: the wire JSON parsed as a plain breaker signal
        state.apply(BreakerSignal.model_validate_json(s.model_dump_json()))
    state.mark_ready()
    state.contact(T0)
    return state


def test_a_rolled_back_variant_is_refused_with_weight_zero() -> None:
    state = live(variant("v21", "rollback", metric="score:hallucination"))
    decision = state.variant_state("refund/primary", prompt_version="v21", now=T0)
    assert not decision.allowed
    assert (decision.verdict, decision.weight) == ("rollback", 0.0)
    assert decision.scope == "variant:refund/primary:prompt_version=v21"
    assert decision.signal is not None and decision.signal.metric == "score:hallucination"
    # a variant scope is not a route breaker: the route itself still runs
    assert state.check(route="refund/primary", now=T0).allowed


def test_hold_and_promote_carry_a_weight_and_the_latest_wins() -> None:
    state = live(variant("v21", "hold"), variant("v21", "promote", weight=0.4))
    decision = state.variant_state("refund/primary", prompt_version="v21", now=T0)
    assert decision.allowed and decision.verdict == "promote" and decision.weight == 0.4
    state.apply(variant("v21", "rollback"))
    assert not state.variant_state("refund/primary", prompt_version="v21", now=T0).allowed


def test_a_rollback_on_either_field_wins_and_tombstones_forget() -> None:
    state = live(variant("v21", "promote"), variant("gpt-x", "rollback", field="model"))
    both = state.variant_state("refund/primary", prompt_version="v21", model="gpt-x", now=T0)
    assert both.verdict == "rollback" and not both.allowed
    state.remove("variant:refund/primary:model=gpt-x")
    assert state.variant_state("refund/primary", model="gpt-x", now=T0).verdict is None
    assert len(state.variants()) == 1


def test_an_unjudged_variant_follows_fail_open() -> None:
    state = live()
    assert state.variant_state("refund/primary", prompt_version="v9", now=T0) == VariantDecision(
        True, reason="not judged"
    )
    stale = state.variant_state("refund/primary", prompt_version="v9", now=T0 + 3600)
    assert stale.allowed and stale.reason == "monitor unreachable (fail-open)"
    closed = BreakerState(fail_open=False)
    assert not closed.variant_state("r", prompt_version="v9", now=T0).allowed
    with pytest.raises(ValueError, match="name the variant"):
        state.variant_state("refund/primary", now=T0)


def test_an_attribute_variant_is_asked_by_its_attribute() -> None:
    state = live(variant("b", "rollback", field="arm"))
    assert not state.variant_state("refund/primary", attributes={"arm": "b"}, now=T0).allowed
    assert state.variant_state("refund/primary", attributes={"arm": "a"}, now=T0).allowed
