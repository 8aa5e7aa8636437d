"""The circuit-breaker signal of the wire contract (contract.md, "Breaker signal")."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BreakerSignal", "BreakerState"]

BreakerState = Literal["open", "closed"]


class BreakerSignal(BaseModel):
    """Latest state of one scope (``trace:<id>`` or ``route:<name>``) on the compacted topic."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    scope: str = Field(min_length=1, pattern=r"^(trace|route):.+")
    state: BreakerState
    reason: str = ""
    opened_at: datetime | None = None
    ttl_s: float | None = Field(default=None, ge=0)
