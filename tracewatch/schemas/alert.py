"""The alert of the wire contract (contract.md, "Alert")."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Alert", "AlertStatus"]

AlertStatus = Literal["firing", "resolved"]


class Alert(BaseModel):
    """A firing or resolved alert; ``fingerprint`` is stable across both transitions."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    fingerprint: str = Field(min_length=1)
    status: AlertStatus
    alertname: str = Field(min_length=1)
    labels: dict[str, str]
    value: float | None = None
    baseline: float | None = None
    threshold: float | None = None
    starts_at: datetime
    ends_at: datetime | None = None
    summary: str = ""
