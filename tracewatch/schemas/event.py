"""The trace event of the wire contract (contract.md, "Trace event").

Validation is strict on purpose: a monitor that silently coerces ``"12"`` to 12
or ``NaN`` to a number hides the bug in the app that sent it. Numbers must be
JSON numbers, strings JSON strings; unknown top-level fields are ignored (the
contract allows them) and never stored, so prompt text cannot leak in.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "EVENT_KINDS",
    "MAX_TS",
    "Kind",
    "Status",
    "TraceEvent",
    "parse_ts",
]

Kind = Literal["llm", "tool", "retrieval", "agent_step", "guardrail", "eval"]
Status = Literal["ok", "error", "timeout"]
GuardrailAction = Literal["allow", "block", "redact"]
EVENT_KINDS: tuple[str, ...] = ("llm", "tool", "retrieval", "agent_step", "guardrail", "eval")

#: 2100-01-01T00:00:00Z. Beyond this a timestamp is a unit mistake (ms or µs sent as s).
MAX_TS = 4_102_444_800.0


def parse_ts(value: Any) -> float:
    """RFC 3339 with an offset, or Unix seconds, to float Unix seconds."""
    if isinstance(value, bool):
        raise ValueError("ts must be an RFC 3339 string or a number of Unix seconds, not a boolean")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an integer of hundreds of digits: must not escape as a crash
            raise ValueError("ts must be Unix seconds between 1970 and 2100") from None
    elif isinstance(value, str):
        if value.endswith("z"):  # RFC 3339 5.6 allows a lower-case "z"; fromisoformat does not
            value = value[:-1] + "Z"
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"ts {value[:40]!r} is not RFC 3339") from None
        if parsed.tzinfo is None:
            raise ValueError("ts needs a UTC offset, e.g. 2026-11-22T10:00:00Z")
        seconds = parsed.timestamp()
    else:
        raise ValueError("ts must be an RFC 3339 string or a number of Unix seconds")
    if not math.isfinite(seconds):
        raise ValueError("ts must be a finite number")
    if seconds < 0 or seconds >= MAX_TS:
        raise ValueError(
            "ts must be Unix seconds between 1970 and 2100 (milliseconds sent as seconds?)"
        )
    return seconds


Id = Annotated[str, Field(min_length=1, max_length=128)]
Label = Annotated[str, Field(max_length=256)]
NonNegativeFloat = Annotated[float, Field(ge=0, le=1e12)]
NonNegativeInt = Annotated[int, Field(ge=0, le=2**31 - 1)]
Score = Annotated[float, Field(ge=0, le=1)]
ScoreName = Annotated[str, Field(min_length=1, max_length=64)]
AttributeValue = Annotated[str, Field(max_length=1024)] | bool | int | float
AttributeName = Annotated[str, Field(min_length=1, max_length=128)]


class TraceEvent(BaseModel):
    """One span of an LLM application, as validated by the SDK and the worker alike."""

    model_config = ConfigDict(
        extra="ignore", strict=True, allow_inf_nan=False, frozen=True, str_max_length=256
    )

    event_id: Id
    trace_id: Id
    ts: Annotated[float, BeforeValidator(parse_ts)]
    kind: Kind
    route: Annotated[str, Field(min_length=1, max_length=256)]

    span_id: Label | None = None
    parent_span_id: Label | None = None
    app: Label | None = None
    model: Label | None = None
    provider: Label | None = None
    prompt_version: Label | None = None
    cohort: Label | None = None
    session_id: Label | None = None
    latency_ms: NonNegativeFloat | None = None
    input_tokens: NonNegativeInt | None = None
    output_tokens: NonNegativeInt | None = None
    cost_usd: NonNegativeFloat | None = None
    status: Status = "ok"
    error_type: Label | None = None
    retry_count: NonNegativeInt = 0
    loop_depth: NonNegativeInt | None = None
    tool_name: Label | None = None
    tool_args_hash: Label | None = None
    scores: Annotated[dict[ScoreName, Score], Field(max_length=32)] = Field(default_factory=dict)
    guardrail_action: GuardrailAction | None = None
    guardrail_name: Label | None = None
    attributes: Annotated[dict[AttributeName, AttributeValue], Field(max_length=64)] = Field(
        default_factory=dict
    )
