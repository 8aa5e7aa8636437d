"""What a router asks of a canary: the rollout verdict on a variant and its suggested weight.

    from tracewatch.sdk import BreakerClient

    breakers = BreakerClient()
    state = breakers.variant_state("refund/primary", prompt_version="v21")
    if not state.allowed:                    # rolled back: send nothing to v21
        weight = 0.0
    elif state.verdict == "promote":         # held up: take the next step
        weight = state.weight
    else:                                    # hold, or not judged yet: keep the canary's share
        weight = current_weight

tracewatch's rollout judge publishes one ``VariantSignal`` per candidate on the
breakers topic, scope ``variant:<route>:<field>=<value>`` (``open`` for a
rollback, ``closed`` for promote and hold, with ``verdict`` and ``weight``); the
``BreakerClient`` keeps the latest per scope, so this is a dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tracewatch.schemas.breaker import VariantSignal, Verdict, variant_scope

__all__ = ["VariantDecision", "variant_scopes"]


@dataclass(frozen=True, slots=True)
class VariantDecision:
    """The rollout state of a variant: ``verdict`` None when tracewatch has not judged it.

    ``allowed`` is False on a rollback (and, for a variant never judged, while the
    monitor is unreachable and the client is fail-closed); ``weight`` is the share
    of the route's traffic tracewatch suggests for it (None when not judged).
    """

    allowed: bool
    verdict: Verdict | None = None
    weight: float | None = None
    scope: str | None = None
    reason: str = ""
    signal: VariantSignal | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, signal: VariantSignal) -> VariantDecision:
        return cls(
            signal.verdict != "rollback",
            signal.verdict,
            signal.weight,
            signal.scope,
            signal.reason,
            signal,
        )


def variant_scopes(
    route: str,
    prompt_version: str | None,
    model: str | None,
    attributes: Mapping[str, str] | None = None,
) -> list[str]:
    """The variant scopes a request on ``route`` falls in: its prompt version, its model,
    and the attribute the operator splits by (``TRACEWATCH_ROLLOUT_ATTRIBUTE``)."""
    scopes = []
    if prompt_version is not None:
        scopes.append(variant_scope(route, "prompt_version", prompt_version))
    if model is not None:
        scopes.append(variant_scope(route, "model", model))
    for name, value in (attributes or {}).items():
        scopes.append(variant_scope(route, name, value))
    if not scopes:
        raise ValueError("name the variant: prompt_version=..., model=..., attributes={...}")
    return scopes
