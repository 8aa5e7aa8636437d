"""Turn raw message bytes into a ``TraceEvent`` or a short, machine-readable reason.

The SDK and the worker call the same function, so an app learns at ``send`` time
what the worker would have sent to the DLQ.

Reason codes (the ``tracewatch.reason`` DLQ header):

    oversized           the message is larger than the configured limit
    empty               no value at all (a tombstone or an empty message)
    not_json            not UTF-8 JSON, truncated, or nested too deeply
    not_object          JSON, but not an object
    missing_field       a required field is absent
    wrong_type          a field has the wrong JSON type ("12" for a number …)
    negative_number     a number that must be ≥ 0 is negative
    not_finite          NaN or ±Infinity
    out_of_range        a number outside its bounds (scores outside [0, 1] …)
    too_long            a string, map or list over its size limit
    too_short           an empty string where one is required
    invalid_value       a value outside its allowed set, or a malformed timestamp
    duplicate_event_id  an ``event_id`` already seen (assigned by the worker, not here)
    future_timestamp    ``ts`` more than the allowed clock skew after the wall clock at
                        processing (``TRACEWATCH_WORKER_MAX_FUTURE_S``, 1 h by default;
                        assigned by the worker, since it depends on when the event is read)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import msgspec
from pydantic import ValidationError

from tracewatch.errors import InvalidEvent
from tracewatch.schemas.event import TraceEvent
from tracewatch.schemas.record import EventRecord, record_from_model

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "REASONS",
    "decode_records",
    "future_rejects",
    "reason_of",
    "validate_message",
]

DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024

REASONS: tuple[str, ...] = (
    "oversized",
    "empty",
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "negative_number",
    "not_finite",
    "out_of_range",
    "too_long",
    "too_short",
    "invalid_value",
    "duplicate_event_id",
    "future_timestamp",
)

_BY_ERROR_TYPE: dict[str, str] = {
    "json_invalid": "not_json",
    "json_type": "not_json",
    "model_type": "not_object",
    "model_attributes_type": "not_object",
    "missing": "missing_field",
    "finite_number": "not_finite",
    "string_too_long": "too_long",
    "too_long": "too_long",
    "string_too_short": "too_short",
    "literal_error": "invalid_value",
    "less_than_equal": "out_of_range",
    "less_than": "out_of_range",
    "greater_than": "out_of_range",
}


def validate_message(value: bytes | None, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> TraceEvent:
    """Validate one raw message; raise ``InvalidEvent`` with the reason."""
    if not value:
        raise InvalidEvent("empty", "the message has no value")
    if len(value) > max_bytes:
        raise InvalidEvent(
            "oversized", f"{len(value)} bytes is over the {max_bytes}-byte limit for one event"
        )
    try:
        return TraceEvent.model_validate_json(value)
    except ValidationError as exc:
        raise reason_of(exc) from None


#: pydantic's JSON parser refuses nesting deeper than about 250 levels and msgspec's
#: only past about 1000: a message with more brackets than this (anywhere, even in
#: strings) is left to pydantic, so the two never disagree about nesting.
_MAX_FAST_BRACKETS = 200
_RECORD_DECODER = msgspec.json.Decoder(EventRecord)


def decode_records(
    values: Sequence[bytes | None], max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> tuple[list[EventRecord], list[int], list[tuple[int, InvalidEvent]]]:
    """Validate a batch: the records, the index of each in ``values``, and the rejects.

    Accepts exactly what ``validate_message`` accepts (see ``schemas/record.py``);
    msgspec decides the common case and pydantic every message msgspec refuses.
    """
    decode = _RECORD_DECODER.decode
    records: list[EventRecord] = []
    index: list[int] = []
    rejected: list[tuple[int, InvalidEvent]] = []
    for i, value in enumerate(values):
        if (
            value
            and len(value) <= max_bytes
            and value.count(b"[") + value.count(b"{") <= _MAX_FAST_BRACKETS
            # msgspec skips unknown fields without checking their UTF-8; pydantic refuses
            # bad UTF-8 anywhere, so a non-ASCII message must decode first
            and (value.isascii() or _is_utf8(value))
        ):
            try:
                records.append(decode(value))
                index.append(i)
                continue
            except Exception:  # any refusal (bad UTF-8 raises UnicodeDecodeError): pydantic decides
                pass
        try:
            records.append(record_from_model(validate_message(value, max_bytes)))
            index.append(i)
        except InvalidEvent as exc:
            rejected.append((i, exc))
    return records, index, rejected


def future_rejects(
    records: Sequence[EventRecord], now: float, max_future_s: float
) -> list[tuple[int, InvalidEvent]]:
    """The records dated more than ``max_future_s`` after ``now`` (the wall clock).

    One such event would open a minute that never closes, pin its partition's
    commit (every restart re-reads up to the topic's retention) and move the
    watermark ahead so that every later event counts as late (issue 16).
    """
    limit = now + max_future_s
    out = []
    for i, record in enumerate(records):
        if record.ts > limit:
            ahead = record.ts - now
            detail = (
                f"ts is {_duration(ahead)} after this worker's clock (limit "
                f"{_duration(max_future_s)}): fix the sender's clock or its time unit, or raise "
                "TRACEWATCH_WORKER_MAX_FUTURE_S"
            )
            out.append((i, InvalidEvent("future_timestamp", detail, "ts")))
    return out


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds:.0f} s"


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def reason_of(exc: ValidationError) -> InvalidEvent:
    """The first error of a pydantic ``ValidationError`` as an ``InvalidEvent``."""
    error = exc.errors(include_url=False)[0]
    loc = tuple(error["loc"])
    if len(loc) == 3 and loc[0] == "attributes" and _is_union_tag(loc[2]):
        loc = loc[:2]  # the union member pydantic tried (attribute values: str, bool, …)
    field = ".".join(str(part) for part in loc) or None
    return InvalidEvent(_classify(error), str(error["msg"]), field)


def _classify(error: Any) -> str:
    kind: str = error["type"]
    value = error.get("input")
    if isinstance(value, float) and not math.isfinite(value):
        return "not_finite"  # NaN or 1e999 where an integer or an attribute value goes
    if kind == "greater_than_equal":
        limit = (error.get("ctx") or {}).get("ge")
        return "negative_number" if limit == 0 else "out_of_range"
    if kind == "value_error":
        message = str(error.get("msg", ""))
        return "not_finite" if "finite" in message else "invalid_value"
    if kind in _BY_ERROR_TYPE:
        return _BY_ERROR_TYPE[kind]
    if kind.endswith(("_type", "_parsing")) or kind.endswith("_from_float"):
        return "wrong_type"
    return "invalid_value"


def _is_union_tag(part: object) -> bool:
    """pydantic adds the union member's name (``constrained-str``, ``bool``) to the location."""
    return isinstance(part, str) and part in {"constrained-str", "str", "bool", "int", "float"}
