"""The validated trace event as the worker carries it: a msgspec struct.

``TraceEvent`` (pydantic) is the schema of record: the SDK validates with it,
its JSON schema documents the contract, and its errors name the DLQ reason.
Validating each message with it costs about 17 µs, most of the worker's
per-event budget, so the hot path decodes with msgspec into ``EventRecord``
(about 4 µs, no per-event Python validators, no garbage-collector tracking) and
asks pydantic only about the messages msgspec refuses. msgspec is therefore
only a fast *accept*: a message is valid exactly when ``TraceEvent`` says so,
and ``tests/schemas/test_record_conformance.py`` checks, field by field and by
property-based testing, that msgspec never accepts what pydantic refuses nor
reads an accepted message differently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import msgspec
from msgspec import Meta

from tracewatch.schemas.event import MAX_TS, TraceEvent, parse_ts

__all__ = ["EventRecord", "record_from_model"]

_Id = Annotated[str, Meta(min_length=1, max_length=128)]
_Label = Annotated[str, Meta(max_length=256)]
_Float = Annotated[float, Meta(ge=0, le=1e12)]
_Int = Annotated[int, Meta(ge=0, le=2**31 - 1)]
_ScoreName = Annotated[str, Meta(min_length=1, max_length=64)]
_Score = Annotated[float, Meta(ge=0, le=1)]
_AttributeName = Annotated[str, Meta(min_length=1, max_length=128)]
_AttributeValue = Annotated[str, Meta(max_length=1024)] | bool | int | float


class EventRecord(msgspec.Struct, frozen=True, gc=False):
    """One valid trace event; the same fields, limits and defaults as ``TraceEvent``.

    ``gc=False``: the structs hold only strings, numbers and flat dicts, so they
    cannot be part of a reference cycle, and a batch of 100 000 of them no longer
    triggers the cyclic garbage collector over and over.
    """

    event_id: _Id
    trace_id: _Id
    if TYPE_CHECKING:
        ts: float  # always a float once decoded (``__post_init__``)
    else:
        # a string is RFC 3339, parsed by the pydantic model's own function
        ts: float | str
    kind: Literal["llm", "tool", "retrieval", "agent_step", "guardrail", "eval"]
    route: Annotated[str, Meta(min_length=1, max_length=256)]
    span_id: _Label | None = None
    parent_span_id: _Label | None = None
    app: _Label | None = None
    model: _Label | None = None
    provider: _Label | None = None
    prompt_version: _Label | None = None
    cohort: _Label | None = None
    session_id: _Label | None = None
    latency_ms: _Float | None = None
    input_tokens: _Int | None = None
    output_tokens: _Int | None = None
    cost_usd: _Float | None = None
    status: Literal["ok", "error", "timeout"] = "ok"
    error_type: _Label | None = None
    retry_count: _Int = 0
    loop_depth: _Int | None = None
    tool_name: _Label | None = None
    tool_args_hash: _Label | None = None
    scores: Annotated[dict[_ScoreName, _Score], Meta(max_length=32)] = {}
    guardrail_action: Literal["allow", "block", "redact"] | None = None
    guardrail_name: _Label | None = None
    attributes: Annotated[dict[_AttributeName, _AttributeValue], Meta(max_length=64)] = {}

    def __post_init__(self) -> None:
        # ValueError here becomes a msgspec.ValidationError: the message takes the
        # pydantic path, which gives the reason.
        ts = self.ts
        if type(ts) is not float:
            msgspec.structs.force_setattr(self, "ts", parse_ts(ts))
        elif not 0.0 <= ts < MAX_TS:
            raise ValueError("ts out of range")


def record_from_model(event: TraceEvent) -> EventRecord:
    """The record of an event pydantic accepted (msgspec refused it, e.g. a big attribute int)."""
    return EventRecord(**dict(event))
