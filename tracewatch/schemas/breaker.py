"""The circuit-breaker signal of the wire contract (contract.md, "Breaker signal")."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BreakerSignal", "BreakerState", "VariantSignal", "Verdict", "variant_scope"]

BreakerState = Literal["open", "closed"]
#: A rollout verdict on a candidate variant (``detectors/rollout.py``).
Verdict = Literal["rollback", "promote", "hold"]


class BreakerSignal(BaseModel):
    """Latest state of one scope (``trace:<id>``, ``route:<name>`` or
    ``variant:<route>:<field>=<value>``) on the compacted topic."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    scope: str = Field(min_length=1, pattern=r"^(trace|route|variant):.+")
    state: BreakerState
    reason: str = ""
    opened_at: datetime | None = None
    ttl_s: float | None = Field(default=None, ge=0)


def variant_scope(route: str, dimension: str, value: str) -> str:
    """The breaker scope of one variant of a route: ``variant:refund:prompt_version=v21``."""
    return f"variant:{route}:{dimension}={value}"


class VariantSignal(BreakerSignal):
    """A rollout verdict on a candidate variant (additive to the contract's signal).

    ``state`` is ``open`` for ``rollback`` (the router drops the candidate) and
    ``closed`` for ``promote`` and ``hold``; ``weight`` is the share of the route's
    traffic the router may give the candidate now (0 on rollback).
    """

    scope: str = Field(min_length=1, pattern=r"^variant:.+:[A-Za-z0-9_.\-]+=.+")
    verdict: Verdict
    weight: float = Field(ge=0, le=1)
    route: str
    variant: str  # e.g. ``prompt_version=v21``
    incumbent: str  # e.g. ``prompt_version=v20``
    share: float = Field(ge=0, le=1)
    metric: str | None = None  # the deciding metric
    cohort: str | None = None  # when the regression is confined to one
    evidence: str = ""
